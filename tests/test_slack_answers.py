"""Slack answers of an unexpected shape (ok, but without a field the bot reads) are named problems, not
tracebacks: at the start's checks, in the process, in a post, in an approval."""

from __future__ import annotations

import subprocess
import sys

from slack_sdk import WebClient

from bot.ops.startup import startup_problems
from bot.plan import parse_plan
from bot.slackapi.answers import SlackAnswerError, checked
from tests.conftest import OPERATOR, PLAN, reply_text
from tests.helpers import example_home, to_toml


def test_checked_names_the_method_and_the_field():
    assert checked("chat.postMessage", {"ok": True, "ts": "1.2"})["ts"] == "1.2"
    for answer, problem in (({"ok": True}, "had no `ts`"), ({"ok": True, "ts": 12}, "had a `ts` that is not a string"),
                            ([1], "was not a JSON object")):
        try:
            checked("chat.postMessage", answer)
        except SlackAnswerError as exc:
            assert str(exc) == f"Slack's chat.postMessage answer {problem}"
        else:
            raise AssertionError(answer)


def test_the_start_names_an_answer_without_a_channel_or_a_user(slack):
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    slack.answer_without("conversations.info", "channel")
    slack.answer_without("users.info", "user")
    problems = startup_problems(client, parse_plan(PLAN, "p"))
    assert problems[0] == ("[slack] channel = C0LAUNCH: Slack could not tell whether the bot is in it (Slack's "
                           "conversations.info answer had no `channel`).")
    assert problems[1] == ("[slack] operators: Slack could not say who U0ALICE is (Slack's users.info "
                           "answer had no `user`).")
    assert len(problems) == 2


def test_the_process_says_it_and_exits_without_a_traceback(slack, tmp_path):
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(PLAN))
    env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(tmp_path / "c.db"),
           **example_home(tmp_path)}
    slack.answer_without("conversations.info", "channel")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "Slack's conversations.info answer had no `channel`" in result.stderr
    assert "Traceback" not in result.stderr and "AttributeError" not in result.stderr


def test_a_post_without_a_ts_is_a_failed_post_said_as_such(slack, bot):
    notifier = bot.services.notifier
    slack.answer_without("chat.postMessage", "ts")
    assert notifier.post("hello") is None
    assert notifier.last_error() == "had no `ts`"
    assert notifier.post("hello again") is not None


def test_an_approver_slack_describes_without_a_user_is_not_counted(slack, bot):
    slack.answer_without("users.info", "user")
    assert bot.services.notifier.is_bot("U0BOB") is None
    assert bot.services.notifier.is_bot("U0BOB") is False
    assert "What you can do" in reply_text(slack, slack.command(OPERATOR, "help"))
