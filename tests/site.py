"""A Drupal site's database for the data window's tests: real MariaDB servers (Debian's mariadb-server) holding
Drupal 7- or Drupal 10-shaped tables, a simulated site that writes to them, and the option files and drush
stand-in the example plans' commands find on each lab server.

Each lab server reads its own option file (``MYSQL_HOME``): on ``old`` the client reaches the old site's
database, and ``--defaults-group-suffix=_new`` the new one's (for a salvage); on ``new`` the new one's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

MARIADBD = ("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
FORM_CACHE_LIFETIME = 21600  # Drupal 8+: a form's state lives six hours in key_value_expire

SCHEMA = {
    7: """
    CREATE TABLE sessions (uid INT UNSIGNED NOT NULL, sid VARCHAR(128) NOT NULL PRIMARY KEY, ssid VARCHAR(128) NOT NULL
        DEFAULT '', hostname VARCHAR(128) NOT NULL DEFAULT '', timestamp INT NOT NULL DEFAULT 0, cache INT NOT NULL
        DEFAULT 0, session LONGBLOB);
    CREATE TABLE cache_form (cid VARCHAR(255) NOT NULL PRIMARY KEY, data LONGBLOB, expire INT NOT NULL DEFAULT 0,
        created INT NOT NULL DEFAULT 0, serialized SMALLINT NOT NULL DEFAULT 0);
    CREATE TABLE users (uid INT UNSIGNED NOT NULL PRIMARY KEY, name VARCHAR(60) NOT NULL DEFAULT '', mail VARCHAR(254)
        DEFAULT '', created INT NOT NULL DEFAULT 0, changed INT NOT NULL DEFAULT 0, access INT NOT NULL DEFAULT 0,
        status TINYINT NOT NULL DEFAULT 0);
    CREATE TABLE node (nid INT UNSIGNED NOT NULL PRIMARY KEY, vid INT UNSIGNED, type VARCHAR(32) NOT NULL DEFAULT '',
        title VARCHAR(255) NOT NULL DEFAULT '', uid INT NOT NULL DEFAULT 0, status INT NOT NULL DEFAULT 1,
        created INT NOT NULL DEFAULT 0, changed INT NOT NULL DEFAULT 0);
    CREATE TABLE variable (name VARCHAR(128) NOT NULL PRIMARY KEY, value LONGBLOB NOT NULL);
    """,
    10: """
    CREATE TABLE sessions (uid INT UNSIGNED NOT NULL, sid VARCHAR(128) NOT NULL PRIMARY KEY, hostname VARCHAR(128)
        NOT NULL DEFAULT '', timestamp BIGINT NOT NULL DEFAULT 0, session LONGBLOB);
    CREATE TABLE key_value_expire (collection VARCHAR(128) NOT NULL, name VARCHAR(128) NOT NULL, value LONGBLOB NOT NULL,
        expire INT NOT NULL DEFAULT 2147483647, PRIMARY KEY (collection, name));
    CREATE TABLE key_value (collection VARCHAR(128) NOT NULL, name VARCHAR(128) NOT NULL, value LONGBLOB NOT NULL,
        PRIMARY KEY (collection, name));
    CREATE TABLE config (collection VARCHAR(255) NOT NULL DEFAULT '', name VARCHAR(255) NOT NULL, data LONGBLOB,
        PRIMARY KEY (collection, name));
    CREATE TABLE users_field_data (uid INT UNSIGNED NOT NULL, langcode VARCHAR(12) NOT NULL, name VARCHAR(60) NOT NULL,
        mail VARCHAR(254), status TINYINT, created INT, changed INT, access INT NOT NULL DEFAULT 0,
        PRIMARY KEY (uid, langcode));
    CREATE TABLE node_field_data (nid INT UNSIGNED NOT NULL, vid INT UNSIGNED NOT NULL, type VARCHAR(32) NOT NULL,
        langcode VARCHAR(12) NOT NULL, status TINYINT NOT NULL, uid INT UNSIGNED NOT NULL, title VARCHAR(255) NOT NULL,
        created INT, changed INT, PRIMARY KEY (nid, langcode));
    """,
}


def find_mariadbd() -> str | None:
    return next((p for p in (shutil.which(n) or n for n in MARIADBD) if os.access(p, os.X_OK)), None)


def mariadb_unavailable() -> str | None:
    if find_mariadbd() is None or shutil.which("mariadb-install-db") is None:
        return "MariaDB is not installed (Debian package mariadb-server); .ci/run installs it"
    if shutil.which("mariadb") is None or shutil.which("mariadb-dump") is None:
        return "the MariaDB client is not installed (Debian package mariadb-client)"
    return None


class MariaDB:
    """One MariaDB server of our own: its data directory, a Unix socket, no network, root without a password."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.socket = self.dir / "mysqld.sock"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MariaDB":
        why = mariadb_unavailable()
        if why:
            pytest.skip(why)
        self.dir.mkdir(parents=True, exist_ok=True)
        data, tmp = self.dir / "data", self.dir / "tmp"
        tmp.mkdir(exist_ok=True)  # its own: servers started side by side otherwise meet in /tmp's temporary tables
        env = {**os.environ, "TMPDIR": str(tmp)}
        user = ["--user=root"] if os.geteuid() == 0 else []
        installed = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--skip-test-db",
                                    "--auth-root-authentication-method=normal", *user], capture_output=True, text=True,
                                   env=env)
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {(installed.stderr or installed.stdout)[-500:]}")
        log = open(self.dir / "mariadbd.log", "ab")
        self.process = subprocess.Popen(
            [find_mariadbd(), "--no-defaults", f"--datadir={data}", f"--socket={self.socket}", "--skip-networking",
             f"--tmpdir={tmp}", f"--pid-file={self.dir / 'mariadbd.pid'}", "--innodb-buffer-pool-size=16M",
             "--skip-log-bin", *user], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.dir / 'mariadbd.log').read_text()[-500:]}")
            if self.socket.exists() and self.sql("SELECT 1", database=None).strip() == "1":
                return self
            time.sleep(0.05)
        raise RuntimeError("mariadbd did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def sql(self, statements: str, database: str | None = "drupal") -> str:
        result = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "--batch",
                                 "--skip-column-names", *([database] if database else []), "-e", statements],
                                capture_output=True, text=True)
        if result.returncode != 0:
            if database is None and "Can't connect" in result.stderr:
                return ""
            raise RuntimeError(f"mariadb: {result.stderr.strip()}")
        return result.stdout

    def client_config(self, role: str) -> str:
        """The ``[client]`` lines that reach this server, in the option-file group of ``role``'s suffix."""
        suffix = "" if role == "own" else f"_{role}"
        return f"[client{suffix}]\nsocket={self.socket}\nuser=root\n[mysql{suffix}]\ndatabase=drupal\n"


