"""``cutover console`` driven through a pseudo-terminal, as a person would type."""

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

from tests.conftest import PLAN
from tests.helpers import to_toml


def read_until(fd: int, text: str, seen: list[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in "".join(seen):
            return "".join(seen)
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode("utf-8", "replace"))
            except OSError:
                break
    raise AssertionError(f"never saw {text!r}; output so far:\n{''.join(seen)}")


def stop(proc) -> None:
    """A console still running after a failed test: Ctrl-C first, so that it stops the stand-ins it started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def drain_until_exit(proc, fd: int, seen: list[str], timeout: float = 30.0) -> int:
    """Keep reading the terminal while the console shuts down: a full pty would hold its last writes."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen.append(os.read(fd, 4096).decode("utf-8", "replace"))
            except OSError:
                break
    return proc.wait(max(0.1, deadline - time.monotonic()))


def test_a_command_and_a_reaction_through_a_terminal(tmp_path):
    plan = tmp_path / "cutover.toml"
    plan.write_text(to_toml(PLAN))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "console", "--plan", str(plan),
                             "--db", str(tmp_path / "c.db")], stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path)
    os.close(slave)
    seen: list[str] = []
    try:
        read_until(master, "alice> ", seen)
        os.write(master, b"/cutover freeze content at in 2h -- rehearsal\n")
        out = read_until(master, "Scheduled the content freeze", seen)
        assert "*Content freeze* scheduled by @alice" in out
        os.write(master, b"react :eyes: as @bob\n")
        out = read_until(master, "@bob reacted :eyes: on", seen)
        os.write(master, b"as @eve\n")
        read_until(master, "eve> ", seen)
        os.write(master, b"/cutover freeze content at in 3h\n")
        read_until(master, "Only operators may use `/cutover freeze`", seen)
        os.write(master, b"quit\n")
        assert proc.wait(30) == 0
        assert "Traceback" not in "".join(seen)
    finally:
        stop(proc)
        os.close(master)


def _console(tmp_path, plan: dict, *extra: str):
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(plan))
    master, slave = pty.openpty()
    def own_terminal() -> None:  # as a shell starts it: its own session, the pty its terminal (Ctrl-C is SIGINT)
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "console", "--plan", str(plan_file),
                             "--db", str(tmp_path / "c.db"), *extra], stdin=slave, stdout=slave, stderr=slave,
                            cwd=tmp_path, preexec_fn=own_terminal)
    os.close(slave)
    return proc, master


def test_the_go_live_rehearsed_with_the_failover_side_stood_in_and_the_report_saved(tmp_path):
    """A plan of one's own, no keepalived and no DigitalOcean token: the console stands in for both and the go-live
    runs to verified; the files the bot uploads are saved where the console says."""
    import copy

    plan = copy.deepcopy(PLAN)
    plan["stages"] = [{"name": "smoke-test", "owner": "U0ALICE", "instructions": "Click around."}]
    plan["hosts"] = {}  # its stages are a person's; the two servers are the stand-ins' (the [ssh] table is its own)
    proc, master = _console(tmp_path, plan, "--stand-in-failover")
    seen: list[str] = []
    try:
        out = read_until(master, "alice> ", seen, timeout=60)
        assert "the failover side (DigitalOcean, keepalived and the two servers" in out
        assert f"Files the bot uploads (the report, logs): {tmp_path}/c-uploads/" in out
        os.write(master, b"/cutover run smoke-test\n")
        read_until(master, "Click around", seen, timeout=30)
        os.write(master, b"/cutover done smoke-test\n")
        read_until(master, "`smoke-test` is marked done.", seen, timeout=30)
        os.write(master, b"/cutover golive\n")
        read_until(master, "it needs 2 approval(s)", seen, timeout=60)
        os.write(master, b"react :white_check_mark: as @bob\n")
        read_until(master, "@bob reacted", seen)
        os.write(master, b"react :white_check_mark: as @carol\n")
        read_until(master, "Switched to `standin-new` and verified.", seen, timeout=90)
        os.write(master, b"/cutover report\n")
        out = read_until(master, "saved as ", seen, timeout=60)
        saved = [line.split("saved as ", 1)[1].strip() for line in out.splitlines() if "saved as " in line]
        assert saved and all(os.path.exists(p) and p.startswith(str(tmp_path / "c-uploads")) for p in saved), saved
        os.write(master, b"quit\n")
        assert drain_until_exit(proc, master, seen) == 0
        assert "Traceback" not in "".join(seen)
    finally:
        stop(proc)
        os.close(master)


def test_the_console_takes_the_database_as_a_bot_does_and_ctrl_c_ends_it_in_one_line(tmp_path):
    first, master = _console(tmp_path, PLAN)
    seen: list[str] = []
    try:
        read_until(master, "alice> ", seen)
        second = subprocess.run([sys.executable, "-m", "bot.cli", "console", "--plan", str(tmp_path / "cutover.toml"),
                                 "--db", str(tmp_path / "c.db")], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
        assert second.returncode == 2
        assert f"is in use by another cutover bot (pid {first.pid} on" in second.stdout + second.stderr
        os.write(master, b"\x03")  # Ctrl-C at the prompt
        code = drain_until_exit(first, master, seen)
        assert code == 128 + signal.SIGINT, code
        out = read_until(master, "interrupted", seen)
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
    finally:
        stop(first)
        os.close(master)


def test_an_upload_the_console_cannot_save_is_said_so_not_a_traceback(tmp_path):
    from bot.local.console import _keep
    from bot.standins.slack import SlackStandIn

    slack = SlackStandIn()
    slack.files["F1"] = {"id": "F1", "name": "cutover-report.md", "content": b"# the night\n"}
    blocked = tmp_path / "uploads"
    blocked.write_text("a file where the folder would go")
    said = _keep(slack, {"id": "F1", "name": "cutover-report.md"}, blocked)
    assert said is not None and said.startswith(f"not saved: {blocked}")
    assert _keep(slack, {"id": "F1", "name": "cutover-report.md"}, tmp_path / "ok") == \
        f"saved as {tmp_path / 'ok' / 'F1-cutover-report.md'}"
    assert (tmp_path / "ok" / "F1-cutover-report.md").read_bytes() == b"# the night\n"
