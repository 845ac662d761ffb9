"""The launch-night runbook: people's steps, stages side by side, planned times and lateness."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from bot.clock import parse_time
from bot.local.bot import start_local_bot
from bot.night.timetable import build_timetable
from bot.plan import PlanError, parse_plan
from bot.runbook.blocks import DONE_ACTION
from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, OUTSIDER, PLAN, reply_text
from tests.helpers import FakeClock, example_home, latest_runs, to_toml

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
        run = latest_runs(bot.services.store).get(name)
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
    bot.services.home.every = 1.0
    store = bot.services.store

    def home_shows(text: str) -> None:
        slack.wait_for(lambda: text in home_text(slack, OPERATOR), 10, f"the Home tab to show {text!r}")

    try:
        slack.open_home(OPERATOR)
        home_shows("*search-reindex* on `new` — not run")
        assert "up to 2 side by side" in reply_text(slack, slack.command(OPERATOR, "run all"))
        home_shows(f"*content-check* a step for <@{OUTSIDER}> — running")
        ts = step_message(slack, bot, "content-check")
        text = blocks_text(slack.message("C0LAUNCH", ts)["blocks"])
        assert f"a step for <@{OUTSIDER}>" in text and "nobody has published" in text and "expected 10m" in text

        slack.click(STRANGER, "C0LAUNCH", ts, DONE_ACTION)  # neither its owner nor an operator
        refusal = slack.wait_for(lambda: [e for e in slack.ephemerals if e["user"] == STRANGER], 10, "a refusal")
        assert f"`content-check` is <@{OUTSIDER}>'s step: only they or an operator" in refusal[0]["text"]
        assert latest_runs(store)["content-check"]["state"] == "running"
        assert "files-sync" not in latest_runs(store)  # nothing that waits for the person has started

        slack.click(OUTSIDER, "C0LAUNCH", ts, DONE_ACTION)
        slack.wait_for(lambda: "*done* after" in blocks_text(slack.message("C0LAUNCH", ts)["blocks"]), 10, "done")
        assert f"· by <@{OUTSIDER}>" in blocks_text(slack.message("C0LAUNCH", ts)["blocks"])
        assert not any(b["type"] == "actions" for b in slack.message("C0LAUNCH", ts)["blocks"])

        smoke = step_message(slack, bot, "smoke-test")
        home_shows("*files-sync* on `new` — succeeded")
        home_shows(f"*smoke-test* a step for <@{OUTSIDER}> — running")
        runs = latest_runs(store)
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
        home_shows(f"*smoke-test* a step for <@{OUTSIDER}> — succeeded")
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
        run = latest_runs(bot.services.store)["content-check"]
        assert run["completed_by"] == OUTSIDER and run["detail"] == "someone published at 18:02"
        text = blocks_text(slack.message("C0LAUNCH", run["message_ts"])["blocks"])
        assert "*failed* after" in text and f"by <@{OUTSIDER}>" in text and "Why: someone published at 18:02" in text
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
        assert f"<@{OUTSIDER}> `content-check` is late: expected 10m 00s, open 25m 00s" in reminder[-1]["text"]
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


def _bands(image, colour, run: int = 12) -> int:
    """How many separate horizontal bands the image has where ``colour`` fills at least ``run`` pixels side by
    side: one per bar row (a letter's edge in that shade is narrower)."""
    width, height = image.size
    pixels = image.load()

    def filled(y: int) -> bool:
        streak = 0
        for x in range(width):
            streak = streak + 1 if pixels[x, y] == colour else 0
            if streak >= run:
                return True
        return False

    rows = [filled(y) for y in range(height)]
    return sum(1 for y in range(height) if rows[y] and (y == 0 or not rows[y - 1]))


def test_the_report_matches_the_audit_log_and_draws_one_bar_per_step(slack, tmp_path):
    from PIL import Image

    from bot.night.report import CHART_NAME, MARKDOWN_NAME, write_report

    clock = FakeClock(NIGHT_START)
    plan = night_plan()
    plan["stages"] = [plan["stages"][0], {**plan["stages"][3], "depends_on": ["content-check"]}]
    bot = start_local_bot(slack, parse_plan(plan, "night.toml"), str(tmp_path / "n.db"), clock=clock)
    store = bot.services.store
    try:
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 1m until in 2h -- editors: hold"))
        reply_text(slack, slack.command(OPERATOR, "run all"))
        step_message(slack, bot, "content-check")
        clock.advance(timedelta(minutes=12))
        bot.services.freezes.tick()
        reply_text(slack, slack.command(OUTSIDER, "done content-check"))
        step_message(slack, bot, "smoke-test")
        clock.advance(timedelta(minutes=4))
        reply_text(slack, slack.command("U0BOB", "failed smoke-test search finds nothing"))
        slack.wait_for(lambda: [m for m in slack.messages() if m["text"] == "`run all` finished"], 10, "the summary")

        assert reply_text(slack, slack.command(OUTSIDER, "report")).startswith("Only operators")
        assert reply_text(slack, slack.command(OPERATOR, "report"), timeout=60) == \
            "The report (Markdown) and its timeline chart (PNG) are in the channel."
        files = {f["name"]: f for f in slack.files.values() if f.get("completed") and f.get("channel") == "C0LAUNCH"}
        assert set(files) == {MARKDOWN_NAME, CHART_NAME}

        text = files[MARKDOWN_NAME]["content"].decode()
        audit = store.query("SELECT * FROM audit ORDER BY id")
        before = [e for e in audit if e["id"] < next(e["id"] for e in audit if e["action"] == "report"
                                                     and e["outcome"] == "posted")]
        logged = text.split("## Audit log", 1)[1].splitlines()
        logged = [line for line in logged if line.startswith("- `")]
        assert len(logged) == len(before) and len(before) > 10
        for line, event in zip(logged, before):  # line by line, every field
            assert line.startswith(f"- `{event['at']}` · {event['actor']} · {event['action']} · ")
            assert f" · {event['outcome']}" in line
        assert "| content-check | for U0EVE | succeeded | 2026-12-01 18:00:00 UTC | 2026-12-01 18:10:00 UTC" in text
        assert "| 12m 00s | 2m 00s late | U0ALICE | U0EVE |" in text
        assert "| smoke-test | for U0EVE | failed |" in text and "search finds nothing" in text
        assert "| content | active |" in text and "editors: hold" in text
        assert "No go-live was requested." in text

        image = Image.open(io.BytesIO(files[CHART_NAME]["content"]))
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 200
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or []) > 10, "the chart is blank"
        assert _bands(image.convert("RGB"), (0xd9, 0xd9, 0xd9)) == 2  # a planned bar per step
        assert _bands(image.convert("RGB"), (0x2a, 0x9d, 0x8f)) == 1  # content-check succeeded
        assert _bands(image.convert("RGB"), (0xe6, 0x39, 0x46)) == 1  # smoke-test failed

        md, png, drawn = write_report(bot.services.plan, bot.services.records, clock.now(), tmp_path / "again")
        assert drawn == ["content-check", "smoke-test"] and png.stat().st_size > 1000
    finally:
        bot.stop()

    plan_file = tmp_path / "night.toml"  # a rehearsal's report, read without Slack
    plan_file.write_text(to_toml(plan))
    cli = [sys.executable, "-m", "bot.cli", "report", "--plan", str(plan_file), "--out", str(tmp_path / "local")]
    done = subprocess.run(cli + ["--db", str(tmp_path / "n.db")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    local = (tmp_path / "local" / MARKDOWN_NAME).read_text()
    assert "| smoke-test | for U0EVE | failed |" in local and local.count("\n- `") == len(before) + 1
    assert Image.open(tmp_path / "local" / CHART_NAME).size == image.size
    missing = subprocess.run(cli + ["--db", str(tmp_path / "nothing.db")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nothing.db: no such database" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()


def home_text(slack, user):
    view = slack.home_views.get(user)
    return blocks_text(view["blocks"]) if view else ""


def test_the_home_tab_shows_the_runbook_and_follows_each_change(slack, tmp_path):
    plan = night_plan()
    plan["stages"] = [plan["stages"][0], {**plan["stages"][3], "depends_on": ["content-check"]}]
    bot = start_local_bot(slack, parse_plan(plan, "night"), str(tmp_path / "n.db"))
    bot.services.home.every = 1.0  # at most one publish a second a person here (5 s in the bot)
    try:
        slack.open_home(OUTSIDER)
        slack.wait_for(lambda: "content-check" in home_text(slack, OUTSIDER), 10, "the Home tab")
        text = home_text(slack, OUTSIDER)
        assert "Cutover runbook" in text and f"*content-check* a step for <@{OUTSIDER}> — not run" in text
        assert "planned" in text and "Go-live projected" in text and "*Freezes*" in text
        published = len(slack.calls_of("views.publish"))

        reply_text(slack, slack.command(OPERATOR, "run all"))
        slack.wait_for(lambda: "content-check* a step for <@U0EVE> — running" in home_text(slack, OUTSIDER), 15,
                       "the Home tab to show the open step")
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 1h"))
        slack.wait_for(lambda: "*content* from" in home_text(slack, OUTSIDER), 15, "the freeze on the Home tab")
        reply_text(slack, slack.command(OUTSIDER, "done content-check"))
        slack.wait_for(lambda: "content-check* a step for <@U0EVE> — succeeded" in home_text(slack, OUTSIDER), 15,
                       "the Home tab to show the step done")
        calls = len(slack.calls_of("views.publish")) - published
        assert 3 <= calls <= 12, calls  # each change, not every tick of the refresh job
    finally:
        bot.stop()


def test_slack_limits_hold_for_a_100_step_plan(slack, tmp_path):
    from bot.night import blocks as night_blocks
    from bot.night.status import build_status
    from bot.standins.slack import blockkit

    plan = night_plan()
    long = "Check " + "every listed page by hand and note anything odd " * 80  # about 4,000 characters
    plan["stages"] = [
        {"name": f"step-{i:03d}-" + "x" * 30, "owner": OUTSIDER, "instructions": long, "planned": "5m",
         **({"depends_on": [f"step-{i - 1:03d}-" + "x" * 30]} if i else {})} for i in range(100)]
    bot = start_local_bot(slack, parse_plan(plan, "hundred"), str(tmp_path / "h.db"))
    try:
        status = slack.command(OPERATOR, "status")
        text = reply_text(slack, status)  # the stand-in refuses a response over Slack's block limits
        assert "step-099-" in text and "Go-live projected" in text
        slack.open_home(OPERATOR)
        slack.wait_for(lambda: "step-099-" in home_text(slack, OPERATOR), 10, "the Home tab")
        assert len(slack.home_views[OPERATOR]["blocks"]) <= 100
        reply_text(slack, slack.command(OPERATOR, "run all"))
        ts = step_message(slack, bot, plan["stages"][0]["name"])
        msg = slack.message("C0LAUNCH", ts)
        blockkit.validate(msg["blocks"])
        assert reply_text(slack, slack.command(OPERATOR, f"cancel {plan['stages'][0]['name']}")).endswith(
            "nothing ran on any host.")
        summary = slack.wait_for(lambda: [m for m in slack.messages() if m["text"] == "`run all` finished"], 10,
                                 "the summary")
        assert "`step-010-" in blocks_text(summary[0]["blocks"]) and "and 89 more not started" in \
            blocks_text(summary[0]["blocks"])
        report = build_status(bot.services.plan, bot.services.records, bot.services.clock)
        blockkit.validate(night_blocks.status_message(report))
        blockkit.validate(night_blocks.home_view(night_blocks.status_body(report, 80), report.now)["blocks"],
                          limit=blockkit.HOME_BLOCKS_LIMIT)
    finally:
        bot.stop()


def test_a_step_whose_message_slack_refused_is_posted_later_and_the_reply_says_so(slack, tmp_path):
    plan = night_plan()
    plan["stages"] = [plan["stages"][0]]
    bot = start_local_bot(slack, parse_plan(plan, "night"), str(tmp_path / "n.db"))
    try:
        slack.fail_next("chat.postMessage", status=500, error="internal_error", times=1)
        reply = reply_text(slack, slack.command(OPERATOR, "run content-check"))
        assert reply.startswith(f"`content-check` is open for <@{OUTSIDER}>, but its message could not be posted")
        assert "`/cutover done content-check` completes it meanwhile" in reply
        assert latest_runs(bot.services.store)["content-check"]["message_ts"] is None
        bot.services.stages.people.remind_late()  # the job's next pass posts it
        step_message(slack, bot, "content-check")
    finally:
        bot.stop()


def test_a_step_survives_the_bot_killed_while_it_is_open(slack, tmp_path):
    import os
    import signal

    from bot.store import Store
    from tests.helpers import start_bot_process

    plan = night_plan()
    plan["stages"] = [plan["stages"][0], {**plan["stages"][3], "depends_on": ["content-check"]}]
    plan_file = tmp_path / "night.toml"
    plan_file.write_text(to_toml(plan))
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(tmp_path / "bot.db"),
           **example_home(tmp_path)}
    first = start_bot_process(slack, env, tmp_path)
    try:
        assert reply_text(slack, slack.command(OPERATOR, "run content-check"), timeout=20).startswith(
            "`content-check` is open")
        store = Store(env["CUTOVER_DB"])
        ts = slack.wait_for(lambda: (latest_runs(store).get("content-check") or {}).get("message_ts"), 10, "posted")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    second = start_bot_process(slack, env, tmp_path)
    try:
        assert latest_runs(store)["content-check"]["state"] == "running"  # still the owner's, not lost
        status = reply_text(slack, slack.command(OPERATOR, "status"), timeout=15)
        assert f"*content-check* a step for <@{OUTSIDER}> — running" in status
        slack.click(OUTSIDER, "C0LAUNCH", ts, DONE_ACTION)
        slack.wait_for(lambda: latest_runs(store)["content-check"]["state"] == "succeeded", 15, "done")
        slack.wait_for(lambda: "*done* after" in blocks_text(slack.message("C0LAUNCH", ts)["blocks"]), 15, "message")
        status = reply_text(slack, slack.command(OPERATOR, "status"), timeout=15)
        assert f"*content-check* a step for <@{OUTSIDER}> — succeeded" in status
        done = [e for e in store.recent_audit(50) if e["action"] == "step-done"]
        assert len(done) == 1 and done[0]["actor"] == OUTSIDER
    finally:
        second.terminate()
        second.wait(10)


def test_what_slack_refuses_is_said_as_refused_and_tried_again(slack, tmp_path):
    """The report's upload, a late step's reminder and the Home tab, each with Slack refusing once."""
    clock = FakeClock(NIGHT_START)
    plan = night_plan()
    plan["stages"] = [plan["stages"][0]]
    bot = start_local_bot(slack, parse_plan(plan, "night"), str(tmp_path / "n.db"), clock=clock)
    services = bot.services
    try:
        slack.fail_next("files.completeUploadExternal", status=200, error="not_in_channel")  # the Markdown
        reply = reply_text(slack, slack.command(OPERATOR, "report"), timeout=60)
        assert reply.startswith("`cutover-timeline.png` is in the channel; Slack did not take `cutover-report.md` "
                                "(not_in_channel). `/cutover report` tries again"), reply
        assert [e for e in services.store.recent_audit(5) if e["action"] == "report"][-1]["outcome"] == "partly"

        reply_text(slack, slack.command(OPERATOR, "run content-check"))
        ts = step_message(slack, bot, "content-check")
        clock.advance(timedelta(minutes=11))
        slack.fail_next("chat.postMessage", status=500, error="internal_error")
        assert services.stages.people.remind_late() == []  # refused: not claimed as said
        assert services.stages.people.remind_late() == ["content-check"]  # said at the next pass, once
        assert len([m for m in slack.messages("C0LAUNCH", thread_ts=ts) if "is late" in m["text"]]) == 1

        slack.fail_next("views.publish", status=200, error="internal_error")
        services.home.every = 0.0
        assert services.home.opened(OUTSIDER) is False and OUTSIDER not in slack.home_views
        slack.wait_for(lambda: services.home.refresh() >= 0 and "content-check" in home_text(slack, OUTSIDER), 10,
                       "the Home tab published at a later refresh")  # this one or the bot's own job
        assert services.home.refresh() == 0  # nothing changed since: nothing published
    finally:
        bot.stop()
