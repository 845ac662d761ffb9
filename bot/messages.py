"""Message builders: pure functions from plain data to Block Kit, tested by value."""

from __future__ import annotations

import json

from bot.blocks import clamp, context, divider, escape, header, section, sections, slack_date
from bot.durations import format_duration
from bot.status import StatusReport
from bot.store import parse_time

STATE_ICONS = {
    "not run": "⚪", "starting": "🟡", "running": "🔵", "succeeded": "✅", "failed": "❌",
    "cancelled": "⏹️", "timed out": "⏱️", "lost": "❓",
}


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
        blocks.append(section(f"*Floating IP* `{report.floating_ip}`\nNot checked here: "
                              "`/cutover check` asks the servers and DigitalOcean who holds it now."))
    if report.requests:
        lines = [f"🚦 {r.kind} request #{r.id} by <@{r.requested_by}>: {r.approvals}/{r.required} approvals, "
                 f"open until {slack_date(r.expires_at)}" for r in report.requests]
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
