"""Block Kit for go-live and rollback requests and for the preflight: pure functions of plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.durations import format_duration
from bot.ledger import blocks as ledger_blocks
from bot.plan import FailoverPlan
from bot.slackapi.blocks import (actions, button_element, clamp, confirm_dialog, context, divider, escape, header,
                                 section, sections, sentence, slack_date)
from bot.states import RequestState
from bot.plan.model import PATH_WORDS
from bot.switch.model import STATE_WORDS, WHAT, Cell, Forwarding, Grid, Preflight, Verification

__all__ = ["APPROVE_ACTION", "STATE_WORDS", "WHAT", "WITHDRAW_ACTION", "RequestView", "format_ttl", "people_list",
           "preflight_lines", "request_message", "slack_date", "text"]


@dataclass(frozen=True)
class RequestView:
    id: int
    kind: str
    state: RequestState
    requested_by: str
    created_at: datetime
    expires_at: datetime
    required: int
    approvers: tuple[str, ...]
    reaction: str
    approvals: list[tuple[str, datetime]]
    preflight: Preflight | None
    decided_at: datetime | None
    failover: FailoverPlan
    droplets: tuple[int, int]
    last_sync: tuple[str, datetime] | None = None
    flipped_at: datetime | None = None
    verification: Verification | None = None
    abort_reason: str | None = None
    unknown_reason: str | None = None
    forwards: bool = False  # the plan makes the old server forward to the new one at the flip
    forwarded_at: datetime | None = None


def people_list(users: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) or "nobody"


def format_ttl(ttl: timedelta) -> str:
    return format_duration(ttl)


def preflight_lines(preflight: Preflight) -> list[str]:
    return [f"{'✅' if c.ok else ('❌' if c.blocking else '⚠️')} {c.detail}" for c in preflight.checks]


def text(view: RequestView) -> str:
    return f"{sentence(WHAT[view.kind])} request #{view.id}: {view.state}"


def _plan_lines(view: RequestView) -> list[str]:
    f = view.failover
    old_droplet, new_droplet = view.droplets
    takes = f"takes VIP `{f.vip}`" if f.vip else "becomes MASTER"
    if view.kind == "golive":
        return [f"1. write `{escape(f.unhealthy)}` to the health file on `{f.old}`",
                f"2. keepalived on `{f.new}` {takes} when `{f.old}`'s check fails",
                f"3. `{f.new}` asks DigitalOcean to assign `{f.floating_ip}` to droplet {new_droplet}",
                *([f"↪️ at the flip `{f.old}` forwards every request to `{f.new}`: it takes no more writes"]
                  if view.forwards else []),
                "4. the bot proves it: the site answers from the new server, keepalived moved, DigitalOcean agrees"]
    return [f"1. restore the health file on `{f.old}` to what it held before the go-live",
            *([f"↩️ `{f.old}` stops forwarding to `{f.new}` and serves its own requests again"] if view.forwards
              else []),
            f"2. keepalived on `{f.old}` {takes} again",
            f"3. `{f.old}` asks DigitalOcean to assign `{f.floating_ip}` to droplet {old_droplet}",
            "4. the bot proves it the same way"]


def _data_window(view: RequestView) -> str:
    """What is lost at the switch: whatever the old site took in since the new one last caught up."""
    if view.last_sync is None:
        return ("⚠️ No stage has succeeded yet: the new server has none of the old database's recent writes.")
    stage, at = view.last_sync
    return (f"⚠️ Writes to the old site after the last stage (`{stage}`, done {slack_date(at)}) are not on the new "
            "server and are lost when traffic moves to it: sessions, half-filled forms. Keep this window short.")


def _timeline(view: RequestView) -> list[str]:
    v = view.verification
    lines = []
    if view.decided_at:
        lines.append(f"• approvals complete {slack_date(view.decided_at)}")
    flipped = view.flipped_at
    if flipped:
        lines.append(f"• flipped {slack_date(flipped)}")
        if view.last_sync and view.kind == "golive":
            # The old server takes writes until traffic moves: the first answer from new, where it is known.
            stage, at = view.last_sync
            moved = (f", {format_duration(v.first_answer_at - at, tenths=True)} to the first answer from "
                     f"`{v.target}`" if v is not None and v.first_answer_at else "")
            lines.append(f"• data window: {format_duration(flipped - at, tenths=True)} between the end of `{stage}` "
                         f"and the flip{moved}")
    if v is None:
        return lines
    if v.first_answer_at:
        after = f" ({format_duration(v.first_answer_at - flipped, tenths=True)} after the flip)" if flipped else ""
        lines.append(f"• first answer from `{v.target}` {slack_date(v.first_answer_at)}{after}")
    if v.cloud_confirmed_at:
        lines.append(f"• DigitalOcean confirmed {slack_date(v.cloud_confirmed_at)}")
    lines.append(f"• probes without an answer: {v.failed_probes}; answers still from the other "
                 f"server: {v.other_answers}; DigitalOcean errors retried: {max(v.cloud_error_count, len(v.cloud_errors))}")
    return lines


def _state_lines(view: RequestView) -> list[str]:
    count = len(view.approvals)
    approved = ", ".join(f"<@{u}> {slack_date(at, '{time_secs}')}" for u, at in view.approvals)
    so_far = f"Approved by {approved}." if approved else "No approvals yet."
    others = [a for a in view.approvers if a != view.requested_by]
    s = view.state
    if s == RequestState.OPEN:
        return [f"*Needs {view.required} approval(s)* from {people_list(others)}: react with :{view.reaction}: on "
                "this message, or press Approve. The requester's approval does not count.",
                f"{so_far} ({count}/{view.required}) Open until {slack_date(view.expires_at)}."]
    if s == RequestState.EXPIRED:
        return [f"⌛ *Expired* {slack_date(view.expires_at)} with {count}/{view.required} approvals. "
                "Nothing was changed."]
    if s == RequestState.DECIDING:
        return [f"{so_far} Checking again before switching…"]
    if s == RequestState.ABORTED:
        return [f"🛑 *Not switched*: {view.abort_reason or 'the preflight failed'}. Nothing was changed."]
    if s == RequestState.UNKNOWN:
        return [f"{so_far}", f"❓ *Unknown whether the {'switch' if view.kind == 'golive' else 'rollback'} was made*: "
                f"{view.unknown_reason or 'the write could not be confirmed'}. The bot keeps reading the old "
                "server's health file and says which in the thread.", *_timeline(view)]
    if s in (RequestState.FLIPPING, RequestState.FLIPPED):
        return [f"{so_far}", "🔀 *Switching* — verifying, details in the thread…", *_timeline(view)]
    if s == RequestState.VERIFIED and view.verification:
        return [f"✅ *Switched to `{view.verification.target}` and verified.*", *_timeline(view)]
    if s == RequestState.UNVERIFIED and view.verification:
        failed = [w.detail for w in view.verification.failed]
        hint = " `/cutover rollback` switches back." if view.kind == "golive" else ""
        return [f"❌ *Verification failed*: {'; '.join(failed).rstrip('.')}.{hint}", *_timeline(view)]
    if s == RequestState.INTERRUPTED:
        return ["⏸️ *Interrupted* by a bot restart before the switch; nothing was changed. Ask again."]
    return [s]


APPROVE_ACTION = "approve_request"
WITHDRAW_ACTION = "withdraw_approval"


def losses_line(view: RequestView) -> str:
    """What the switch loses, as the approvers decide on it: the numbers, or the window as a time."""
    tally = view.preflight.tally if view.preflight else None
    if tally is not None and tally.since is not None:
        after = ("At the flip the old server forwards to the new one, so nothing more is written there."
                 if view.forwards else "Anything written to the old server until traffic moves is lost too.")
        return (f"*What will be lost* (written to the old server since the copy {slack_date(tally.since)}): "
                f"{tally.losing()}. {after}")
    if tally is not None:
        return f"*What will be lost:* unknown: {escape(tally.problem)}."
    return _data_window(view)


def _findings(view: RequestView) -> list[dict]:
    """What the preflight found wrong, in full; what passed, folded into one line (each check is in the thread)."""
    preflight = view.preflight
    if preflight is None:
        return []
    wrong = [f"{'❌' if c.blocking else '⚠️'} {c.detail}" for c in preflight.checks if not c.ok]
    verdict = (f"✅ {len(preflight.passed)} of {len(preflight.checks)} checks passed at {slack_date(preflight.at)}; "
               "every check is in the thread.")
    return [*sections(wrong, budget=8), context(verdict)]


def approve_buttons(view: RequestView) -> dict:
    """Approve (with Slack's confirm dialog repeating what is lost) and Withdraw, beside the reaction."""
    tally = view.preflight.tally if view.preflight else None
    numbers = f"{ledger_blocks.approval_numbers(tally)}. " if tally is not None and tally.since is not None else ""
    target = "new" if view.kind == "golive" else "old"
    # The numbers first: the dialog holds 300 characters, and they are what the approver accepts.
    ask = confirm_dialog(f"Approve {WHAT[view.kind]} #{view.id}?",
                         f"{numbers}The site moves to the {target} server. Your approval counts once; you can "
                         "withdraw it until the last one is in.", "Approve", style="danger")
    return actions(button_element("Approve", APPROVE_ACTION, str(view.id), style="danger", confirm=ask),
                   button_element("Withdraw my approval", WITHDRAW_ACTION, str(view.id)))


def request_message(view: RequestView) -> list[dict]:
    icon = "🚦" if view.kind == "golive" else "↩️"
    title = f"{icon} {sentence(WHAT[view.kind])} request #{view.id}"
    blocks = [header(title),
              section(f"<@{view.requested_by}> asks to switch the site to the "
                      f"{'new' if view.kind == 'golive' else 'old'} server. *What happens:*\n"
                      + "\n".join(_plan_lines(view)))]
    if view.kind == "golive":
        blocks.append(section(losses_line(view)))
    blocks += _findings(view)
    blocks += [divider(), *sections(_state_lines(view), budget=6)]
    if view.state == RequestState.OPEN and view.required:
        blocks.append(approve_buttons(view))
    return clamp(blocks)


def forwarding(f: Forwarding) -> str:
    """What the forwarding at the flip (or its undoing at a rollback) did, for the request's thread."""
    if f.done and f.on:
        return (f"↪️ `{f.host}` forwards every request to the new server since {slack_date(f.at)} (its clock; "
                f"`{escape(f.command)}`): from then on the old application takes no writes, whatever keepalived and "
                "DigitalOcean are still doing.")
    if f.done:
        return f"↩️ `{f.host}` serves its own requests again since {slack_date(f.at)} (`{escape(f.command)}`)."
    if f.on:
        return (f"⚠️ The forwarding on `{f.host}` failed ({escape(f.error)}): the old application keeps taking "
                "writes until traffic moves.")
    return (f"⚠️ Undoing the forwarding on `{f.host}` failed ({escape(f.error)}): it still forwards to the new server; "
            f"run `{escape(f.command)}` there.")


def preflight_message(preflight: Preflight, title: str) -> list[dict]:
    what = WHAT.get(preflight.purpose, "go-live")
    verdict = f"✅ A {what} would find everything ready." if preflight.ok else f"❌ A {what} would stop here."
    grid = sections(grid_lines(preflight.grid), budget=12) if preflight.grid else []
    return clamp([header(title), *sections(preflight_lines(preflight), budget=10), *grid, context(verdict)])


def _cell(cell: Cell | None, path: str, answers: dict[str, datetime] | None = None,
          since: datetime | None = None) -> str:
    word = PATH_WORDS[path]
    if cell is None:
        return f"{word} –"
    if not cell.ok:
        return f"{word} ❌ {escape(cell.reason[:160])}"
    who = f" `{cell.server}`" if path not in ("old", "new") or cell.server != path else ""
    first = answers.get(cell.site) if answers and path not in ("old", "new") else None
    after = f" (+{(first - since).total_seconds():.1f}s)" if first and since else ""
    return f"{word} ✅{who}{after}"


def grid_lines(grid: Grid, answers: dict[str, datetime] | None = None, since: datetime | None = None) -> list[str]:
    """The sites × paths grid, a line per site: each path ✅ (and whose answer) or ❌ and why; on the moving paths
    after a switch, when the site first answered from the target, counted from ``since`` (the flip)."""
    if grid.problem:
        return [f"❓ *Sites:* not probed: {escape(grid.problem)}"]
    bad = len({c.site for c in grid.cells if not c.ok})
    head = (f"*Sites* ({len(grid.sites)}): " + (f"{bad} with a problem" if bad else "every cell answers as it should")
            + (f", probed {slack_date(grid.at, '{time_secs}')}" if grid.at else ""))
    return [head] + [f"`{site}` " + " · ".join(_cell(grid.cell(site, p), p, answers, since) for p in grid.paths)
                     for site in grid.sites]


def grid_message(grid: Grid, title: str, answers: dict[str, datetime] | None = None,
                 since: datetime | None = None) -> list[dict]:
    return clamp([section(f"*{escape(title)}*"), *sections(grid_lines(grid, answers, since), budget=40)])
