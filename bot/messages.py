"""Message builders: pure functions from plain data to Block Kit, tested by value."""

from __future__ import annotations

import json

from bot.blocks import clamp, code, context, divider, escape, header, section, sections, slack_date
from bot.durations import format_duration
from bot.status import StatusReport
from bot.store import parse_time

STATE_ICONS = {
    "not run": "⚪", "starting": "🟡", "running": "🔵", "succeeded": "✅", "failed": "❌",
    "cancelled": "⏹️", "timed out": "⏱️", "lost": "❓",
}


REQUEST_STATES = {"deciding": "approved; checking again before switching", "flipping": "switching now",
                  "flipped": "switched; verifying"}


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


def _stage_line(s) -> str:
    icon = STATE_ICONS.get(s.state, "•")
    parts = [f"{icon} *{escape(s.name)}* on `{escape(s.host)}` — {s.state}"]
    if s.elapsed is not None:
        parts.append(("elapsed " if s.ended_at is None else "took ") + format_duration(s.elapsed))
    if s.exit_code is not None:
        parts.append(f"exit {s.exit_code}")
    if s.depends_on and s.state == "not run":
        parts.append("after " + ", ".join(s.depends_on))
    return ", ".join(parts)


def status_message(report: StatusReport) -> list[dict]:
    blocks = [header("Cutover status")]
    if report.stages:
        blocks += [section("*Stages*"), *sections([_stage_line(s) for s in report.stages], budget=20)]
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
        if report.holder:
            host, when, via = report.holder
            known = f"On `{host}` since {slack_date(when)}, verified after {via}."
        else:
            known = "No switch has been made by the bot."
        blocks.append(section(f"*Floating IP* `{report.floating_ip}`\n{known} "
                              "`/cutover check` asks the servers and DigitalOcean who holds it right now."))
    if report.requests:
        lines = [f"🚦 {r.kind} request #{r.id} by <@{r.requested_by}>: " + (
                 f"{r.approvals}/{r.required} approvals, open until {slack_date(r.expires_at)}" if r.state == "open"
                 else REQUEST_STATES.get(r.state, r.state)) for r in report.requests]
        blocks.append(section("*Go-live*\n" + "\n".join(lines)))
    else:
        blocks.append(section("*Go-live*\nNo request is open."))
    blocks.append(context(f"As of {slack_date(report.now)}"))
    return clamp(blocks)


def _audit_line(event: dict) -> str:
    when = slack_date(parse_time(event["at"]))  # type: ignore[arg-type]
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


def stage_text(snap) -> str:  # type: ignore[no-untyped-def]
    """The notification text of a stage message (what a phone shows)."""
    return f"{STATE_ICONS.get(snap.state, '•')} {snap.stage} on {snap.host}: {snap.state}"


def stage_message(snap, now_mono: float, now) -> list[dict]:  # type: ignore[no-untyped-def]
    """The one message a stage run keeps up to date in the launch channel."""
    with snap.lock:
        state, lines = snap.state, list(snap.last_lines)
        fraction = snap.progress.fraction
        progress = snap.progress
        eta = snap.eta(now_mono, now) if state in ("starting", "running") else None
        ended = snap.ended_at
        elapsed = (ended or now) - snap.started_at
    icon = STATE_ICONS.get(state, "•")
    head = f"{icon} *{escape(snap.stage)}* on `{escape(snap.host)}` — *{state}*"
    if state in ("starting", "running"):
        head += f" · elapsed {format_duration(elapsed)}"
    elif state == "succeeded":
        head += f" in {format_duration(elapsed)} (exit 0)"
    elif state == "failed":
        head += f" after {format_duration(elapsed)}" + (f" (exit {snap.exit_code})" if snap.exit_code is not None else "")
    else:
        head += f" after {format_duration(elapsed)}"
    blocks = [section(head)]
    if fraction is not None:
        detail = f"{fraction * 100:.0f}%"
        if progress.done is not None and progress.total is not None:
            detail += f" ({progress.done:,.0f} / {progress.total:,.0f})"
        if eta is not None and state in ("starting", "running") and fraction < 1:
            detail += f" · about {format_duration(eta)} left"
        blocks.append(section(f"`{_bar(fraction)}` {detail}"))
    elif eta is not None:
        blocks.append(section(f"About {format_duration(eta)} left, going by the last successful run."))
    if snap.connection and state in ("starting", "running"):
        blocks.append(section(f"⚠️ {escape(snap.connection)}"))
    if snap.reason:
        by = f" by <@{snap.stopped_by}>" if snap.stopped_by else ""
        blocks.append(section(escape(snap.reason) + by))
    if lines:
        blocks.append(section(code("\n".join(lines))))
    blocks.append(context(f"Run {snap.run_id} · started by <@{snap.started_by}> {slack_date(snap.started_at)} · "
                          f"{_size(snap.bytes)} of output"
                          + (" · the full log follows in the thread" if state not in ("starting", "running") else "")))
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
