"""Message builders: pure functions from plain data to Block Kit, tested by value."""

from __future__ import annotations

import json
from datetime import datetime

from bot.blocks import (HOME_BLOCKS, button, clamp, code, context, divider, escape, header, section, sections,
                        sentence, slack_date)
from bot.durations import format_duration
from bot.status import NOT_RUN, StageLine, StatusReport
from bot.clock import parse_time
from bot.stage_view import StageView
from bot.timetable import LAST_RUN, ON_TIME, StepTimes, Timetable, lateness
from bot.states import RequestState, RunState

STATE_ICONS = {
    NOT_RUN: "⚪", RunState.STARTING: "🟡", RunState.RUNNING: "🔵", RunState.SUCCEEDED: "✅", RunState.FAILED: "❌",
    RunState.CANCELLED: "⏹️", RunState.TIMED_OUT: "⏱️", RunState.LOST: "❓",
}


REQUEST_STATES = {RequestState.DECIDING: "approved; checking again before switching",
                  RequestState.FLIPPING: "switching now", RequestState.FLIPPED: "switched; verifying",
                  RequestState.UNKNOWN: "unknown whether the switch was made; checking the old server"}


def help_message(commands: list[tuple[str, str]], *, is_operator: bool, is_approver: bool,
                 reaction: str) -> list[dict]:
    lines = [f"• `/cutover {usage}` — {summary}" for usage, summary in commands]
    roles = []
    if is_operator:
        roles.append("an *operator*: you may run stages, freezes and go-live")
    if is_approver:
        roles.append(f"an *approver*: you may confirm a go-live by reacting with :{reaction}:")
    who = ("You are " + " and ".join(roles) + ".") if roles else \
        "You may read the plan's state; operators act, approvers confirm go-live."
    return [header("What you can do with /cutover"), *sections(lines), context(who)]


def _hm(when: datetime) -> str:
    return slack_date(when, "{time}")


def step_times(t: StepTimes | None) -> str:
    """Planned and actual (or projected) start and end of one step, and how late it is."""
    if t is None:
        return ""
    parts = []
    if t.planned_start is not None and t.planned_end is not None:
        parts.append(f"planned {_hm(t.planned_start)}–{_hm(t.planned_end)}")
    elif t.expected is not None:
        parts.append(f"expected {format_duration(t.expected)}" + (" (last run)" if t.expected_from == LAST_RUN else ""))
    if t.started and t.start is not None:
        end = _hm(t.end) if t.ended and t.end else (f"~{_hm(t.end)}" if t.end else "?")
        parts.append(f"actual {_hm(t.start)}–{end}")
    if t.late_by is not None and (t.started or t.late_by >= ON_TIME):
        parts.append(lateness(t.late_by))
    return " · ".join(parts)


def timetable_lines(t: Timetable) -> list[str]:
    """The night against its plan: when it starts, how late it is, when the go-live comes."""
    lines = []
    if t.start is not None:
        lines.append(f"The night {'started' if t.start <= t.now else 'starts'} {slack_date(t.start)}.")
    if t.unknown:
        names = ", ".join(f"`{n}`" for n in t.unknown[:5]) + (f" and {len(t.unknown) - 5} more" if len(t.unknown) > 5
                                                             else "")
        lines.append(f"Go-live projection *unknown*: {names} {'has' if len(t.unknown) == 1 else 'have'} no planned "
                     "time and no successful run to go by.")
    elif t.projected_end is not None:
        line = (f"Every step is done, the last at {slack_date(t.projected_end)}" if all(s.ended for s in t.steps)
                else f"Go-live projected {slack_date(t.projected_end)} (after the last step, along the critical path)")
        if t.late_by is not None and t.planned_end is not None:
            line += f": *{lateness(t.late_by)}* against the plan's {slack_date(t.planned_end)}"
        lines.append(line + ".")
    return lines


def _stage_line(s: StageLine) -> str:
    icon = STATE_ICONS.get(s.state, "•")
    where = f"a step for <@{s.owner}>" if s.owner else f"on `{escape(s.host)}`"
    parts = [f"{icon} *{escape(s.name)}* {where} — {s.state}"]
    if s.elapsed is not None:
        parts.append(("elapsed " if s.ended_at is None else "took ") + format_duration(s.elapsed))
    if s.exit_code is not None:
        parts.append(f"exit {s.exit_code}")
    if s.stopping:
        parts.append(s.stopping)
    if s.depends_on and s.state == NOT_RUN:
        parts.append("after " + ", ".join(s.depends_on))
    times = step_times(s.times)
    return ", ".join(parts) + (f" · {times}" if times else "")


