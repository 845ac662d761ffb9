"""An update of a stage's message that Slack answers too late can land after the final state: the bot shows the
message again once such an update can no longer land, in the same process and after a restart."""

from __future__ import annotations

import copy

from bot.local.bot import start_local_bot
from bot.plan import parse_plan
from tests.conftest import OPERATOR, PLAN, reply_text
from tests.stage_support import finished, message_text, updates_of

TIMEOUT = 2  # the bot's Slack client gives up on an answer after this (a real bot: 30 s)
HOLD = 3.5  # Slack answers, and applies, the held update this long after it was sent


def plan(sshd) -> dict:
    p = copy.deepcopy(PLAN)
    p["hosts"] = {"new": sshd.host_entry()}
    p["stages"] = [{"name": "short", "host": "new", "command": "echo first; sleep 1.2; echo second"}]
    return p


def held_landed_after_the_final(slack, ts) -> bool:
    """The held progress update reached the message after the final state did (the fault happened)."""
    calls = updates_of(slack, ts)  # in the order Slack applied them
    running = [i for i, c in enumerate(calls) if "running" in c["params"].get("text", "")]
    final = [i for i, c in enumerate(calls) if "succeeded" in c["params"].get("text", "")]
    return bool(running and final) and running[-1] > final[0]


def test_a_late_progress_update_does_not_have_the_last_word(slack, sshd, tmp_path):
    bot = start_local_bot(slack, parse_plan(plan(sshd), "p"), str(tmp_path / "c.db"), slack_timeout=TIMEOUT)
    try:
        slack.hold_next("chat.update", HOLD)  # the first progress update is held past the client's timeout
        reply_text(slack, slack.command(OPERATOR, "run short"))
        run = finished(bot, "short")
        ts = run["message_ts"]
        slack.wait_for(lambda: slack.held() == 0 and held_landed_after_the_final(slack, ts), 10,
                       "the held update to land after the final one")
        slack.wait_for(lambda: "succeeded" in message_text(slack, ts), 3 * TIMEOUT + 2, "the final state again")
        assert "succeeded" in updates_of(slack, ts)[-1]["params"]["text"]
        slack.wait_for(lambda: not bot.services.store.get("stage_runs", run["id"])["message_doubt"], 5,
                       "the doubt to be settled")
    finally:
        bot.stop()


def test_after_a_restart_the_message_is_shown_again_once_a_late_update_cannot_land(slack, sshd, tmp_path):
    db = str(tmp_path / "c.db")
    bot = start_local_bot(slack, parse_plan(plan(sshd), "p"), db, slack_timeout=TIMEOUT)
    try:
        slack.hold_next("chat.update", HOLD)
        reply_text(slack, slack.command(OPERATOR, "run short"))
        run = finished(bot, "short")
        assert bot.services.store.get("stage_runs", run["id"])["message_doubt"] == 1
    finally:
        bot.stop()  # before the late update lands, and before the bot would have shown the final state again
    ts = run["message_ts"]
    again = start_local_bot(slack, parse_plan(plan(sshd), "p"), db, slack_timeout=TIMEOUT)
    try:
        slack.wait_for(lambda: slack.held() == 0 and held_landed_after_the_final(slack, ts), 10,
                       "the held update to land")
        slack.wait_for(lambda: "succeeded" in message_text(slack, ts), 3 * TIMEOUT + 2, "the final state again")
        slack.wait_for(lambda: not again.services.store.get("stage_runs", run["id"])["message_doubt"], 5,
                       "the doubt to be settled")
        assert "succeeded" in message_text(slack, ts)
    finally:
        again.stop()
