"""State and audit in one SQLite file (sqlite-utils), WAL mode.

Every write that decides something runs inside one ``BEGIN IMMEDIATE``
transaction, so two threads (or two processes) can never both take the same
decision. The audit table is append-only: triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sqlite3
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import sqlite_utils

from bot.clock import Clock, SystemClock

log = logging.getLogger("cutover.audit")

SCHEMA_VERSION = 6

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE stage_runs (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        started_by TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        exit_code INTEGER,
        remote_dir TEXT,
        pid INTEGER,
        log_offset INTEGER NOT NULL DEFAULT 0,
        log_uploaded INTEGER NOT NULL DEFAULT 0,
        cancel_reason TEXT,
        cancelled_by TEXT,
        channel TEXT,
        message_ts TEXT,
        detail TEXT
    );
    CREATE INDEX stage_runs_stage ON stage_runs(stage, id);
    CREATE UNIQUE INDEX stage_runs_one_active ON stage_runs(stage)
        WHERE state IN ('starting', 'running');

    CREATE TABLE freezes (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        start_at TEXT NOT NULL,
        end_at TEXT,
        note TEXT,
        state TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        lifted_at TEXT
    );
    CREATE TABLE freeze_notices (
        freeze_id INTEGER NOT NULL REFERENCES freezes(id),
        notice TEXT NOT NULL,
        due_at TEXT NOT NULL,
        posted_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (freeze_id, notice)
    );

    CREATE TABLE golive_requests (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        required INTEGER NOT NULL,
        channel TEXT,
        message_ts TEXT,
        preflight TEXT,
        decided_at TEXT,
        result TEXT
    );
    CREATE UNIQUE INDEX golive_one_open ON golive_requests(kind) WHERE state = 'open';
    CREATE TABLE approvals (
        request_id INTEGER NOT NULL REFERENCES golive_requests(id),
        user TEXT NOT NULL,
        reaction TEXT NOT NULL,
        approved_at TEXT NOT NULL,
        PRIMARY KEY (request_id, user)
    );
    CREATE TABLE health_backups (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL,
        host TEXT NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        saved_at TEXT NOT NULL
    );

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        detail TEXT
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;

    CREATE TABLE processed_events (
        key TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL
    );
    """,
    2: """
    ALTER TABLE stage_runs ADD COLUMN message_final INTEGER NOT NULL DEFAULT 0;
    UPDATE stage_runs SET message_final = 1 WHERE state NOT IN ('starting', 'running');
    """,
    # A cancel is "pending" until the host has it, then "sent", or "too late" if the run had already ended.
    3: """
    ALTER TABLE stage_runs ADD COLUMN stop_state TEXT;
    UPDATE stage_runs SET stop_state = 'sent' WHERE cancel_reason IS NOT NULL;
    """,
    # A person's step: who it waits on, who completed it, and whether its one reminder went out.
    4: """
    ALTER TABLE stage_runs ADD COLUMN owner TEXT;
    ALTER TABLE stage_runs ADD COLUMN completed_by TEXT;
    ALTER TABLE stage_runs ADD COLUMN reminded_at TEXT;
    """,
    # An update of the run's message got no answer: Slack may still apply it over a newer one.
    5: """
    ALTER TABLE stage_runs ADD COLUMN message_doubt INTEGER NOT NULL DEFAULT 0;
    """,
    # When the command started by its host's clock (the moment of a copy), and the data window's counts.
    6: """
    ALTER TABLE stage_runs ADD COLUMN host_started_at TEXT;
    CREATE TABLE watch_counts (
        id INTEGER PRIMARY KEY,
        watch TEXT NOT NULL,
        purpose TEXT NOT NULL,
        request_id INTEGER,
        counted_at TEXT NOT NULL,
        since TEXT NOT NULL,
        until TEXT,
        count INTEGER,
        rows TEXT,
        more INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX watch_counts_watch ON watch_counts(watch, id);
    """,
}


class StoreError(Exception):
    pass