def status_message(report: StatusReport) -> list[dict]:
    return clamp([header("Cutover status"), *status_body(report), context(f"As of {slack_date(report.now)}")])


def home_view(body: list[dict], now: datetime) -> dict:
    """The app's Home tab: the runbook as it stands (``status_body``), within a Home tab's 100 blocks."""
    return {"type": "home", "blocks": clamp([header("Cutover runbook"), *body,
                                             context(f"Updated {slack_date(now)} as things change · "
                                                     "`/cutover help` in the launch channel")], HOME_BLOCKS)}


def status_body(report: StatusReport, stage_budget: int = 20) -> list[dict]:
    """Steps, timetable, freezes, floating IP and go-live: what ``status`` and the Home tab show."""
    blocks = []
    if report.stages:
        blocks += [section("*Stages*"), *sections([_stage_line(s) for s in report.stages], budget=stage_budget)]
        if report.timetable is not None and (lines := timetable_lines(report.timetable)):
            blocks.append(section("*Timetable*\n" + "\n".join(lines)))
    else:
        blocks.append(section("*Stages*\nThe plan has no stages."))
    blocks.append(divider())
    if report.freezes:
        lines = []
        for f in report.freezes:
            until = f" until {slack_date(f.end_at)}" if f.end_at else ""
            verb = "in effect since" if f.state == "active" else "from"
            note = f" — {escape(f.note)}" if f.note else ""
            lines.append(f"🧊 *{f.kind}* {verb} {slack_date(f.start_at)}{until}{note}")
        blocks += [section("*Freezes*"), *sections(lines, budget=10)]
    else:
        blocks.append(section("*Freezes*\nNone scheduled."))
    if report.floating_ip:
        switch = report.switch
        if switch is not None and switch.state == RequestState.VERIFIED:
            since = f" since {slack_date(switch.at)}" if switch.at else ""
            known = f"On `{switch.target}`{since}, verified after {switch.request}."
        elif switch is not None and switch.state == RequestState.UNVERIFIED:
            at = f" at {slack_date(switch.at)}" if switch.at else ""
            known = (f"{sentence(switch.request)} switched{at} but could not be verified: "
                     "where the floating IP is now is *unknown*.")
        elif switch is not None and switch.state == RequestState.UNKNOWN:
            known = (f"Whether {switch.request} switched is *unknown*: the bot cannot read the old server's "
                     "health file yet and keeps trying.")
        elif switch is not None:
            known = f"Switching now ({switch.request}); verifying."
        else:
            known = "No switch has been made by the bot."
        blocks.append(section(f"*Floating IP* `{report.floating_ip}`\n{known} "
                              "`/cutover check` asks the servers and DigitalOcean who holds it right now."))
    if report.requests:
        lines = [f"🚦 {r.kind} request #{r.id} by <@{r.requested_by}>: " + (
                 f"{r.approvals}/{r.required} approvals, open until {slack_date(r.expires_at)}" if r.state == RequestState.OPEN
                 else REQUEST_STATES.get(r.state, r.state)) for r in report.requests]
        blocks.append(section("*Go-live*\n" + "\n".join(lines)))
    else:
        blocks.append(section("*Go-live*\nNo request is open."))
    return blocks


def _audit_line(event: dict) -> str:
    when = slack_date(parse_time(event["at"]))
    actor = f"<@{event['actor']}>" if event["actor"][:1] in ("U", "W") else escape(event["actor"])
    target = f" `{escape(event['target'][:80])}`" if event["target"] else ""
    outcome = "" if event["outcome"] == "ok" else f" — {escape(event['outcome'])}"
    detail = ""
    if event.get("detail"):
        try:
            data = json.loads(event["detail"])
            reason = data.get("reason") if isinstance(data, dict) else None
            detail = f" ({escape(str(reason))})" if reason else ""
        except (json.JSONDecodeError, TypeError):
            detail = f" ({escape(str(event['detail'])[:80])})"
    return f"{when} {actor} *{escape(event['action'])}*{target}{outcome}{detail}"


def audit_message(events: list[dict]) -> list[dict]:
    if not events:
        return [section("The audit log is empty.")]
    return clamp([header(f"Audit: the last {len(events)} events"),
                  *sections([_audit_line(e) for e in events], budget=45),
                  context("Newest last. The audit log is append-only.")])


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(fraction * width))
    return "█" * filled + "░" * (width - filled)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def stage_text(view: StageView) -> str:
    """The notification text of a stage message (what a phone shows)."""
    if view.owner:
        return f"{STATE_ICONS.get(view.state, '•')} {view.stage}, a step for <@{view.owner}>: {_step_state(view)}"
    return f"{STATE_ICONS.get(view.state, '•')} {view.stage} on {view.host}: {view.state}"


