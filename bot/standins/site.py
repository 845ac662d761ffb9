"""The demo's site: its data in one SQLite file on the old server, so that the demo's data window needs nothing
installed. The tests use real MariaDB with the example plans' queries; this answers the same questions.

Run on a server over SSH, as a plan's commands do::

    python3 site.py --db FILE count sessions      # the rows written since $CUTOVER_SINCE (and before
                                                  # $CUTOVER_UNTIL): a count, then one row per line
    python3 site.py --db FILE get maintenance     # a freeze's read-back: 1 while in maintenance mode
    python3 site.py --db FILE set maintenance 1   # a freeze's start stage

``Site`` is what the demo itself uses to play the visitors and editors.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path

TABLES = {
    # watch: (table, time column, how a row reads)
    "sessions": ("sessions", "at", "'uid ' || uid || ' active at ' || datetime(at, 'unixepoch')"),
    "saved-forms": ("forms", "at", "form || ' saved at ' || datetime(at, 'unixepoch')"),
    "profile-edits": ("profiles", "at", "'uid ' || uid || ' edited at ' || datetime(at, 'unixepoch')"),
    "content-edits": ("edits", "at", "'nid ' || nid || ' edited by uid ' || uid || ' at ' || datetime(at, 'unixepoch')"),
}
SETTINGS = ("maintenance", "registration")


class Site:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._db() as db:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS sessions (uid INTEGER, at INTEGER);
                CREATE TABLE IF NOT EXISTS forms (form TEXT, at INTEGER);
                CREATE TABLE IF NOT EXISTS profiles (uid INTEGER, at INTEGER);
                CREATE TABLE IF NOT EXISTS edits (nid INTEGER, uid INTEGER, at INTEGER);
                CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT);
                INSERT OR IGNORE INTO settings VALUES ('maintenance', '0'), ('registration', 'visitors');
            """)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def session(self, uid: int, at: int | None = None) -> None:
        self._add("INSERT INTO sessions VALUES (?, ?)", uid, at)

    def saved_form(self, form: str, at: int | None = None) -> None:
        self._add("INSERT INTO forms VALUES (?, ?)", form, at)

    def profile_edit(self, uid: int, at: int | None = None) -> None:
        self._add("INSERT INTO profiles VALUES (?, ?)", uid, at)

    def content_edit(self, nid: int, uid: int, at: int | None = None) -> None:
        with self._db() as db:
            db.execute("INSERT INTO edits VALUES (?, ?, ?)", (nid, uid, at if at is not None else int(time.time())))

    def _add(self, sql: str, key: object, at: int | None) -> None:
        with self._db() as db:
            db.execute(sql, (key, at if at is not None else int(time.time())))

    def count(self, watch: str, since: int, until: int) -> list[str]:
        table, column, row = TABLES[watch]
        with self._db() as db:
            where = f"{column} >= ? AND {column} < ?"
            n = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", (since, until)).fetchone()[0]
            rows = [r[0] for r in db.execute(f"SELECT {row} FROM {table} WHERE {where} ORDER BY {column} LIMIT 500",
                                             (since, until))]
        return [str(n), *rows]

    def get(self, name: str) -> str:
        with self._db() as db:
            return db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0]

    def set(self, name: str, value: str) -> None:
        with self._db() as db:
            db.execute("REPLACE INTO settings VALUES (?, ?)", (name, value))


def main() -> int:
    parser = argparse.ArgumentParser(prog="site.py")
    parser.add_argument("--db", required=True)
    sub = parser.add_subparsers(dest="cmd", required=True)
    count = sub.add_parser("count")
    count.add_argument("watch", choices=sorted(TABLES))
    get = sub.add_parser("get")
    get.add_argument("name", choices=SETTINGS)
    put = sub.add_parser("set")
    put.add_argument("name", choices=SETTINGS)
    put.add_argument("value")
    args = parser.parse_args()
    site = Site(Path(args.db))
    if args.cmd == "count":
        since, until = int(os.environ["CUTOVER_SINCE"]), int(os.environ["CUTOVER_UNTIL"])
        print("\n".join(site.count(args.watch, since, until)))
    elif args.cmd == "get":
        print(site.get(args.name))
    else:
        site.set(args.name, args.value)
        print(f"{args.name} is {args.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
