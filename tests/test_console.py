"""``cutover console`` driven through a pseudo-terminal, as a person would type."""

import os
import pty
import select
import subprocess
import sys
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
        if proc.poll() is None:
            proc.kill()
        os.close(master)
