import subprocess
import sys


def test_the_demo_runs_to_a_green_summary():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checks passed" in result.stdout and "FAILED" not in result.stdout
    assert "Traceback" not in result.stderr