class Store:
    def __init__(self, path: str, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db = sqlite_utils.Database(conn)
            self._lock = threading.RLock()
            with self._lock:
                if path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path} (CUTOVER_DB) cannot be used as the database: {exc}; check that its "
                             "directory exists and that the bot may write there") from None

    @staticmethod
    def hold(path: str) -> "DatabaseHold":
        """Take the database for this process alone, or say which process has it (StoreError)."""
        return DatabaseHold(path)

    # -- plumbing ---------------------------------------------------------------

    def _migrate(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema version {current} is newer than this bot "
                             f"understands ({SCHEMA_VERSION}); upgrade the bot or use another CUTOVER_DB")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                for statement in _split_sql(_MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                                [version, self._now()])

    def schema_version(self) -> int:
        row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row[0] or 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One decisive write: BEGIN IMMEDIATE takes the write lock up front."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _now(self) -> str:
        return self.clock.now().isoformat()

    def query(self, sql: str, params: Any = ()) -> list[dict]:
        with self._lock:
            return list(self.db.query(sql, params))

    def get(self, table: str, pk: int) -> dict:
        """One row by its id (sqlite-utils' ``Table.get``); NotFoundError if there is none."""
        with self._lock:
            return self.db[table].get(pk)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # -- audit --------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str = "", outcome: str = "ok",
              detail: dict | str | None = None, db: sqlite_utils.Database | None = None) -> int:
        """Append to the audit log; inside ``db``'s open transaction when given, so that a state change and its
        audit entry are seen together or not at all."""
        if isinstance(detail, dict):
            detail = json.dumps(detail, sort_keys=True, default=str)
        shown = target if len(target) <= 80 else target[:80] + "…"
        log.info("%s: %s %s → %s", actor, action, shown, outcome)  # one line per command, stage and go-live step
        row = {"at": self._now(), "actor": actor, "action": action, "target": target, "outcome": outcome,
               "detail": detail}
        if db is not None:
            return db["audit"].insert(row).last_pk
        with self.transaction() as tx:
            return tx["audit"].insert(row).last_pk

    def audit_log(self) -> list[dict]:
        """Every entry of the audit log, oldest first."""
        return self.query("SELECT * FROM audit ORDER BY id")

    def recent_audit(self, limit: int = 20) -> list[dict]:
        rows = self.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", [limit])
        return list(reversed(rows))

    # -- duplicate deliveries -----------------------------------------------------

    def first_delivery(self, key: str) -> bool:
        """Record a Slack delivery; True only the first time this key is seen."""
        with self.transaction() as db:
            cur = db.execute("INSERT OR IGNORE INTO processed_events (key, seen_at) VALUES (?, ?)",
                             [key, self._now()])
            return cur.rowcount == 1

    def prune_deliveries(self, older_than: timedelta = timedelta(days=2)) -> int:
        cutoff = (self.clock.now() - older_than).isoformat()
        with self.transaction() as db:
            return db.execute("DELETE FROM processed_events WHERE seen_at < ?", [cutoff]).rowcount


class DatabaseHold:
    """An exclusive lock on ``<db>.lock``: two bots on one database would both follow and both flip.

    The lock is the kernel's (flock), so it goes with the process however it ends; the file says who holds it.
    """

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        try:
            self._file = open(self.path, "a+")
        except OSError as exc:
            raise StoreError(f"{self.path} (beside CUTOVER_DB) cannot be opened: {exc.strerror or exc}; check "
                             "that the database's directory exists and that the bot may write there") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise StoreError(f"{path} is in use by another cutover bot ({holder}); one bot per database: stop "
                             "that one, or give this one its own CUTOVER_DB") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def database_writable(path: str, deadline: float) -> str | None:
    """Whether the database takes a write now (a write lock and a change, rolled back, on a connection of its own,
    within ``deadline`` seconds): None if it does, else why not."""
    try:
        conn = sqlite3.connect(path, timeout=deadline, isolation_level=None)
    except sqlite3.Error as exc:
        return f"{path} cannot be opened: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE schema_version SET version = version")
        conn.execute("ROLLBACK")
        return None
    except sqlite3.Error as exc:
        return f"{path} does not take writes: {exc}"
    finally:
        conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            buf = []
    if "\n".join(buf).strip():
        statements.append("\n".join(buf).strip())
    return statements

