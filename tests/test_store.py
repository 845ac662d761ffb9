import sqlite3
import threading

import pytest

from bot.store import SCHEMA_VERSION, Store


def test_schema_is_created_once_with_its_version_and_wal(tmp_path):
    path = str(tmp_path / "cutover.db")
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"stage_runs", "freezes", "golive_requests", "approvals", "audit", "processed_events"} <= set(
        store.db.table_names())
    store.audit("U0ALICE", "status")
    store.close()
    again = Store(path)
    assert again.schema_version() == SCHEMA_VERSION
    assert len(again.query("SELECT * FROM schema_version")) == SCHEMA_VERSION
    assert [e["action"] for e in again.recent_audit()] == ["status"]


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "cutover.db")
    Store(path).db.execute("INSERT INTO schema_version VALUES (?, 'later')", [SCHEMA_VERSION + 1])
    with pytest.raises(Exception, match="newer than this bot understands"):
        Store(path)


def test_the_audit_log_is_append_only(tmp_path):
    store = Store(str(tmp_path / "cutover.db"))
    store.audit("U0ALICE", "run", "db-import", "accepted", {"reason": "test"})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("UPDATE audit SET actor = 'U0EVE'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("DELETE FROM audit")
    assert store.recent_audit()[0]["actor"] == "U0ALICE"


def test_recent_audit_is_newest_last(tmp_path):
    store = Store(str(tmp_path / "cutover.db"))
    for i in range(30):
        store.audit("U0ALICE", f"a{i}")
    assert [e["action"] for e in store.recent_audit(3)] == ["a27", "a28", "a29"]


def test_a_delivery_is_first_exactly_once_across_threads(tmp_path):
    store = Store(str(tmp_path / "cutover.db"))
    results = []
    barrier = threading.Barrier(8)

    def deliver():
        barrier.wait()
        results.append(store.first_delivery("event:Ev1"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and results.count(False) == 7


def test_a_delivery_is_first_once_across_processes(tmp_path):
    path = str(tmp_path / "cutover.db")
    a, b = Store(path), Store(path)
    assert a.first_delivery("command:1") is True
    assert b.first_delivery("command:1") is False


def test_one_active_run_per_stage_is_enforced_by_the_schema(tmp_path):
    store = Store(str(tmp_path / "cutover.db"))
    row = {"stage": "db-import", "host": "new", "state": "running", "started_by": "U0ALICE",
           "started_at": "2026-12-01T12:00:00+00:00"}
    store.db["stage_runs"].insert(row)
    with pytest.raises(sqlite3.IntegrityError):
        store.db["stage_runs"].insert(row)
