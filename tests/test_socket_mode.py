"""The real Bolt app driven through the stand-in over Socket Mode, as Slack drives it."""

import time

import pytest

from bot.local.bot import start_local_bot
from commands import Command, Reply, Router
from commands.basic import AUDIT, STATUS
from tests.conftest import OPERATOR, OUTSIDER, reply_text
from tests.helpers import latest_runs


def test_help_lists_only_what_the_caller_may_do(slack, bot):
    operator = reply_text(slack, slack.command(OPERATOR, "help"))
    outsider = reply_text(slack, slack.command(OUTSIDER, "help"))
    assert "/cutover status" in operator and "/cutover audit [N]" in operator
    assert "You are an *operator*" in operator
    assert "You may read the plan's state" in outsider
    assert "/cutover freeze list" in outsider and "/cutover run" not in outsider and "/cutover golive" not in outsider


def test_status_tells_the_truth_about_an_untouched_plan(slack, bot):
    text = reply_text(slack, slack.command(OUTSIDER, "status"))
    assert "*db-import* on `new` — not run" in text
    assert "*solr-reindex* on `new` — not run, after db-import" in text
    assert "Freezes*\nNone scheduled." in text
    assert "No request is open." in text


def test_audit_shows_events_newest_last_with_local_times(slack, bot):
    reply_text(slack, slack.command(OPERATOR, "status"))
    reply_text(slack, slack.command(OUTSIDER, "bogus"))
    text = reply_text(slack, slack.command(OUTSIDER, "audit 3"))
    lines = [l for l in text.splitlines() if "<!date^" in l]
    assert len(lines) == 3
    assert "<@U0ALICE> *status*" in lines[0]
    assert "<@U0EVE> *command* `bogus` — bad-usage" in lines[1]
    assert "<@U0EVE> *audit* `audit 3` — accepted" in lines[2]


@pytest.mark.parametrize("text,expected", [
    ("frobnicate", "`frobnicate` is not a /cutover command. Usage: `/cutover help | status | run | done | failed | cancel | logs | freeze | unfreeze | check | golive | rollback | losses | salvage | audit | report`"),
    ("audit lots", "`audit` takes how many events to show, a number from 1 to 200 (got `lots`).\n"
                   "Usage: `/cutover audit [N]`"),
    ("audit 0", "a number from 1 to 200"),
    ("status now", "This command takes no arguments (got `now`).\nUsage: `/cutover status`"),
])
def test_bad_input_gets_a_short_specific_reply_in_the_ack(slack, bot, text, expected):
    env = slack.command(OPERATOR, text)
    slack.wait_ack(env)
    assert expected in env.ack_payload["text"]
    assert env.ack_seconds < 3


def test_empty_command_is_help(slack, bot):
    assert "What you can do" in reply_text(slack, slack.command(OUTSIDER, ""))


ran = []


def _act(services, caller, args):
    ran.append(caller.user)
    return Reply(text="done")


ACTING = Command("poke", "poke", "an acting command used by these tests", acts=True, run=_act)


def test_an_outsider_is_refused_and_the_refusal_is_audited(slack, plan, tmp_path):
    ran.clear()
    local = start_local_bot(slack, plan, str(tmp_path / "c.db"), router=Router([STATUS, AUDIT, ACTING]))
    try:
        env = slack.command(OUTSIDER, "poke")
        text = reply_text(slack, env)
        assert text.startswith("Only operators may use `/cutover poke`")
        assert reply_text(slack, slack.command(OPERATOR, "poke")) == "done"
        assert ran == [OPERATOR]
        refused = [e for e in local.services.store.recent_audit() if e["outcome"] == "refused"]
        assert [(e["actor"], e["action"]) for e in refused] == [(OUTSIDER, "poke")]
    finally:
        local.stop()


def test_a_redelivered_command_acts_once(slack, bot):
    env = slack.command(OPERATOR, "status")
    reply_text(slack, env)
    again = slack.redeliver(env)
    slack.wait_ack(again)
    time.sleep(0.5)
    assert len(slack.responses_for(env)) == 1
    accepted = [e for e in bot.services.store.recent_audit() if e["action"] == "status"]
    assert len(accepted) == 1


def test_a_redelivered_event_acts_once(slack, bot):
    ts = bot.services.notifier.post("a message to react to")
    first = slack.react(OPERATOR, "eyes", "C0LAUNCH", ts)
    slack.wait_ack(first)
    again = slack.redeliver(first)
    slack.wait_ack(again)
    key = "event:" + first.payload["event_id"]

    def recorded():
        return [r["key"] for r in bot.services.store.query("SELECT key FROM processed_events")].count(key)

    slack.wait_for(recorded, 10, "the delivery recorded")
    assert recorded() == 1


def test_a_429_on_post_message_is_retried_and_delivered_once(slack, bot):
    slack.fail_next("chat.postMessage", retry_after=1)
    ts = bot.services.notifier.post("the freeze starts now")
    assert ts is not None
    assert [m["text"] for m in slack.messages()] == ["the freeze starts now"]
    calls = slack.calls_of("chat.postMessage")
    assert [c["status"] for c in calls] == [429, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 0.9


def test_every_ack_is_fast_while_slow_work_is_still_running(slack, bot):
    slack.response_delay = 3.5
    envs = [slack.command(OPERATOR if i % 2 else OUTSIDER, "status") for i in range(12)]
    for env in envs:
        slack.wait_ack(env)
    slowest = max(env.ack_seconds for env in envs)
    still_working = sum(1 for env in envs if not slack.responses_for(env))
    assert slowest < 3, f"slowest ack took {slowest:.2f}s"
    assert still_working == 12, "the slow work had finished before the acks; the test proves nothing"
    slack.wait_for(lambda: all(slack.responses_for(e) for e in envs), timeout=30, what="all responses")


def test_the_bot_reconnects_when_slack_asks_it_to(slack, bot):
    opened = len(slack.calls_of("apps.connections.open"))
    slack.disconnect()
    slack.wait_for(lambda: len(slack.calls_of("apps.connections.open")) > opened, 15, "a reconnect")
    slack.wait_for(lambda: sum(not ws.closed for ws in slack._sockets) >= 1, 15, "a live socket")
    time.sleep(0.5)
    assert "Cutover status" in reply_text(slack, slack.command(OPERATOR, "status"), timeout=15)


def test_a_failing_command_says_so_without_a_traceback(slack, plan, tmp_path):
    def broken(services, caller, args):
        raise RuntimeError("disk on fire /home/deploy/secret")

    local = start_local_bot(slack, plan, str(tmp_path / "c.db"),
                            router=Router([Command("break", "break", "fails", acts=False, run=broken)]))
    try:
        text = reply_text(slack, slack.command(OPERATOR, "break"))
        assert text.startswith("`/cutover break` failed unexpectedly; nothing more was done.")
        assert "(ref E" in text and "Traceback" not in text and "disk on fire" not in text
    finally:
        local.stop()


def test_a_command_with_a_hidden_character_is_refused_and_audited_spelled_out(slack, bot):
    env = slack.command(OPERATOR, "run \u202edb-import")
    text = reply_text(slack, env)
    assert text == ("Your command holds an invisible character: U+202E RIGHT-TO-LEFT OVERRIDE at character 5, "
                    "before `db-import`. It can make a command read other than it runs; type it again without it.")
    entry = slack.wait_for(lambda: [e for e in bot.services.store.recent_audit(10) if e["outcome"] == "refused"], 5,
                           "the audit entry")[-1]
    assert entry["target"] == "run \\u202edb-import" and "\u202e" not in entry["target"]
    assert latest_runs(bot.services.store) == {}
