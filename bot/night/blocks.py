"""Block Kit for the night at a glance: ``status``, the Home tab and the audit; pure functions of the night's
model, tested by value."""

from __future__ import annotations

import json
from datetime import datetime

from bot.clock import parse_time
from bot.durations import format_duration
from bot.ledger import blocks as ledger_blocks
from bot.night.model import StageLine, StatusReport
from bot.night.timetable import LAST_RUN, ON_TIME, StepTimes, Timetable, lateness
from bot.runbook.blocks import STATE_ICONS
from bot.slackapi.blocks import (HOME_BLOCKS, clamp, context, divider, escape, header, section, sections, sentence,
                              slack_date)
from bot.states import NOT_RUN, RequestState
from bot.switch.blocks import grid_lines

REQUEST_STATES = {RequestState.DECIDING: "approved; checking again before switching",
                  RequestState.FLIPPING: "switching now", RequestState.FLIPPED: "switched; verifying",
                  RequestState.UNKNOWN: "unknown whether the switch was made; checking the old server"}



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
            held = "".join(f" · {c.label} since the copy: {c.count if c.known else 'unknown'} (counted "
                           f"{slack_date(c.at, '{time_secs}')})" for c in f.held)
            lines.append(f"🧊 *{f.kind}* {verb} {slack_date(f.start_at)}{until}{note}{held}")
        blocks += [section("*Freezes*"), *sections(lines, budget=10)]
    else:
        blocks.append(section("*Freezes*\nNone scheduled."))
    if report.window:
        blocks += [section("*Data window*"), *sections(ledger_blocks.status_lines(list(report.window),
                                                                                   report.window_source), budget=8)]
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
        record = ""
        if report.health_record:
            detail, read_by, at = report.health_record
            record = (f"\nThe old server: {detail.rstrip('.')} (as the preflight of {read_by} read it, "
                      f"{slack_date(at)}).")
        blocks.append(section(f"*Floating IP* `{report.floating_ip}`\n{known} "
                              "`/cutover check` asks the servers and DigitalOcean who holds it right now." + record))
    if report.grid is not None:
        lines = grid_lines(report.grid, report.site_answers, report.flipped_at)
        lines[0] += f", {report.grid_source}"
        blocks += sections(lines, budget=12)
    if report.requests:
        lines = [f"🚦 {r.kind} request #{r.id} by <@{r.requested_by}>: " + (
                 f"{r.approvals}/{r.required} approvals, open until {slack_date(r.expires_at)}" if r.state == RequestState.OPEN
                 else REQUEST_STATES.get(r.state, r.state)) for r in report.requests]
        blocks.append(section("*Go-live*\n" + "\n".join(lines)))
    else:
        blocks.append(section("*Go-live*\nNo request is open."))
    if report.replica:
        blocks.append(section(f"*The bot's database*\n{report.replica}"))
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


