import re
import subprocess
import sys

import pytest

from bot.settings import SettingsError, load_settings
from tests.helpers import example_home


def test_defaults_and_env_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("SLACK_BOT_TOKEN=xoxb-from-file\nCUTOVER_DB=/tmp/x.db\n")
    settings = load_settings({"SLACK_API_URL": "http://127.0.0.1:9/api"}, env_file=env)
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert settings.plan_path == "cutover.toml" and settings.db_path == "cutover.db"


def test_missing_and_malformed_tokens_are_named_never_echoed():
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxp-user-token-secret-value", "SLACK_APP_TOKEN": ""})
    with pytest.raises(SettingsError) as caught:
        settings.require("socket")
    text = str(caught.value)
    assert "SLACK_BOT_TOKEN: expected a bot token starting with xoxb-" in text
    assert "SLACK_APP_TOKEN: expected an app-level token starting with xapp-" in text
    assert "xoxp-user-token-secret-value" not in text
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET"):
        load_settings({"SLACK_BOT_TOKEN": "xoxb-1"}).require("http")


def test_cutover_run_refuses_to_start_with_a_clear_message(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxp-secret-user-token", "CUTOVER_PLAN": "missing.toml"}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN: expected a bot token starting with xoxb-" in result.stderr
    assert "xoxp-secret-user-token" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rejected_token_stops_start_with_what_to_check(slack, tmp_path):
    from pathlib import Path

    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    base = {"PATH": "/usr/bin:/bin", "SLACK_APP_TOKEN": slack.app_token, "CUTOVER_PLAN": str(plan),
            "CUTOVER_DB": str(tmp_path / "c.db"), **example_home(tmp_path)}
    wrong = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, env={**base, "SLACK_BOT_TOKEN": "xoxb-not-the-right-one",
                                              "SLACK_API_URL": slack.api_url})
    assert wrong.returncode == 2
    assert "Slack answered `invalid_auth`: SLACK_BOT_TOKEN was rejected" in wrong.stderr
    assert "xoxb-not-the-right-one" not in wrong.stderr and "Traceback" not in wrong.stderr


def test_one_bot_per_database_and_an_unusable_path_is_named(slack, tmp_path):
    import signal
    from pathlib import Path

    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    env = {"PATH": "/usr/bin:/bin", "SLACK_APP_TOKEN": slack.app_token, "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan), "CUTOVER_DB": str(tmp_path / "c.db"),
           **example_home(tmp_path)}
    first = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        slack.wait_for(lambda: slack.calls_of("apps.connections.open"), 30, "the first bot to connect")
        second = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path, env=env)
        assert second.returncode == 2
        assert f"is in use by another cutover bot (pid {first.pid} on" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    missing = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path, env={**env, "CUTOVER_DB": str(tmp_path / "no" / "such" / "c.db")})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no/such/c.db.lock (beside CUTOVER_DB) cannot be opened: No such file or directory" in missing.stderr


def test_the_bot_does_not_start_outside_its_channel_or_with_people_slack_does_not_know(slack, tmp_path):
    import copy

    from tests.conftest import PLAN
    from tests.helpers import to_toml

    slack.add_channel("C0NOTIN", "launch-night", bot_is_member=False)
    slack.unknown_users.add("U0TYPO")
    plan = copy.deepcopy(PLAN)
    plan["slack"]["channel"] = "C0NOTIN"
    plan["slack"]["approvers"] = ["U0BOB", "U0CAROL", "U0TYPO"]
    slack.add_channel("C0EDITORS", "editors", bot_is_member=False)
    slack.unknown_users.add("U0GHOST")
    plan["freezes"] = {"content": {"announce_to": ["C0EDITORS"]}}
    plan["stages"].append({"name": "smoke-test", "owner": "U0GHOST", "instructions": "Click around."})
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(plan))
    env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(tmp_path / "c.db"),
           **example_home(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert ("the bot is not a member of [slack] channel C0NOTIN (#launch-night), so it cannot post there: invite "
            "it with `/invite @cutover` in that channel.") in result.stderr
    assert "[slack] approvers: U0TYPO is not a member of this workspace (user_not_found)" in result.stderr
    assert ("the bot is not a member of [freezes.content] announce_to C0EDITORS (#editors), so it cannot post "
            "there") in result.stderr
    assert "stages `smoke-test` owner: U0GHOST is not a member of this workspace" in result.stderr
    assert "Traceback" not in result.stderr and slack.bot_token not in result.stderr
    plan["slack"]["channel"] = "C0GONE"
    plan["slack"]["approvers"] = ["U0BOB", "U0CAROL", "U0DAVE"]
    plan_file.write_text(to_toml(plan))
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "[slack] channel = C0GONE: Slack knows no channel by that ID that the bot can see" in result.stderr


def test_a_start_check_slack_does_not_answer_names_what_could_not_be_checked(slack):
    """The bot's client has its own deadline (30 s, retried); here a short one stands for it."""
    from slack_sdk import WebClient

    from bot.plan import parse_plan
    from bot.ops.startup import startup_problems
    from tests.conftest import PLAN

    client = WebClient(token=slack.bot_token, base_url=slack.api_url, timeout=1)
    slack.hold_next("conversations.info", 3.0)
    problems = startup_problems(client, parse_plan(PLAN, "p"))
    assert problems[0].startswith("[slack] channel = C0LAUNCH: Slack could not tell whether the bot is in it "
                                  "(no answer ("), problems
    assert len(problems) == 1  # the people were checked after it, and are fine


def _run_env(slack, tmp_path, **extra: str) -> dict[str, str]:
    from pathlib import Path

    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    return {"PATH": "/usr/bin:/bin", "SLACK_APP_TOKEN": slack.app_token, "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan), "CUTOVER_DB": str(tmp_path / "c.db"),
            **example_home(tmp_path), **extra}


def test_slack_down_at_start_is_retried_with_backoff_then_the_bot_starts(slack, tmp_path):
    """A restart during a blip: Slack answers 503 three times, then the bot connects on its own."""
    import signal

    slack.fail_next("auth.test", status=503, error="service_unavailable", times=3)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, stdout=out,
                               stderr=subprocess.STDOUT, env=_run_env(slack, tmp_path, CUTOVER_START_RETRY="60"))
        try:
            slack.wait_for(lambda: slack.calls_of("apps.connections.open"), 45, "the bot to connect after the blip")
        finally:
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(30) == 0
    text = log.read_text()
    assert "Slack cannot be reached yet (attempt 1): Slack answered `service_unavailable`" in text, text
    assert "(attempt 3)" in text and "(attempt 4)" not in text
    assert "trying again in 1 s" in text and "trying again in 2 s" in text and "trying again in 4 s" in text
    assert "Traceback" not in text and slack.bot_token not in text


