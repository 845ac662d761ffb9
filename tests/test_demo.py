import subprocess
import sys

from bot.standins.lab import lab_unavailable


def test_the_demo_runs_to_a_green_summary():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], capture_output=True, text=True, timeout=180)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "FAILED" not in out and "Traceback" not in result.stderr
    for line in ("Content freeze* scheduled by @alice", "The content freeze is now in effect"):
        assert line in out, line
    if lab_unavailable() is None:
        for line in ("100% (600 / 600)", "db-import-run1.log", "so your approval does not count",
                     "✅ *Switched to `new` and verified.*", "first answer from `new`", "DigitalOcean confirmed",
                     "answers from `old`", "19/19 checks passed"):
            assert line in out, line
