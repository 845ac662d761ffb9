"""The command surface under pressure: commands bound to the plan's channel, acks that never wait on the
database, and expensive commands one at a time per person."""

from __future__ import annotations

import sqlite3

from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, OUTSIDER, reply_text
from tests.stage_support import finished


def audits(bot, action=None):
    rows = bot.services.store.recent_audit(200)
    return [r for r in rows if action is None or r["action"] == action]


def test_commands_are_bound_to_the_plan_channel(slack, bot):
    text = reply_text(slack, slack.command(OPERATOR, "run db-import", channel="C0ELSEWHERE"))
    assert text.startswith("The cutover runs in <#C0LAUNCH>: use `/cutover` there."), text
    assert bot.services.store.query("SELECT COUNT(*) AS n FROM stage_runs")[0]["n"] == 0
    dm = reply_text(slack, slack.command(OUTSIDER, "audit", channel="D0EVE"))
    assert dm.startswith("The cutover runs in <#C0LAUNCH>"), dm
    assert "Stages" in reply_text(slack, slack.command(OUTSIDER, "status", channel="D0EVE"))
    assert "What you can do" in reply_text(slack, slack.command(OUTSIDER, "help", channel="D0EVE"))
    refused = slack.wait_for(lambda: [r for r in audits(bot) if r["outcome"] == "refused"], 10, "the audit")
    assert '"reason": "outside the plan\'s channel"' in refused[0]["detail"]
    assert not slack.messages("C0LAUNCH")  # nothing was posted in the channel on anyone's behalf


def test_logs_posts_in_the_channel_so_only_operators_may_ask(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    run = finished(stage_bot, "quick")
    text = reply_text(slack, slack.command(OUTSIDER, "logs quick"))
    assert text.startswith("Only operators may use `/cutover logs`"), text
    assert len([f for f in slack.files.values() if f.get("thread_ts") == run["message_ts"]]) == 1


def test_an_ack_never_waits_on_a_locked_database(slack, bot):
    holder = sqlite3.connect(bot.services.settings.db_path, timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        envelopes = [slack.command(OPERATOR, "status") for _ in range(12)]
        envelopes.append(slack.command(OUTSIDER, "run db-import"))
        for env in envelopes:
            slack.wait_ack(env, 10)  # acknowledged while the database is still locked
        assert envelopes[-1].ack_payload["text"].startswith("Only operators may use `/cutover run`")
        assert not slack.responses_for(envelopes[0])  # the work itself waits for the database
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    answer = slack.wait_for(lambda: slack.responses_for(envelopes[0]), 40, "the status answer")
    assert "Stages" in (blocks_text(answer[-1]["blocks"]) or "")
    slack.wait_for(lambda: len(audits(bot, "status")) == 12 and audits(bot, "run"), 40, "every command audited")


def test_expensive_commands_run_one_at_a_time_per_person(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    run = finished(stage_bot, "quick")
    slack.method_delay["files.getUploadURLExternal"] = 3.0
    first = slack.command(OPERATOR, "logs quick")
    slack.wait_ack(first)
    again = [reply_text(slack, slack.command(OPERATOR, "logs quick")) for _ in range(5)]
    assert all(t.startswith("Your `/cutover logs` is still running; its answer comes here.") for t in again), again
    other = slack.command("U0BOB", "logs quick")  # someone else is not held up by it
    assert reply_text(slack, other, timeout=15).startswith("The log of `quick`")
    assert reply_text(slack, first, timeout=15).startswith("The log of `quick`")
    slack.method_delay.clear()
    assert reply_text(slack, slack.command(OPERATOR, "logs quick"), timeout=15).startswith("The log of `quick`")
    assert len([f for f in slack.files.values() if f.get("thread_ts") == run["message_ts"]]) == 4
    refused = [r for r in audits(stage_bot, "logs") if r["outcome"] == "refused"]
    assert len(refused) == 5
