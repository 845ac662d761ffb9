import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.durations import format_duration, parse_duration
from bot.plan import PlanError, load_plan

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_plan_is_valid():
    plan = load_plan(ROOT / "cutover.example.toml")
    assert [s.name for s in plan.stages] == ["content-check", "db-import", "files-sync", "solr-reindex"]
    assert plan.stage("content-check").manual and plan.stage("content-check").owner == "U0CAROL"
    assert plan.schedule.max_parallel == 2 and plan.schedule.start.isoformat() == "2026-12-01T19:00:00+00:00"
    assert plan.freezes.kinds["content"].announce_to == ("C0EDITORS",)
    assert plan.hosts["new"].jump == "bastion"
    assert plan.stage("db-import").timeout == timedelta(hours=4)
    assert plan.failover.verify_timeout == timedelta(seconds=60)
    assert plan.people.approval_ttl == timedelta(minutes=15)
    assert plan.freezes.reminders == (timedelta(hours=24), timedelta(hours=1), timedelta(minutes=10))


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("4h", 14400), ("1h30m", 5400),
                                          ("2d", 172800), (" 10M ", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "4", "4 hours", "-5m", "0s", "1.5h", "h"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError, match="a duration such as 90s, 15m, 4h"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(timedelta(seconds=12)) == "12s"
    assert format_duration(timedelta(seconds=250)) == "4m 10s"
    assert format_duration(timedelta(hours=2, minutes=5)) == "2h 05m"
    assert format_duration(timedelta(seconds=0.68)) == "0s"
    assert format_duration(timedelta(seconds=0.68), tenths=True) == "0.6s"
    assert format_duration(timedelta(seconds=-0.2), tenths=True) == "0.0s"
    assert format_duration(timedelta(seconds=12.7), tenths=True) == "12s"


BAD_PLAN = '''
[slack]
channel = "launch"
operators = ["U0ALICE", "alice"]
approvers = ["U0BOB"]
required_approvals = 2
approval_ttl = "15 minutes"

[hosts.old]
address = "10.0.0.2"
user = "deploy"
port = 70000

[hosts.new]
address = "10.0.0.3"
user = "deploy"
jump = "bastion"

[[stages]]
name = "db-import"
host = "db"
command = "./deploy.sh db-import"
timeout = "forever"
progress = 'Processed (\\d+)'

[[stages]]
name = "solr-reindex"
host = "new"
command = "./deploy.sh solr-reindex"
depends_on = ["db-imprt"]
retries = 3

[failover]
floating_ip = "203.0.113.300"
old = "old"
new = "old"
health_file = "var/www/health"
probe_url = "ftp://203.0.113.10/"
new_marker = "web-new-01"
'''

EXPECTED_ERRORS = [
    "slack.channel: got 'launch'; expected a Slack channel id",
    "slack.operators[1]: got 'alice'; expected a list of Slack user ids",
    "slack.required_approvals: got 2; expected at most the number of approvers (1)",
    "slack.approval_ttl: got '15 minutes'; expected a duration",
    "hosts.old.port: got 70000; expected a whole number from 1 to 65535",
    "hosts.new.jump: got 'bastion'; expected the name of another [hosts.*] entry: new, old",
    "stages[0] (`db-import`).host: got 'db'; expected the name of a [hosts.*] entry",
    "stages[0] (`db-import`).timeout: got 'forever'; expected a duration",
    "stages[0] (`db-import`).progress: got 'Processed (\\\\d+)'; expected a regular expression with named groups",
    "stages[1] (`solr-reindex`).depends_on[0]: got 'db-imprt'; expected the name of a stage defined before this one "
    "(did you mean `db-import`?): db-import",
    "stages[1] (`solr-reindex`).retries: unknown key",
    "failover.floating_ip: got '203.0.113.300'; expected an IPv4 address",
    "failover.new: got 'old'; expected a different host from failover.old",
    "failover.health_file: got 'var/www/health'; expected an absolute path",
    "failover.probe_url: got 'ftp://203.0.113.10/'; expected an http:// or https:// URL",
    "[failover] needs a [digitalocean] table too (old_droplet, new_droplet)",
]


def test_a_bad_plan_reports_every_error_with_file_and_key(tmp_path):
    path = tmp_path / "cutover.toml"
    path.write_text(BAD_PLAN)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    errors = caught.value.errors
    for expected in EXPECTED_ERRORS:
        assert any(e.startswith(f"{path}: ") and expected in e for e in errors), (expected, errors)
    assert len(errors) == len(EXPECTED_ERRORS), errors


def check_config(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "bot.cli", "check-config", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})}, cwd=cwd or ROOT)


def test_check_config_prints_all_errors_and_fails(tmp_path):
    path = tmp_path / "cutover.toml"
    path.write_text(BAD_PLAN)
    result = check_config(path)
    assert result.returncode == 2
    assert f"problem(s) with {path} and the environment:" in result.stderr
    for expected in EXPECTED_ERRORS:
        assert expected in result.stderr, expected
    assert "SLACK_BOT_TOKEN: expected a bot token" in result.stderr  # the settings, checked with the plan
    assert "Traceback" not in result.stderr