def test_slack_unreachable_for_the_whole_retry_window_exits_4_which_the_unit_restarts(slack, tmp_path):
    # 10 s: room for a second attempt however slow the first (the client itself retries a refused connection)
    env = _run_env(slack, tmp_path, SLACK_API_URL="http://127.0.0.1:9/api/", CUTOVER_START_RETRY="10")
    gone = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env)
    assert gone.returncode == 4, gone.stderr
    assert "Slack cannot be reached yet (attempt 1): Slack's Web API at http://127.0.0.1:9/api/ could not be " \
           "reached" in gone.stderr
    assert re.search(r"gave up after \d+ attempts over 10 s \(CUTOVER_START_RETRY\); exiting 4 so that the service "
                     r"manager starts it again", gone.stderr), gone.stderr
    assert "Traceback" not in gone.stderr
    bad = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env={**env, "CUTOVER_START_RETRY": "soon"})
    assert bad.returncode == 2 and "CUTOVER_START_RETRY: expected seconds from 0 to 86400 (got `soon`)" in bad.stderr


def test_a_stop_while_waiting_for_slack_ends_at_once(slack, tmp_path):
    import signal
    import time

    env = _run_env(slack, tmp_path, SLACK_API_URL="http://127.0.0.1:9/api/", CUTOVER_START_RETRY="600")
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert bot.stdout is not None
    seen = ""
    deadline = time.monotonic() + 30
    while "trying again" not in seen and time.monotonic() < deadline:
        seen += bot.stdout.readline()
    bot.send_signal(signal.SIGTERM)
    assert bot.wait(10) == 0, seen
    assert "stopped while waiting for Slack" in bot.stdout.read()


def as_another_user(command: list[str], uid: int = 10001) -> list[str]:
    """``command`` run as ``uid``, not root: as root, in a user namespace mapped onto it (it reads the same
    Python wherever it is installed); as anyone else, as is."""
    import os
    import shutil

    if os.geteuid() != 0:
        return command
    if shutil.which("unshare") is None:
        pytest.skip("running as root needs unshare (util-linux) to check a file as another user")
    return ["unshare", "--user", f"--map-user={uid}", f"--map-group={uid}", *command]


def test_a_key_the_bot_cannot_read_is_named_with_its_owner_by_check_config_and_at_start(slack, tmp_path):
    """The Docker case: the image runs as uid 10001, and a key made by ssh-keygen is 0600 and owned by the host's
    user. It exists; it cannot be read. Both check-config and `cutover run` say so, with the fix."""
    import os

    home = example_home(tmp_path)
    key = tmp_path / "home" / ".ssh" / "cutover_ed25519"
    key.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(key, 4242, 4242)  # someone else's key, as a mounted host file is
    else:
        key.chmod(0)
    env = _run_env(slack, tmp_path, **home)
    uid = 10001 if os.geteuid() == 0 else os.getuid()
    check = subprocess.run(as_another_user([sys.executable, "-m", "bot.cli", "check-config"]), capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, env=env)
    assert check.returncode == 2
    assert (f"hosts.bastion.key_file (and old, new, solr): {key} cannot be read by uid {uid}, the user the bot runs "
            "as (it is owned by uid") in check.stderr, check.stderr
    assert "does not exist" not in check.stderr and f"chown {uid} {key}" in check.stderr
    assert check.stderr.count(str(key)) == 2, "one problem per file (the path, and the path in the fix)"
    run = subprocess.run(as_another_user([sys.executable, "-m", "bot.cli", "run"]), capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stderr
    assert (f"bad plan: {env['CUTOVER_PLAN']}: hosts.bastion.key_file (and old, new, solr): {key} cannot be read by "
            f"uid {uid}") in run.stderr
    assert not slack.calls_of("apps.connections.open"), "it never reported ready"
    assert "Traceback" not in run.stderr
