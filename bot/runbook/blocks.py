"""Block Kit for a stage run's message and its thread: pure functions of a ``StageView``, tested by value."""

from __future__ import annotations

from datetime import datetime

from bot.durations import format_duration
from bot.runbook.view import StageView
from bot.slackapi.blocks import button, code, context, escape, section, sections, slack_date
from bot.states import NOT_RUN, RunState

STATE_ICONS = {
    NOT_RUN: "⚪", RunState.STARTING: "🟡", RunState.RUNNING: "🔵", RunState.SUCCEEDED: "✅", RunState.FAILED: "❌",
    RunState.CANCELLED: "⏹️", RunState.TIMED_OUT: "⏱️", RunState.LOST: "❓",
}



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