def ready_home(tmp_path):
    """A home with the example plan's SSH key and known_hosts, and the environment it needs."""
    from tests.helpers import example_home

    return {**example_home(tmp_path), "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1",
            "DIGITALOCEAN_ACCESS_TOKEN": "dop_v1_x"}


def test_check_config_accepts_the_example(tmp_path):
    result = check_config(ROOT / "cutover.example.toml", env=ready_home(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "the environment has what Socket Mode needs" in result.stdout


def test_check_config_on_the_example_with_an_empty_environment_lists_every_missing_variable(tmp_path):
    result = check_config(ROOT / "cutover.example.toml", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    for variable in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"):
        assert f"\n  {variable}: " in result.stderr, variable
    assert f"hosts.bastion.key_file (and old, new, solr): {tmp_path}/.ssh/cutover_ed25519 does not exist" in result.stderr
    assert (f"hosts.bastion.known_hosts (and old, new, solr): {tmp_path}/.ssh/known_hosts does not exist; add the "
            f"host keys: ssh-keyscan -p 22 198.51.100.7 10.10.0.2 10.10.0.3 10.10.0.4 >> {tmp_path}/.ssh/known_hosts"
            ) in result.stderr
    http = check_config(ROOT / "cutover.example.toml", "--http", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert "SLACK_SIGNING_SECRET" in http.stderr and "SLACK_APP_TOKEN" not in http.stderr


def test_near_misses_are_named(tmp_path):
    path = tmp_path / "cutover.toml"
    path.write_text((ROOT / "cutover.example.toml").read_text()
                    .replace("approval_ttl", "aproval_ttl").replace('host = "new"', 'host = "neww"', 1))
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    text = "\n".join(caught.value.errors)
    assert "slack.aproval_ttl: unknown key (did you mean `approval_ttl`?)" in text
    assert "(`db-import`).host: got 'neww'; expected the name of a [hosts.*] entry (did you mean `new`?)" in text


def test_check_config_online_blames_the_variable_that_holds_the_rejected_token(slack, do, tmp_path):
    env = {**ready_home(tmp_path), "SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": "xapp-not-this-apps-token", "DIGITALOCEAN_END_POINT": do.end_point,
           "DIGITALOCEAN_ACCESS_TOKEN": "dop_v1_wrong"}
    result = check_config(ROOT / "cutover.example.toml", "--online", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "✔ SLACK_BOT_TOKEN is accepted by Slack" in result.stdout
    assert "SLACK_APP_TOKEN was rejected (invalid_auth)" in result.stderr
    assert "SLACK_BOT_TOKEN was rejected" not in result.stderr
    assert "DIGITALOCEAN_ACCESS_TOKEN: DigitalOcean: account: " in result.stderr and "HTTP 401" in result.stderr
    assert "xapp-not-this-apps-token" not in result.stderr + result.stdout
    env.update(SLACK_APP_TOKEN=slack.app_token, DIGITALOCEAN_ACCESS_TOKEN=do.token)
    result = check_config(ROOT / "cutover.example.toml", "--online", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "✔ DIGITALOCEAN_ACCESS_TOKEN is accepted (account ops@example.com)" in result.stdout


@pytest.mark.parametrize("content,message", [
    (None, "file not found; expected a TOML plan file"),
    ("[slack\nchannel = 1", "not valid TOML"),
])
def test_unreadable_plans(tmp_path, content, message):
    path = tmp_path / "cutover.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert caught.value.errors[0].startswith(str(path)) and message in caught.value.errors[0]


def test_required_approvals_must_leave_room_for_the_requester():
    from bot.plan import parse_plan

    plan = {"slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE", "U0BOB"], "approvers": ["U0BOB", "U0CAROL"],
                      "required_approvals": 2}, "hosts": {}}
    with pytest.raises(PlanError) as caught:
        parse_plan(plan, "p.toml")
    assert caught.value.errors == ["p.toml: slack.required_approvals: got 2; expected at most 1: an operator who "
                                   "is also an approver cannot approve their own go-live, so a request by them "
                                   "could never be approved (or add another approver)"]


def test_every_key_the_plan_accepts_is_in_the_key_reference():
    """docs/plan.md lists every key with its type and default: a key the checker accepts and the reference does not
    name (as `interface` once was) fails here."""
    import ast

    reference = (ROOT / "docs" / "plan.md").read_text()
    accepted: set[str] = {"reminders"}
    for source in (ROOT / "bot" / "plan").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "only"
                    and len(node.args) == 3):
                allowed = node.args[2]
                if isinstance(allowed, ast.Set):
                    accepted |= {e.value for e in allowed.elts if isinstance(e, ast.Constant)}
                elif isinstance(allowed, ast.Call):  # set(PATHS): the [sites.connect] paths
                    from bot.plan.model import PATHS

                    accepted |= set(PATHS)
    assert len(accepted) > 80
    missing = sorted(key for key in accepted
                     if not any(form in reference for form in (f"`{key}`", f"[{key}]", f"[[{key}]]", f"[{key}.")))
    assert not missing, f"docs/plan.md does not name: {missing}"
