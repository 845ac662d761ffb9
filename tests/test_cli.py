"""Every `cutover` subcommand, as a person types it: ordinary mistakes end in one clear line and an exit code, never
a traceback; `init` gives a plan `check-config` accepts; the subcommands read alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import example_home

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "cutover.example.toml"


def cutover(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL)


def mistakes(tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, what the one line must say) for each ordinary mistake, across the subcommands."""
    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    locked = tmp / "locked"
    return [
        (["check-config", "--plan", str(tmp / "nope.toml")], f"{tmp}/nope.toml: file not found"),
        (["check-config", "--plan", str(tmp)], f"{tmp}: cannot be read"),
        (["run", "--plan", str(tmp / "nope.toml")], "nope.toml: file not found"),
        (["keepalived", "--plan", str(EXAMPLE), "--out", str(a_file)],
         f"--out {a_file}: a file, not a folder"),
        (["keepalived", "--plan", str(EXAMPLE), "--out", str(a_file / "sub")], f"{a_file}"),
        (["keepalived", "--plan", str(tmp / "nope.toml")], "nope.toml: file not found"),
        (["report", "--db", str(tmp / "nope.db"), "--plan", str(EXAMPLE)], "nope.db: no such database"),
        (["report", "--db", str(a_file), "--plan", str(EXAMPLE)], "a-file"),
        (["status", "--db", str(tmp / "no" / "such.db")], "no/such.db.health.json"),
        (["console", "--plan", str(tmp / "nope.toml")], "nope.toml: file not found"),
        (["console", "--plan", str(EXAMPLE), "--db", str(tmp / "no" / "such" / "c.db")], "no/such/c.db"),
        (["init", "--out", str(a_file)], f"--out {a_file}: a file, not a folder"),
        (["init", "--out", str(locked / "plans")] if os.geteuid() != 0 else
         ["init", "--out", "/proc/cutover-plans"], "cutover init:"),
    ]


def test_every_subcommand_turns_a_bad_path_into_one_line_and_an_exit_code(tmp_path):
    home = example_home(tmp_path)
    if os.geteuid() != 0:
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked").chmod(0o500)
    failures = []
    for args, says in mistakes(tmp_path):
        done = cutover(*args, env=home, cwd=tmp_path)
        text = done.stdout + done.stderr
        if done.returncode not in (1, 2) or "Traceback" in text or says not in text:
            failures.append(f"cutover {' '.join(args)} → {done.returncode}\n{text[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_ctrl_c_ends_a_running_subcommand_in_one_line(tmp_path):
    """The demo, interrupted in the middle: a line, the conventional exit code, its stand-ins gone."""
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "cutover demo" not in proc.stdout.readline():
        pass
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "cutover demo: interrupted" in err and "Traceback" not in err + out, err[-2000:]


def test_init_writes_a_plan_check_config_accepts_and_a_deploy_script_that_fails_until_written(tmp_path):
    home = example_home(tmp_path)
    for example in ("generic", "drupal10", "drupal7"):
        out = tmp_path / example
        made = cutover("init", "--out", str(out), "--example", example, env=home)
        assert made.returncode == 0, made.stderr
        assert (out / "cutover.toml").exists() and os.access(out / "deploy.sh", os.X_OK)
        checked = cutover("check-config", "--plan-only", "--plan", str(out / "cutover.toml"), env=home)
        assert checked.returncode == 0, f"{example}: {checked.stderr}"
        assert "the environment was not checked (--plan-only)" in checked.stdout
        script = out / "deploy.sh"
        for stage in ("db-import",):
            ran = subprocess.run(["sh", str(script), stage], capture_output=True, text=True)
            assert ran.returncode == 3 and f"{stage}: not written yet" in ran.stderr
        unknown = subprocess.run(["sh", str(script), "nonsense"], capture_output=True, text=True)
        assert unknown.returncode == 2
    again = cutover("init", "--out", str(tmp_path / "generic"), env=home)
    assert again.returncode == 2 and "already exist; nothing was written (--force overwrites)" in again.stderr
    assert cutover("init", "--out", str(tmp_path / "generic"), "--force", env=home).returncode == 0


def test_check_config_lists_the_plans_the_files_and_the_environments_problems_together(tmp_path):
    """Fixing one problem must not reveal five more: a plan error does not hide the key files or the tokens."""
    plan = tmp_path / "cutover.toml"
    plan.write_text(EXAMPLE.read_text().replace('required_approvals = 2', 'required_approvals = "two"'))
    done = cutover("check-config", "--plan", str(plan), env={"HOME": str(tmp_path)})
    assert done.returncode == 2
    for says in ("slack.required_approvals", "SLACK_BOT_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN",
                 "hosts.bastion.key_file (and old, new, solr)", "hosts.bastion.known_hosts"):
        assert says in done.stderr, says
    plan_only = cutover("check-config", "--plan-only", "--plan", str(plan), env={"HOME": str(tmp_path)})
    assert "SLACK_BOT_TOKEN" not in plan_only.stderr and "slack.required_approvals" in plan_only.stderr
    assert "key_file" in plan_only.stderr
    # The old positional form still works.
    assert "slack.required_approvals" in cutover("check-config", str(plan)).stderr


def test_the_subcommands_read_alike(tmp_path):
    helps = {name: cutover(name, "--help").stdout for name in
             ("init", "check-config", "run", "status", "keepalived", "report", "demo", "console")}
    for name, text in helps.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) > 2 and not lines[1].startswith("options"), f"{name} has no description:\n{text}"
    for name in ("check-config", "run", "keepalived", "report", "console"):
        assert "--plan FILE" in helps[name], name
    top = cutover("--help").stdout
    assert all(name in top for name in helps)


def test_status_reads_the_bot_on_this_machine_without_a_flag_and_says_where_to_look(tmp_path):
    done = cutover("status", cwd=tmp_path)
    assert done.returncode == 1
    assert "no health file here. Give the running bot's database: cutover status --db FILE" in done.stderr
    named = cutover("status", "--db", str(tmp_path / "c.db"), cwd=tmp_path)
    assert named.returncode == 1 and "Traceback" not in named.stderr


@pytest.mark.parametrize("flag", ["--local", ""])
def test_status_local_is_still_understood(tmp_path, flag):
    done = cutover("status", *([flag] if flag else []), "--db", str(tmp_path / "c.db"), cwd=tmp_path)
    assert done.returncode == 1 and "unrecognized" not in done.stderr


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme.split("## The two commands", 1)[1], re.S)
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith("cutover demo")
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == tests
