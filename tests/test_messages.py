"""Message builders are pure: tested by value."""

from datetime import datetime, timedelta, timezone

from bot.night import blocks as night_blocks
from bot.runbook import blocks as stage_blocks
from bot.runbook.view import Progress, StageView
from bot.slackapi.blocks import MAX_BLOCKS, SECTION_LIMIT, sections, slack_date
from bot.states import RequestState, RunState

T0 = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)


def snap(**kw) -> StageView:
    base = dict(run_id=7, stage="db-import", host="new", started_by="U0ALICE", started_at=T0, state=RunState.RUNNING)
    base.update(kw)
    return StageView(**base)


def test_slack_date_has_a_fallback():
    assert slack_date(T0) == "<!date^1796148000^{date_short_pretty} {time_secs}|2026-12-01 18:00:00 UTC>"


def test_running_stage_with_progress_and_rate_eta():
    s = snap(progress=Progress(done=250, total=1000, first_at=100.0, first_fraction=0.0, fraction_at=150.0),
             last_lines=("Processed 250/1000", "<script>"))
    blocks = stage_blocks.stage_message(s, 150.0, T0 + timedelta(seconds=50))
    assert blocks[0]["text"]["text"] == "🔵 *db-import* on `new` — *running* · elapsed 50s"
    assert blocks[1]["text"]["text"] == "`█████░░░░░░░░░░░░░░░` 25% (250 / 1,000) · about 2m 30s left"
    assert blocks[2]["text"]["text"] == "```Processed 250/1000\n&lt;script&gt;```"
    assert blocks[3]["elements"][0]["text"].startswith("Run 7 · started by <@U0ALICE> <!date^")


def test_eta_from_the_last_successful_run_when_there_is_no_pattern():
    s = snap(previous_duration=timedelta(minutes=10))
    blocks = stage_blocks.stage_message(s, 0.0, T0 + timedelta(minutes=4))
    assert blocks[1]["text"]["text"] == "About 6m 00s left, going by the last successful run."


def test_finished_states():
    done = snap(state=RunState.SUCCEEDED, ended_at=T0 + timedelta(minutes=4, seconds=10), exit_code=0)
    assert stage_blocks.stage_message(done, 0, T0)[0]["text"]["text"] == \
        "✅ *db-import* on `new` — *succeeded* in 4m 10s (exit 0)"
    failed = snap(state=RunState.FAILED, ended_at=T0 + timedelta(seconds=3), exit_code=3)
    assert stage_blocks.stage_message(failed, 0, T0)[0]["text"]["text"].endswith("*failed* after 3s (exit 3)")
    cancelled = snap(state=RunState.CANCELLED, ended_at=T0 + timedelta(seconds=3), reason="stopped", stopped_by="U0BOB")
    assert stage_blocks.stage_message(cancelled, 0, T0)[1]["text"]["text"] == "stopped by <@U0BOB>"


def test_sections_respect_slack_limits():
    blocks = sections(["x" * 1000] * 400)
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= SECTION_LIMIT for b in blocks)


def test_audit_lines():
    event = {"at": T0.isoformat(), "actor": "U0EVE", "action": "run", "target": "db-import", "outcome": "refused",
             "detail": '{"reason": "not an operator"}'}
    text = night_blocks.audit_message([event])[1]["text"]["text"]
    assert text.endswith("<@U0EVE> *run* `db-import` — refused (not an operator)")


def test_the_rate_eta_counts_down_between_progress_lines():
    s = snap(progress=Progress(done=250, total=1000, first_at=100.0, first_fraction=0.0, fraction_at=150.0))
    blocks = stage_blocks.stage_message(s, 180.0, T0 + timedelta(seconds=80))
    assert blocks[1]["text"]["text"].endswith("about 2m 00s left")


def test_a_go_live_request_shows_the_data_window():
    from pathlib import Path

    from bot.switch import blocks as gm
    from bot.switch.model import Verification
    from bot.plan import load_plan

    failover = load_plan(Path(__file__).resolve().parent.parent / "cutover.example.toml").failover
    view = gm.RequestView(
        id=3, kind="golive", state=RequestState.VERIFIED, requested_by="U0ALICE", created_at=T0,
        expires_at=T0 + timedelta(minutes=15), required=2, approvers=("U0BOB", "U0CAROL"),
        reaction="white_check_mark", approvals=[], preflight=None,
        flipped_at=T0 + timedelta(minutes=12), verification=Verification("new"),
        decided_at=T0 + timedelta(minutes=11), failover=failover, droplets=(1, 2),
        last_sync=("solr-reindex", T0 + timedelta(minutes=4)))
    text = "\n".join(b["text"]["text"] for b in gm.request_message(view) if b["type"] == "section")
    assert "Writes to the old site after the last stage (`solr-reindex`, done <!date^" in text
    assert "• data window: 8m 00s between the end of `solr-reindex` and the flip\n" in text
    moved = gm.request_message(gm.RequestView(**{
        **view.__dict__, "flipped_at": T0 + timedelta(minutes=4, seconds=0.3),
        "verification": Verification("new", first_answer_at=T0 + timedelta(minutes=4, seconds=0.98))}))
    text = "\n".join(b["text"]["text"] for b in moved if b["type"] == "section")
    assert ("• data window: 0.3s between the end of `solr-reindex` and the flip, 0.9s to the first answer from "
            "`new`") in text
    assert "• first answer from `new` <!date^" in text and "(0.6s after the flip)" in text
    bare = gm.request_message(gm.RequestView(**{**view.__dict__, "last_sync": None, "state": RequestState.OPEN}))
    assert "No stage has succeeded yet" in bare[2]["text"]["text"]  # under what happens: what will be lost


