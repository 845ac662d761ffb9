"""``cutover demo`` as a new user runs it: the whole launch night, the go-live included, on any machine with sshd."""

import os
import pwd
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bot.standins.lab import lab_unavailable

GO_LIVE = ("100% (600 / 600)", "db-import-run4.log", "so your approval does not count",
           "✅ *Switched to `new` and verified.*", "first answer from `new`", "s to the first answer from `new`",
           "DigitalOcean confirmed",
           "answers from `old`", "31/31 checks passed")
DATA = ("The content freeze holds:", "losing 3 sessions, 1 saved form, 2 profile edits; content edits since the copy: 0",
        "[ Approve ]", "▸ carol presses Approve on the request, and confirms", "forwards every request to the new server",
        "📒 The data window closed", "```uid 5 active at", "*Every site after the switch*",
        "`fr.example.test` old ✅ `new` · new ✅ · reserved IP ✅ `new`")
RUNBOOK = ("a step for @eve — *waiting for its owner*", "[ Done ]", "▸ eve presses Done on content-check",
           "`run all` by @alice finished, up to 2 side by side", "▸ eve opens the cutover app's Home tab",
           "│ == Cutover runbook ==", "📎 cutover-timeline.png", "The report is also written here")


def test_the_demo_runs_to_a_green_summary():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], capture_output=True, text=True, timeout=180)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "FAILED" not in out and "Traceback" not in result.stderr
    for line in ("Content freeze* scheduled by @alice", "The content freeze is now in effect", *GO_LIVE, *RUNBOOK, *DATA):
        assert line in out, line
    assert ("keepalived was a stand-in" in out) == (lab_unavailable() is not None)


def test_the_demo_shows_the_go_live_as_a_user_without_root(tmp_path):
    """As a laptop's user runs it: no root, so no network namespaces; keepalived is stood in for, and says so.

    Run as root (CI), the demo runs as a throwaway user: a user namespace maps it onto this machine's user, so it
    reads the same Python and packages wherever they are installed, but it is not root and cannot make namespaces.
    """
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, "-m", "bot.cli", "demo"]
    user = None
    if os.geteuid() == 0:
        if shutil.which("useradd") is None or shutil.which("unshare") is None:
            pytest.skip("running as root needs useradd (Debian package passwd) and unshare (util-linux)")
        user = f"cutover-demo-{uuid.uuid4().hex[:6]}"
        # sshd serves only an account with a shell that is not locked ('*' is no password, not a lock).
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", user],
                       check=True)
    try:
        if user is not None:
            subprocess.run(["usermod", "--password", "*", user], check=True)
            entry = pwd.getpwnam(user)
            command = ["unshare", "--user", f"--map-user={entry.pw_uid}", f"--map-group={entry.pw_gid}", *command]
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    finally:
        if user is not None:
            subprocess.run(["userdel", user], capture_output=True)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "network namespaces need root" in out and "KEEPALIVED" in out, out[:600]
    assert "FAILED" not in out and "Traceback" not in result.stderr
    for line in (*GO_LIVE, *DATA):
        assert line in out, line
    assert "(keepalived was a stand-in)" in out
