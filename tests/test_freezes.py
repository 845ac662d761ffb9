"""Freezes, with time moved through an injected clock: announcements, reminders, start and end,
across restarts and downtime, each once."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from bot.local.bot import start_local_bot
from bot.plan import parse_plan
from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, OUTSIDER, PLAN, reply_text
from tests.helpers import latest_runs, FakeClock

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    return FakeClock(T0)


def start(slack, tmp_path, clock, plan=None):
    return start_local_bot(slack, parse_plan(plan or PLAN, "p"), str(tmp_path / "f.db"), clock=clock)


def channel(slack):
    return [(blocks_text(m.get("blocks")) or m["text"]) for m in slack.messages()]


def at(bot, clock, delta):
    clock.set(T0 + delta)
    bot.services.freezes.tick()
    bot.services.freezes.tick()


def test_a_freeze_is_announced_reminded_started_and_ended_in_order_once(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        reply = reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h until in 27h -- editors know"))
        assert reply == "Scheduled the content freeze; it is announced in the channel."
        slack.wait_for(lambda: channel(slack), 5, "the announcement")
        assert "*Content freeze* scheduled by <@U0ALICE> — no content edits" in channel(slack)[0]
        assert "editors know" in channel(slack)[0] and "Reminders 24h, 1h, 10m before" in channel(slack)[0]
        listing = reply_text(slack, slack.command(OUTSIDER, "freeze list"))
        assert "*content freeze* scheduled" in listing and "reminders ahead: 24h, 1h, 10m" in listing

        at(bot, clock, timedelta(hours=1))
        assert channel(slack)[-1].startswith("⏰ Reminder: the *content freeze* starts")
        assert "(in 24h 00m)" in channel(slack)[-1]
        at(bot, clock, timedelta(hours=24))
        at(bot, clock, timedelta(hours=24, minutes=50))
        status = reply_text(slack, slack.command(OUTSIDER, "status"))
        assert "content* from" in status
        at(bot, clock, timedelta(hours=25))
        assert "The content freeze is now in effect" in channel(slack)[-1]
        status = reply_text(slack, slack.command(OUTSIDER, "status"))
        assert "*content* in effect since" in status
        at(bot, clock, timedelta(hours=27))
        assert channel(slack)[-1] == "✅ The *content freeze* is lifted."
        texts = channel(slack)
        assert len(texts) == 6, texts
        assert ["(in 24h 00m)" in texts[1], "(in 1h 00m)" in texts[2], "(in 10m 00s)" in texts[3]] == [True] * 3
        assert not any("late" in t.lower() for t in texts)
        assert "No freeze is scheduled" in reply_text(slack, slack.command(OUTSIDER, "freeze list"))
        assert "Freezes*\nNone scheduled." in reply_text(slack, slack.command(OUTSIDER, "status"))
    finally:
        bot.stop()


def test_a_restart_between_reminders_loses_and_repeats_none(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    reply_text(slack, slack.command(OPERATOR, "freeze registration at in 25h"))
    at(bot, clock, timedelta(hours=1))
    bot.stop()
    for _ in range(3):
        again = start(slack, tmp_path, clock)
        again.stop()
    clock.set(T0 + timedelta(hours=24))
    final = start(slack, tmp_path, clock)
    try:
        texts = channel(slack)
        assert len(texts) == 3, texts
        assert "(in 24h 00m)" in texts[1] and "(in 1h 00m)" in texts[2]
        assert "new user registrations" in texts[0]
    finally:
        final.stop()


def down_after(slack, tmp_path, clock, command, down_until):
    """Schedule with ``command``, stop the bot, let the clock reach ``down_until``, start it again."""
    bot = start(slack, tmp_path, clock)
    reply_text(slack, slack.command(OPERATOR, command))
    bot.stop()
    clock.set(T0 + down_until)
    return start(slack, tmp_path, clock)


def test_down_across_a_reminder_posts_it_late_with_a_note(slack, tmp_path, clock):
    again = down_after(slack, tmp_path, clock, "freeze content at in 25h", timedelta(hours=1, minutes=20))
    try:
        last = channel(slack)[-1]
        assert "starts" in last and "(in 23h 40m)" in last
        assert "Posted late: this was due" in last and "while the bot was not running" in last
    finally:
        again.stop()


def test_down_across_reminders_and_the_start(slack, tmp_path, clock):
    again = down_after(slack, tmp_path, clock, "freeze content at in 25h until in 30h",
                       timedelta(hours=25, minutes=5))
    try:
        texts = channel(slack)
        assert len(texts) == 3, texts
        assert "The 24h, 1h, 10m reminder(s) for the content freeze were skipped" in texts[1]
        assert "now in effect" in texts[2] and "Posted late" in texts[2]
    finally:
        again.stop()
    once_more = start(slack, tmp_path, clock)
    try:
        assert len(channel(slack)) == 3
    finally:
        once_more.stop()


@pytest.mark.parametrize("text,expected", [
    ("freeze content at 2026-11-30T12:00Z", "is in the past; a freeze starts in the future"),
    ("freeze content at 2026-12-02 18:00", "has no time zone"),
    ("freeze content at 2026-12-02 18:00 Mars/Base", "`Mars/Base` is not a time zone"),
    ("freeze content at in 2h until in 1h", "`until` (<!date^"),
    ("freeze content at in 2 hours", "after `in` give one duration"),
    ("freeze content at tomorrow", "`tomorrow` is not a time"),
    ("freeze content in 2h", "After the kind comes `at WHEN`"),
    ("freeze lunch at in 2h", "`lunch` is not a freeze kind; use `content`, `registration`."),
    ("unfreeze", "Name the freeze kind to lift"),
])
def test_bad_whens_are_refused_with_specific_messages(slack, tmp_path, clock, text, expected):
    bot = start(slack, tmp_path, clock)
    try:
        env = slack.command(OPERATOR, text)
        slack.wait_ack(env)
        assert expected in env.ack_payload["text"], env.ack_payload["text"]
        assert bot.services.records.freezes.current() == []
    finally:
        bot.stop()


def test_only_operators_schedule_but_anyone_lists(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        refused = reply_text(slack, slack.command(OUTSIDER, "freeze content at in 2h"))
        assert refused.startswith("Only operators may use `/cutover freeze`")
        assert "No freeze is scheduled" in reply_text(slack, slack.command(OUTSIDER, "freeze list"))
        assert bot.services.records.freezes.current() == []
    finally:
        bot.stop()


def test_cancel_and_unfreeze(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 2h"))
        assert "No content freeze is in effect. It is only scheduled" in \
            reply_text(slack, slack.command(OPERATOR, "unfreeze content"))
        assert "A content freeze is already scheduled" in \
            reply_text(slack, slack.command(OPERATOR, "freeze content at in 3h"))
        assert "is cancelled" in reply_text(slack, slack.command(OPERATOR, "freeze cancel content"))
        at(bot, clock, timedelta(hours=3))
        assert not any("in effect" in t for t in channel(slack))
        reply_text(slack, slack.command(OPERATOR, "freeze registration at in 4h"))
        at(bot, clock, timedelta(hours=7))
        assert "now in effect" in channel(slack)[-1]
        assert reply_text(slack, slack.command("U0BOB", "unfreeze registration")) == \
            "The registration freeze is lifted."
        assert channel(slack)[-1] == "✅ The *registration freeze* is lifted by <@U0BOB>."
        at(bot, clock, timedelta(hours=30))
        assert channel(slack)[-1] == "✅ The *registration freeze* is lifted by <@U0BOB>."
    finally:
        bot.stop()


def test_a_start_stage_runs_and_its_result_is_posted(slack, tmp_path, clock):
    from tests.helpers import start_sshd

    sshd = start_sshd(tmp_path / "sshd")
    try:
        plan = copy.deepcopy(PLAN)
        plan["hosts"] = {"new": sshd.host_entry()}
        plan["stages"] = [{"name": "maintenance-on", "host": "new", "command": "echo maintenance mode on"}]
        plan["freezes"] = {"content": {"start_stage": "maintenance-on"}}
        bot = start(slack, tmp_path, clock, plan)
        try:
            reply_text(slack, slack.command(OPERATOR, "freeze content at in 1h"))
            at(bot, clock, timedelta(hours=1))
            slack.wait_for(lambda: "The start stage `maintenance-on` of the content freeze succeeded." in
                           "\n".join(channel(slack)), 30, "the start stage result")
            assert latest_runs(bot.services.store)["maintenance-on"]["state"] == "succeeded"
        finally:
            bot.stop()
    finally:
        sshd.stop()


def test_outsiders_are_refused_before_anything_is_parsed_and_overflows_are_usage_errors(slack, bot):
    for when in ("in 99999999d", "2099-12-01T18:00+99:00", "in 100000000000000000000s"):
        text = reply_text(slack, slack.command(OUTSIDER, f"freeze content at {when}"))
        assert text.startswith("Only operators may use `/cutover freeze`"), text
        text = reply_text(slack, slack.command(OPERATOR, f"freeze content at {when}"))
        assert "out of range" in text or "is not a UTC offset" in text, text
    assert "must be in the future" in reply_text(slack, slack.command(OPERATOR, "freeze content at in 0m"))
    assert reply_text(slack, slack.command(OUTSIDER, "freeze list")).startswith("No freeze is scheduled")


def test_a_notice_slack_took_but_the_bot_did_not_record_is_not_posted_again(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h"))
    at(bot, clock, timedelta(hours=1))
    assert channel(slack)[-1].startswith("⏰ Reminder")
    bot.stop()
    # As if killed between Slack accepting the reminder and the bot recording it.
    from bot.store import Store
    store = Store(str(tmp_path / "f.db"))
    with store.transaction() as db:
        db.execute("UPDATE freeze_notices SET outcome = 'pending' WHERE notice = 'remind-24h'")
    store.close()
    clock.set(T0 + timedelta(hours=1, minutes=5))
    again = start(slack, tmp_path, clock)
    try:
        again.services.freezes.tick()
        reminders = [t for t in channel(slack) if t.startswith("⏰ Reminder")]
        assert len(reminders) == 1, reminders
        row = again.services.store.query("SELECT outcome FROM freeze_notices WHERE notice = 'remind-24h'")[0]
        assert row["outcome"] == "posted"
        audit = [e for e in again.services.store.recent_audit(50) if e["action"] == "freeze-remind"]
        assert "found in the channel after a restart" in audit[-1]["detail"]
    finally:
        again.stop()


def test_down_across_two_reminders_posts_one_notice_timed_from_now(slack, tmp_path, clock):
    again = down_after(slack, tmp_path, clock, "freeze content at in 25h", timedelta(hours=24, minutes=30))
    try:
        reminders = [t for t in channel(slack) if t.startswith("⏰ Reminder")]
        assert len(reminders) == 1, reminders
        assert "(in 30m 00s)" in reminders[0] and "Posted late" in reminders[0]
        outcomes = {r["notice"]: r["outcome"] for r in again.services.store.query("SELECT * FROM freeze_notices")}
        assert outcomes["remind-24h"] == "merged" and outcomes["remind-1h"] == "late"
    finally:
        again.stop()


def test_a_freeze_whose_announcement_slack_refused_does_not_claim_it_was_announced(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        slack.fail_next("chat.postMessage", status=200, error="not_in_channel", times=1)
        reply = reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h"))
        assert reply.startswith("Scheduled the content freeze, but its announcement could not be posted"), reply
        assert "Slack said `not_in_channel`" in reply and "it is announced" not in reply
        clock.set(T0 + timedelta(minutes=2))
        bot.services.freezes.tick()
        assert channel(slack) and "*Content freeze* scheduled" in channel(slack)[0]
    finally:
        bot.stop()


def test_a_note_in_slacks_encoding_is_escaped_once_and_bidi_controls_are_refused(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        text = reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h -- R&amp;D \u202eall clear"))
        assert text.startswith("Your command holds an invisible character: U+202E RIGHT-TO-LEFT OVERRIDE at "
                               "character 33, before `all`."), text
        assert slack.messages() == []
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h -- R&amp;D all clear"))
        announcement = slack.wait_for(lambda: slack.messages(), 5, "the announcement")[0]
        text = blocks_text(announcement["blocks"])
        assert "R&amp;D all clear" in text and "&amp;amp;" not in text, text
    finally:
        bot.stop()


def test_a_note_over_the_limit_is_cut_with_a_mark_and_said(slack, tmp_path, clock):
    bot = start(slack, tmp_path, clock)
    try:
        note = "publish before Friday " * 40  # 880 characters
        reply = reply_text(slack, slack.command(OPERATOR, f"freeze content at in 2h -- {note}"))
        assert "The note was cut to 500 characters, marked with …" in reply, reply
        announced = channel(slack)[-1]
        assert "publish before Friday" in announced and "…" in announced and note.strip() not in announced
        stored = bot.services.store.query("SELECT note FROM freezes")[0]["note"]
        assert len(stored) <= 500 and stored.endswith("…")
    finally:
        bot.stop()


def test_a_freeze_is_also_announced_where_the_editors_are_each_channel_its_own_record(slack, tmp_path, clock):
    slack.add_channel("C0EDITORS", "editors", bot_is_member=False)  # invited a little late
    plan = copy.deepcopy(PLAN)
    plan["freezes"] = {"reminders": ["24h"], "content": {"announce_to": ["C0EDITORS"]}}
    bot = start(slack, tmp_path, clock, plan)
    store = bot.services.store
    try:
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 25h -- publish before Friday"))
        slack.wait_for(lambda: channel(slack), 5, "the announcement")
        failed = [e for e in store.recent_audit(50) if e["action"] == "freeze-announce" and e["outcome"] == "failed"]
        assert len(failed) == 1 and "C0EDITORS" in failed[0]["detail"] and "not_in_channel" in failed[0]["detail"]
        assert slack.messages("C0EDITORS") == []

        slack.channels["C0EDITORS"].bot_is_member = True
        at(bot, clock, timedelta(minutes=2))  # the failed notice is tried again, there only
        editors = [blocks_text(m.get("blocks")) or m["text"] for m in slack.messages("C0EDITORS")]
        assert len(editors) == 1 and "*Content freeze* scheduled" in editors[0]
        assert "publish before Friday" in editors[0]
        assert len(channel(slack)) == 1  # the launch channel heard it once

        at(bot, clock, timedelta(hours=1))
        at(bot, clock, timedelta(hours=1, minutes=1))
        assert len(slack.messages("C0EDITORS")) == 2 and len(channel(slack)) == 2
        assert "(in 24h 00m)" in slack.messages("C0EDITORS")[-1]["text"] + blocks_text(
            slack.messages("C0EDITORS")[-1].get("blocks"))
        reply_text(slack, slack.command(OPERATOR, "freeze cancel content"))
        slack.wait_for(lambda: len(slack.messages("C0EDITORS")) == 3, 5, "the cancel in the editors' channel")
        assert "cancel" in (blocks_text(slack.messages("C0EDITORS")[-1].get("blocks"))
                            or slack.messages("C0EDITORS")[-1]["text"]).lower()
        outcomes = {r["notice"]: r["outcome"] for r in store.query("SELECT * FROM freeze_notices")}
        assert outcomes == {"announce": "posted", "announce@C0EDITORS": "late", "remind-24h": "posted",
                            "remind-24h@C0EDITORS": "posted"}, outcomes
    finally:
        bot.stop()
