"""The launch-night runbook: people's steps, stages side by side, planned times and lateness."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from bot.clock import parse_time
from bot.local import start_local_bot
from bot.messages import DONE_ACTION
from bot.plan import PlanError, parse_plan
from bot.standins.slack import blocks_text
from bot.timetable import build_timetable
from tests.conftest import OPERATOR, OUTSIDER, PLAN, reply_text
from tests.helpers import FakeClock

STRANGER = "U0FRED"  # neither an operator nor the owner of any step
NIGHT_START = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)


def night_plan(host_entry: dict | None = None, **schedule) -> dict:
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": host_entry or {"address": "127.0.0.1", "user": "deploy"}}
    plan["schedule"] = {"start": NIGHT_START.isoformat(), "max_parallel": 2, **schedule}
    plan["stages"] = [
        {"name": "content-check", "owner": OUTSIDER, "planned": "10m",
         "instructions": "Confirm in the CMS that nobody has published since the content freeze began."},
        {"name": "files-sync", "host": "new", "command": "echo syncing; sleep 1.5; echo synced", "planned": "20m",
         "depends_on": ["content-check"]},
        {"name": "search-reindex", "host": "new", "command": "echo reindexing; sleep 1.5; echo reindexed",
         "planned": "15m", "depends_on": ["content-check"]},
        {"name": "smoke-test", "owner": OUTSIDER, "planned": "5m", "depends_on": ["files-sync", "search-reindex"],
         "instructions": "Log in on the new site, edit a page, search for it."},
    ]
    return plan


def step_message(slack, bot, name):
    """The ts of the open step's message, once it shows its Done button."""
    def posted():
        run = bot.services.store.latest_runs().get(name)
        if not run or not run["message_ts"] or run["state"] != "running":
            return None
        msg = slack.message("C0LAUNCH", run["message_ts"])
        return run["message_ts"] if any(b["type"] == "actions" for b in msg.get("blocks") or []) else None
    return slack.wait_for(posted, 10, f"the message of step {name}")


def test_a_plan_names_each_step_either_a_person_or_a_command():
    plan = night_plan()
    plan["stages"][0]["host"] = "new"
    plan["stages"][1]["owner"] = "alice"
    plan["schedule"]["start"] = "in 2h"
    plan["schedule"]["max_parallel"] = 0
    with pytest.raises(PlanError) as err:
        parse_plan(plan, "night.toml")
    text = "\n".join(err.value.errors)
    assert "stages[0] (`content-check`).host: got 'new'; expected nothing: a step with an owner and instructions" \
           in text
    assert "stages[1] (`files-sync`).owner: got 'alice'; expected the Slack user id" in text
    assert "stages[1] (`files-sync`).instructions: missing" in text
    assert "schedule.start: got 'in 2h'" in text and "relative to now means nothing" in text
    assert "schedule.max_parallel: got 0; expected a whole number from 1 to 16" in text


def test_run_all_waits_for_the_owners_and_runs_the_pair_side_by_side(slack, sshd, tmp_path):
    bot = start_local_bot(slack, parse_plan(night_plan(sshd.host_entry()), "night"), str(tmp_path / "n.db"))
    store = bot.services.store
    try:
        assert "up to 2 side by side" in reply_text(slack, slack.command(OPERATOR, "run all"))
        ts = step_message(slack, bot, "content-check")
        text = blocks_text(slack.message("C0LAUNCH", ts)["blocks"])
        assert f"a step for <@{OUTSIDER}>" in text and "nobody has published" in text and "planned 10m" in text

        slack.click(STRANGER, "C0LAUNCH", ts, DONE_ACTION)  # neither its owner nor an operator
        refusal = slack.wait_for(lambda: [e for e in slack.ephemerals if e["user"] == STRANGER], 10, "a refusal")
        assert f"`content-check` is <@{OUTSIDER}>'s step: only they or an operator" in refusal[0]["text"]
        assert store.latest_runs()["content-check"]["state"] == "running"
        assert "files-sync" not in store.latest_runs()  # nothing that waits for the person has started

        slack.click(OUTSIDER, "C0LAUNCH", ts, DONE_ACTION)
        slack.wait_for(lambda: "done by" in blocks_text(slack.message("C0LAUNCH", ts)["blocks"]), 10, "done")
        assert not any(b["type"] == "actions" for b in slack.message("C0LAUNCH", ts)["blocks"])

        smoke = step_message(slack, bot, "smoke-test")
        runs = store.latest_runs()
        sync, reindex = runs["files-sync"], runs["search-reindex"]
        assert sync["state"] == reindex["state"] == "succeeded"
        assert parse_time(sync["started_at"]) < parse_time(reindex["ended_at"]) and \
            parse_time(reindex["started_at"]) < parse_time(sync["ended_at"]), "the pair did not overlap"
        assert parse_time(runs["content-check"]["ended_at"]) <= min(parse_time(sync["started_at"]),
                                                                   parse_time(reindex["started_at"]))

        assert "only they or an operator" in reply_text(slack, slack.command(STRANGER, "done smoke-test"))
        assert "say why it failed" in reply_text(slack, slack.command(OUTSIDER, "failed smoke-test"))
        assert reply_text(slack, slack.command("U0BOB", "done smoke-test")) == "`smoke-test` is marked done."
        assert "already done (by <@U0BOB>)" in reply_text(slack, slack.command(OUTSIDER, "done smoke-test"))
        summary = slack.wait_for(lambda: [m for m in slack.messages() if m["text"] == "`run all` finished"], 30,
                                 "the summary")
        text = blocks_text(summary[0]["blocks"])
        assert "up to 2 side by side" in text
        for name in ("content-check", "files-sync", "search-reindex", "smoke-test"):
            assert f"`{name}` succeeded" in text
        actions = [(e["actor"], e["action"], e["target"], e["outcome"]) for e in store.recent_audit(100)]
        assert (OUTSIDER, "step-done", "content-check", "ok") in actions
        assert (STRANGER, "done", "content-check", "refused") in actions
        assert ("U0BOB", "step-done", "smoke-test", "ok") in actions
        assert smoke
    finally:
        bot.stop()