class DrupalSite:
    """A Drupal 7 or 10 site's tables in a database, and what its users do to them."""

    def __init__(self, db: MariaDB, version: int) -> None:
        self.db = db
        self.version = version
        self._ids = iter(range(1000, 10**9))

    def create(self) -> "DrupalSite":
        self.db.sql("CREATE DATABASE drupal", database=None)
        self.db.sql(SCHEMA[self.version])
        for uid in range(1, 21):
            self.add_user(uid, changed=1)
        for nid in range(4700, 4720):
            self.add_node(nid, uid=2, changed=1)
        self.set_maintenance(False)
        self.set_registration("visitors")
        return self

    # -- what visitors, users and editors do --------------------------------------------------------------

    def session(self, uid: int, at: int) -> str:
        sid = f"sid{next(self._ids)}"
        self.db.sql(f"INSERT INTO sessions (uid, sid, hostname, timestamp, session) VALUES "
                    f"({uid}, '{sid}', '192.0.2.7', {at}, 'x')")
        return sid

    def saved_form(self, at: int) -> str:
        key = f"form-{next(self._ids)}"
        if self.version == 7:
            self.db.sql(f"INSERT INTO cache_form (cid, data, expire, created, serialized) VALUES "
                        f"('form_state_{key}', 'a:0:{{}}', {at + FORM_CACHE_LIFETIME}, {at}, 1)")
        else:
            self.db.sql(f"INSERT INTO key_value_expire (collection, name, value, expire) VALUES "
                        f"('form_state', '{key}', 'a:0:{{}}', {at + FORM_CACHE_LIFETIME})")
        return key

    def add_user(self, uid: int, changed: int) -> None:
        if self.version == 7:
            self.db.sql(f"INSERT INTO users (uid, name, mail, created, changed) VALUES "
                        f"({uid}, 'user{uid}', 'user{uid}@example.org', 1, {changed})")
        else:
            self.db.sql(f"INSERT INTO users_field_data (uid, langcode, name, mail, created, changed) VALUES "
                        f"({uid}, 'en', 'user{uid}', 'user{uid}@example.org', 1, {changed})")

    def profile_edit(self, uid: int, at: int) -> None:
        table = "users" if self.version == 7 else "users_field_data"
        self.db.sql(f"UPDATE {table} SET changed = {at}, mail = 'edited{uid}@example.org' WHERE uid = {uid}")

    def add_node(self, nid: int, uid: int, changed: int) -> None:
        if self.version == 7:
            self.db.sql(f"INSERT INTO node (nid, vid, type, title, uid, status, created, changed) VALUES "
                        f"({nid}, {nid}, 'page', 'Page {nid}', {uid}, 1, 1, {changed})")
        else:
            self.db.sql(f"INSERT INTO node_field_data (nid, vid, type, langcode, status, uid, title, created, "
                        f"changed) VALUES ({nid}, {nid}, 'page', 'en', 1, {uid}, 'Page {nid}', 1, {changed})")

    def content_edit(self, nid: int, uid: int, at: int) -> None:
        table = "node" if self.version == 7 else "node_field_data"
        self.db.sql(f"UPDATE {table} SET changed = {at}, uid = {uid}, title = 'Edited {nid}' WHERE nid = {nid}")

    def set_maintenance(self, on: bool) -> None:
        if self.version == 7:
            self.db.sql(f"REPLACE INTO variable (name, value) VALUES ('maintenance_mode', 'i:{int(on)};')")
        else:
            self.db.sql(f"REPLACE INTO key_value (collection, name, value) VALUES "
                        f"('state', 'system.maintenance_mode', 'i:{int(on)};')")

    def set_registration(self, who: str) -> None:
        if self.version == 7:
            value = {"admin_only": 0, "visitors": 1, "visitors_admin_approval": 2}[who]
            self.db.sql(f"REPLACE INTO variable (name, value) VALUES ('user_register', 'i:{value};')")
        else:
            self.db.sql(f"REPLACE INTO config (collection, name, data) VALUES ('', 'user.settings', "
                        f"'a:1:{{s:8:\"register\";s:{len(who)}:\"{who}\";}}')")

    # -- what the database holds ------------------------------------------------------------------------

    def count(self, sql: str) -> int:
        return int(self.db.sql(sql).strip())


