"""The SSH layer against a real sshd: what a command printed is what the bot reads, every time."""

from __future__ import annotations

import copy
import io
import logging
import os
import socket
import threading

import paramiko
import pytest

from bot.ops.logsetup import setup_logging
from bot.plan import parse_plan
from bot.redact import Redactor
from bot.ssh import SSHError, SSHPool
from tests.conftest import PLAN

LINE = "the whole answer of a command, to its last byte"


def test_concurrent_commands_each_get_their_whole_output(sshd):
    """sshd can send a command's exit status before the last of its output, so reading must not stop there; and a
    quick command's channel may be gone before the client would send it EOF, so none is sent."""
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry(), "old": sshd.host_entry()}
    pool = SSHPool(parse_plan(plan, "p").hosts)
    results: list[str] = []
    errors: list[Exception] = []

    def work() -> None:
        for _ in range(50):
            try:
                results.append(pool.run("new", f"echo '{LINE}'").stdout)
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        pool.close()
    assert not errors, errors[:3]
    short = [r for r in results if r != LINE + "\n"]
    assert len(results) == 800 and not short, f"{len(short)} of {len(results)} outputs cut short: {short[:3]}"
    # An EOF sent for a channel sshd had already freed makes it drop the whole connection.
    assert "nonexistent channel" not in sshd.log.read_text()


def test_a_snapshot_reads_several_files_and_the_addresses_in_one_command_as_read_file_would(sshd, tmp_path):
    from bot.clock import SystemClock
    from bot.switch.cloud import Cloud
    from bot.switch.witnesses import Snapshot, Witnesses

    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry(), "old": sshd.host_entry()}
    plan["failover"] = {"floating_ip": "203.0.113.10", "vip": "127.0.0.1", "old": "old", "new": "new",
                        "health_file": str(tmp_path / "health"), "probe_url": "http://127.0.0.1:1/health",
                        "new_marker": "web-new"}
    plan["digitalocean"] = {"old_droplet": 1, "new_droplet": 2}
    parsed = parse_plan(plan, "p")
    pool = SSHPool(parsed.hosts)
    witnesses = Witnesses(parsed, pool, Cloud("token", "http://127.0.0.1:1"), SystemClock())
    (tmp_path / "health").write_text("true\n")
    (tmp_path / "odd").write_bytes("two\nlines ünïcode $(not run) `nor this`\n".encode())
    (tmp_path / "empty").write_text("")
    paths = [str(tmp_path / name) for name in ("health", "odd", "empty", "missing")]
    try:
        snap = witnesses.snapshot("old", paths)
        assert not snap.error and not snap.unreadable
        for path in paths:
            raw = pool.read_file("old", path)
            assert snap.read(path) == (None if raw is None else raw.decode().strip()), path
        assert snap.read(paths[3]) is None and snap.read(paths[2]) == ""
        assert any(" 127.0.0.1/" in line for line in snap.addresses)
        # keepalived's VIP is on a network interface; a copy on lo (LVS-DR style) answers no ARP and is not it
        assert witnesses.vip_holders({"old": snap, "new": snap}).hosts == ()
        eth = Snapshot("new", {}, ("2: eth0    inet 127.0.0.1/24 brd 127.0.0.255 scope global eth0",))
        assert witnesses.vip_holders({"old": snap, "new": eth}).hosts == ("new",)
        assert witnesses.health("old", snap) == "true"
    finally:
        pool.close()


def test_files_are_read_and_written_without_sftp(sshd, tmp_path):
    """The test sshd offers no SFTP subsystem (a hardened server need not): reading and writing files, binary ones
    included, are commands on the host, and what cannot be done is said as the host says it."""
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry(), "old": sshd.host_entry()}
    pool = SSHPool(parse_plan(plan, "p").hosts)
    try:
        with pytest.raises(paramiko.SSHException):
            pool.client("old").open_sftp()  # no SFTP here
        blob = bytes(range(256)) * 4 + b"\nno newline at the end"
        pool.write_file_atomic("old", str(tmp_path / "blob"), blob, 0o600)
        assert (tmp_path / "blob").read_bytes() == blob and (tmp_path / "blob").stat().st_mode & 0o777 == 0o600
        assert pool.read_file("old", str(tmp_path / "blob")) == blob
        assert pool.read_file("old", str(tmp_path / "nothing-here")) is None
        with pytest.raises(SSHError, match="its directory does not exist"):
            pool.write_file_atomic("old", str(tmp_path / "no-dir" / "f"), b"x")
        if os.geteuid() != 0:  # root reads anything: the refusal needs another user
            (tmp_path / "secret").write_text("x")
            (tmp_path / "secret").chmod(0)
            with pytest.raises(SSHError, match="Permission denied"):
                pool.read_file("old", str(tmp_path / "secret"))
        assert not list(tmp_path.glob("*.cutover-*.tmp"))
    finally:
        pool.close()


def test_a_port_without_an_ssh_banner_costs_one_line_of_log_not_a_traceback(tmp_path):
    """paramiko logs a handshake that never gets a banner as hundreds of traceback lines; the bot's log keeps its
    own one line about it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, and says nothing
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {name: {"address": "127.0.0.1", "port": silent.getsockname()[1], "user": "deploy",
                            "known_hosts": str(tmp_path / "known_hosts")} for name in ("old", "new")}
    pool = SSHPool(parse_plan(plan, "p").hosts, connect_timeout=1)
    log = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(Redactor(()), "INFO", stream=log)
        for _ in range(3):
            with pytest.raises(SSHError, match="`old`"):
                pool.run("old", "true")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        pool.close()
        silent.close()
    lines = log.getvalue().splitlines()
    assert "Traceback" not in log.getvalue() and len(lines) <= 3, lines


def test_one_call_timing_out_does_not_cut_another_under_way_on_the_same_connection(sshd, tmp_path):
    """A command that takes too long (here: its input cannot be sent, as the host reads none) must not close the
    connection while another command, a flip for instance, is still running on it."""
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry(), "old": sshd.host_entry()}
    pool = SSHPool(parse_plan(plan, "p").hosts)
    marker = tmp_path / "landed"
    outcome: dict[str, object] = {}
    try:
        pool.run("new", "true")  # connected

        def write() -> None:
            try:
                outcome["write"] = pool.run("new", f"sleep 2; echo landed > {marker}; echo ok", retry=False).stdout
            except SSHError as exc:
                outcome["write"] = exc

        writer = threading.Thread(target=write)
        writer.start()
        with pytest.raises(SSHError):
            pool.run("new", "sleep 5", stdin=b"x" * (8 << 20), timeout=1, retry=False)  # stuck sending its input
        writer.join(10)
        assert outcome["write"] == "ok\n", outcome
        assert marker.read_text() == "landed\n"
    finally:
        pool.close()