def test_a_failed_step_stops_run_all_and_says_why(slack, tmp_path):
    plan = night_plan()
    plan["stages"] = [plan["stages"][0], {**plan["stages"][3], "depends_on": ["content-check"]}]
    bot = start_local_bot(slack, parse_plan(plan, "night"), str(tmp_path / "n.db"))
    try:
        reply_text(slack, slack.command(OPERATOR, "run all"))
        step_message(slack, bot, "content-check")
        assert reply_text(slack, slack.command(OUTSIDER, "failed content-check someone published at 18:02")) == \
            "`content-check` is marked failed: someone published at 18:02"
        summary = slack.wait_for(lambda: [m for m in slack.messages() if m["text"] == "`run all` finished"], 30,
                                 "the summary")
        text = blocks_text(summary[0]["blocks"])
        assert "`content-check` failed" in text and "stopped after `content-check`: `smoke-test` not started" in text
        run = bot.services.store.latest_runs()["content-check"]
        assert run["completed_by"] == OUTSIDER and "someone published at 18:02" in run["detail"]
    finally:
        bot.stop()


def test_status_measures_the_night_against_its_plan_and_the_late_owner_is_reminded(slack, tmp_path):
    clock = FakeClock(NIGHT_START + timedelta(minutes=5))  # the night begins five minutes late
    plan = night_plan()
    bot = start_local_bot(slack, parse_plan(plan, "night"), str(tmp_path / "n.db"), clock=clock)
    try:
        text = reply_text(slack, slack.command(OPERATOR, "status"))
        assert "Go-live projected" in text and "5m 00s late" in text  # 18:05 + 10 + 20 + 5 against 18:35
        reply_text(slack, slack.command(OPERATOR, "run content-check"))
        ts = step_message(slack, bot, "content-check")
        assert bot.services.stages.people.remind_late() == []  # not late yet
        clock.advance(timedelta(minutes=25))  # open 25 minutes against 10 planned
        assert bot.services.stages.people.remind_late() == ["content-check"]
        assert bot.services.stages.people.remind_late() == []  # one reminder, not one a tick
        reminder = slack.messages("C0LAUNCH", thread_ts=ts)
        assert f"<@{OUTSIDER}> `content-check` is late: planned 10m 00s, open 25m 00s" in reminder[-1]["text"]
        text = reply_text(slack, slack.command(OPERATOR, "status"))
        # content-check ends no earlier than now (18:30); then 20m + 5m: 18:55 against 18:35
        assert "content-check* a step for" in text and "20m 00s late" in text
        clock.advance(timedelta(minutes=1))
        reply_text(slack, slack.command(OUTSIDER, "done content-check"))
        text = reply_text(slack, slack.command(OPERATOR, "status"))
        assert "21m 00s late" in text
    finally:
        bot.stop()


def test_the_projection_follows_the_critical_path_and_says_when_it_cannot():
    plan = parse_plan(night_plan(), "night")
    now = NIGHT_START
    table = build_timetable(plan, {}, {}, now)
    planned = {s.name: (s.planned_start, s.planned_end) for s in table.steps}
    assert planned["files-sync"] == (NIGHT_START + timedelta(minutes=10), NIGHT_START + timedelta(minutes=30))
    assert planned["search-reindex"] == (NIGHT_START + timedelta(minutes=10), NIGHT_START + timedelta(minutes=25))
    assert planned["smoke-test"][0] == NIGHT_START + timedelta(minutes=30)  # after the longer of the pair
    assert table.planned_end == NIGHT_START + timedelta(minutes=35) and table.late_by == timedelta(0)

    serial = parse_plan(night_plan(max_parallel=1), "night")  # one at a time: the pair runs one after the other
    assert build_timetable(serial, {}, {}, now).planned_end == NIGHT_START + timedelta(minutes=50)

    raw = night_plan()
    del raw["stages"][2]["planned"]
    unplanned = parse_plan(raw, "night")
    table = build_timetable(unplanned, {}, {}, now)
    assert table.unknown == ["search-reindex"] and table.projected_end is None
    table = build_timetable(unplanned, {}, {"search-reindex": timedelta(minutes=40)}, now)  # a rehearsal counts
    assert table.unknown == [] and table.projected_end == NIGHT_START + timedelta(minutes=55)