DONE_ACTION = "step_done"


def _step_state(view: StageView) -> str:
    """A person's step in words: waiting on its owner while it runs, done when it succeeded."""
    if view.active:
        return "waiting for its owner"
    return "done" if view.state == RunState.SUCCEEDED else str(view.state)


def manual_message(view: StageView, now: datetime) -> list[dict]:
    """A person's step: what to do, for whom, and a Done button while it is open."""
    elapsed = (view.ended_at or now) - view.started_at
    head = f"{STATE_ICONS.get(view.state, '•')} *{escape(view.stage)}* — a step for <@{view.owner}> — " \
           f"*{_step_state(view)}*"
    if view.active:
        head += f" · open {format_duration(elapsed)}"
        if view.previous_duration is not None:
            head += f" (expected {format_duration(view.previous_duration)})"
    else:
        head += f" after {format_duration(elapsed)}"
        if view.completed_by:
            head += f" · by <@{view.completed_by}>"
    blocks = [section(head), section(escape(view.instructions))]
    if view.reason and not view.active:  # why it failed, as its owner or an operator typed it
        blocks.append(section("Why: " + escape(view.reason)))
    if view.active:
        blocks.append(button("Done", DONE_ACTION, str(view.run_id), style="primary"))
        blocks.append(context(f"Only <@{view.owner}> or an operator can complete it: the button, or "
                              f"`/cutover done {view.stage}`. If it cannot be done: "
                              f"`/cutover failed {view.stage} REASON`."))
    blocks.append(context(f"Run {view.run_id} · started by <@{view.started_by}> {slack_date(view.started_at)}"))
    return blocks


def stage_message(view: StageView, now_mono: float, now: datetime) -> list[dict]:
    """The one message a stage run keeps up to date in the launch channel."""
    if view.owner:
        return manual_message(view, now)
    state, active = view.state, view.active
    fraction = view.progress.fraction
    eta = view.eta(now_mono, now) if active else None
    elapsed = (view.ended_at or now) - view.started_at
    head = f"{STATE_ICONS.get(state, '•')} *{escape(view.stage)}* on `{escape(view.host)}` — *{state}*"
    if active:
        head += f" · elapsed {format_duration(elapsed)}"
    elif state == RunState.SUCCEEDED:
        head += f" in {format_duration(elapsed)} (exit 0)"
    elif state == RunState.FAILED:
        head += f" after {format_duration(elapsed)}" + (f" (exit {view.exit_code})" if view.exit_code is not None else "")
    else:
        head += f" after {format_duration(elapsed)}"
    blocks = [section(head)]
    if fraction is not None:
        detail = f"{fraction * 100:.0f}%"
        if view.progress.done is not None and view.progress.total is not None:
            detail += f" ({view.progress.done:,.0f} / {view.progress.total:,.0f})"
        if eta is not None and fraction < 1:
            detail += f" · about {format_duration(eta)} left"
        blocks.append(section(f"`{_bar(fraction)}` {detail}"))
    elif eta is not None:
        blocks.append(section(f"About {format_duration(eta)} left, going by the last successful run."))
    if view.stopping and active:
        blocks.append(section(f"🛑 {view.stopping}"))
    if view.connection and active:
        blocks.append(section(f"⚠️ {escape(view.connection)}"))
    if view.reason:
        by = f" by <@{view.stopped_by}>" if view.stopped_by else ""
        blocks.append(section(escape(view.reason) + by))
    if view.last_lines:
        blocks.append(section(code("\n".join(view.last_lines))))
    blocks.append(context(f"Run {view.run_id} · started by <@{view.started_by}> {slack_date(view.started_at)} · "
                          f"{_size(view.bytes)} of output"
                          + ("" if active else " · the full log follows in the thread")))
    return blocks


def notable_message(stage: str, lines: list[str]) -> list[dict]:
    return [context(f"Notable lines from `{escape(stage)}`"),
            *sections([code("\n".join(chunk)) for chunk in _chunks(lines, 2800)], budget=10)]


def _chunks(lines: list[str], limit: int) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if out[-1] and size + len(line) > limit:
            out.append([])
            size = 0
        out[-1].append(line)
        size += len(line) + 1
    return out