DRUSH = r'''#!/usr/bin/env python3
"""A stand-in for drush on a lab server: the few commands the example plans use, on the site's real database
(the tables Drupal keeps them in), through the mariadb client and this server's option file."""
import re, subprocess, sys

VERSION = {version}


def sql(statement):
    out = subprocess.run(["mariadb", "--batch", "--skip-column-names", "-e", statement], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return out.stdout.strip()


def php(value):  # i:1; -> 1, s:10:"admin_only"; -> admin_only
    m = re.match(r'i:(\d+);|s:\d+:"(.*)";', value)
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else value


args = [a for a in sys.argv[1:] if not a.startswith("-")]
if VERSION == 7 and args[:1] == ["vget"]:
    print(php(sql(f"SELECT value FROM variable WHERE name = '{{args[1]}}'")))
elif VERSION == 7 and args[:1] == ["vset"]:
    sql(f"REPLACE INTO variable (name, value) VALUES ('{{args[1]}}', 'i:{{int(args[2])}};')")
elif VERSION == 10 and args[:1] == ["state:get"]:
    print(php(sql(f"SELECT value FROM key_value WHERE collection = 'state' AND name = '{{args[1]}}'")))
elif VERSION == 10 and args[:1] == ["state:set"]:
    sql(f"REPLACE INTO key_value (collection, name, value) VALUES ('state', '{{args[1]}}', 'i:{{int(args[2])}};')")
elif VERSION == 10 and args[:1] == ["config:get"] and args[1:3] == ["user.settings", "register"]:
    print(re.search(r's:8:"register";s:\d+:"([^"]*)"', sql("SELECT data FROM config WHERE name = 'user.settings'")).group(1))
elif VERSION == 10 and args[:1] == ["config:set"] and args[1:3] == ["user.settings", "register"]:
    v = args[3]
    sql(f"REPLACE INTO config (collection, name, data) VALUES ('', 'user.settings', "
        f"'a:1:{{{{s:8:\"register\";s:{{len(v)}}:\"{{v}}\";}}}}')")
else:
    sys.exit(f"drush stand-in: {{' '.join(sys.argv[1:])}} is not one of the commands it knows")
'''


def mysql_home(server_dir: Path) -> dict[str, str]:
    """The environment a lab server's SSH commands get: where the MariaDB client finds its option file."""
    return {"MYSQL_HOME": str(server_dir / "mysql-home")}


def install_on(server_dir: Path, version: int, old: MariaDB, new: MariaDB, role: str) -> None:
    """Give a lab server its option file (``old`` also reaches the new site's database, with the suffix ``_new``)
    and the drush stand-in."""
    home = Path(mysql_home(server_dir)["MYSQL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    own = old if role == "old" else new
    text = own.client_config("own") + (new.client_config("new") if role == "old" else "")
    (home / "my.cnf").write_text(text)
    bin_dir = server_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "drush").write_text(DRUSH.format(version=version))
    (bin_dir / "drush").chmod(0o755)