def test_status_never_says_no_switch_while_one_is_verifying_or_unverified():
    from bot.night.status import StatusReport, SwitchLine

    def floating_ip(switch):
        report = StatusReport(now=T0, stages=[], freezes=[], requests=[], floating_ip="203.0.113.10", switch=switch)
        return next(b["text"]["text"] for b in night_blocks.status_message(report)
                    if b["type"] == "section" and b["text"]["text"].startswith("*Floating IP*"))

    assert "No switch has been made by the bot." in floating_ip(None)
    verifying = floating_ip(SwitchLine(RequestState.FLIPPED, None, T0, "go-live #1"))
    assert "Switching now (go-live #1); verifying." in verifying and "No switch" not in verifying
    unknown = floating_ip(SwitchLine(RequestState.UNVERIFIED, "new", T0, "go-live #1"))
    assert "Go-live #1 switched at <!date^" in unknown and "is now is *unknown*" in unknown


def test_a_refused_rollback_says_rollback():
    from bot.switch.blocks import preflight_message
    from bot.switch.model import Check, Preflight

    refused = Preflight("rollback", T0, (Check("backup", False, "no health file content was recorded"),))
    assert preflight_message(refused, "t")[-1]["elements"][0]["text"] == "❌ A rollback would stop here."
    ready = Preflight("golive", T0, (Check("ssh old", True, "SSH works"),))
    assert preflight_message(ready, "t")[-1]["elements"][0]["text"] == "✅ A go-live would find everything ready."


def test_the_data_window_stays_within_slacks_limits_for_a_hundred_watches():
    from dataclasses import replace
    from pathlib import Path

    from bot.ledger import blocks as ledger_blocks
    from bot.ledger.model import Count, Tally
    from bot.plan import ACCEPTED, MUST_BE_ZERO, load_plan
    from bot.standins.slack.blockkit import validate
    from bot.switch import blocks as gm
    from bot.switch.model import Check, Preflight

    rows = tuple(f"nid {n} edited by uid {n % 97} at 2026-12-01 18:{n % 60:02d}" for n in range(300))
    counts = tuple(Count(watch=f"watch-{i}", label=f"rows of table {i} " + "x" * 60,
                         losses=MUST_BE_ZERO if i % 2 else ACCEPTED, since=T0, at=T0 + timedelta(minutes=5),
                         until=T0 + timedelta(minutes=6), count=None if i % 7 == 0 else 300,
                         rows=rows, error="timed out after 10s" if i % 7 == 0 else "") for i in range(100))
    tally = Tally(since=T0, source="the start of `db-dump` on `old` (its clock)", counts=counts,
                  until=T0 + timedelta(minutes=6))
    checks = tuple(Check(f"check {i}", i % 3 != 0, "a detail " * 40) for i in range(100))
    failover = load_plan(Path(__file__).resolve().parent.parent / "cutover.example.toml").failover
    view = gm.RequestView(
        id=3, kind="golive", state=RequestState.OPEN, requested_by="U0ALICE", created_at=T0,
        expires_at=T0 + timedelta(minutes=15), required=2, approvers=tuple(f"U0{i:04d}" for i in range(100)),
        reaction="white_check_mark", approvals=[], preflight=Preflight("golive", T0, checks, tally),
        decided_at=None, failover=failover, droplets=(1, 2), forwards=True)
    card = gm.request_message(view)
    for blocks in (card, ledger_blocks.losses_message(tally), ledger_blocks.closed(tally, "at the flip")[1],
                   gm.preflight_message(view.preflight, "The preflight")):
        assert validate(blocks) is not None
    confirm = next(e for b in card if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == gm.APPROVE_ACTION)["confirm"]
    assert confirm["text"]["text"].startswith("Losing ")  # the numbers before they could be cut
    small = replace(tally, counts=counts[1:3])
    small_card = gm.request_message(replace(view, preflight=Preflight("golive", T0, checks[:2], small)))
    confirm = next(e for b in small_card if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == gm.APPROVE_ACTION)["confirm"]
    assert confirm["text"]["text"].startswith("Losing 300 rows of table 2 ")
    assert "rows of table 1 " + "x" * 60 + " since the copy: 300" in confirm["text"]["text"]
