"""Freeze announcements, reminders and listings: pure functions returning (fallback text, blocks)."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.durations import compact_duration, format_duration
from bot.freezes.model import Freeze, FreezeListing, ReadBack
from bot.slackapi.blocks import sentence, context, escape, header, section, sections, slack_date
from bot.states import FreezeState

MEANING = {"content": "no content edits", "registration": "no new user registrations"}

__all__ = ["MEANING", "cancelled", "listing", "notice", "skipped", "slack_date", "title"]


def title(kind: str) -> str:
    return f"{kind} freeze"


def _meaning(kind: str) -> str:
    return f" — {MEANING[kind]}" if kind in MEANING else ""


def _span(freeze: Freeze) -> str:
    end = freeze.end_at
    return f"from {slack_date(freeze.start_at)}" + (f" until {slack_date(end)}" if end else " until it is lifted")


def _note(freeze: Freeze) -> str:
    return f"\n> {escape(freeze.note)}" if freeze.note else ""


def notice(freeze: Freeze, kind: str, name: str, now: datetime, *, late: bool, due: datetime, by: str | None,
           reminders: tuple[timedelta, ...]) -> tuple[str, list[dict]]:
    t = title(freeze.kind)
    start = freeze.start_at
    if kind == "announce":
        ahead = [compact_duration(r) for r in reminders if start - r > now]
        text = f"🧊 {sentence(t)} scheduled"
        body = (f"🧊 *{sentence(t)}* scheduled by <@{freeze.created_by}>{_meaning(freeze.kind)}: "
                f"{_span(freeze)}.{_note(freeze)}")
        extra = "Reminders " + ", ".join(ahead) + " before it starts." if ahead else "No reminders: it starts soon."
        blocks = [section(body), context(extra)]
    elif kind == "remind":
        left = format_duration((start - now) if late else (start - due))
        text = f"⏰ The {t} starts in {left}"
        blocks = [section(f"⏰ Reminder: the *{t}* starts {slack_date(start)} (in {left}){_meaning(freeze.kind)}."
                          f"{_note(freeze)}")]
    elif kind == "start":
        text = f"🧊 The {t} is in effect"
        end = freeze.end_at
        until = f" until {slack_date(end)}" if end else " until it is lifted"
        blocks = [header(f"🧊 The {t} is now in effect"),
                  section(f"In effect{until}{_meaning(freeze.kind)}.{_note(freeze)}")]
    else:
        text = f"✅ The {t} is lifted"
        who = f" by <@{by}>" if by else ""
        blocks = [section(f"✅ The *{t}* is lifted{who}.")]
    if late:
        blocks.append(context(f"Posted late: this was due {slack_date(due)}, while the bot was not running."))
        text += " (late)"
    return text, blocks


def read_back(reading: ReadBack, required: bool) -> tuple[str, list[dict]]:
    """Whether the site reads back as frozen, said in the start notice's thread."""
    if reading.frozen:
        return f"✅ {sentence(reading.describe())}", [section(f"✅ {sentence(reading.describe())}.")]
    if not required:
        what = "The plan does not require this freeze for the go-live"
    elif reading.printed is not None:
        what = "The go-live refuses until it holds"
    else:
        what = "The go-live refuses until the check can tell"
    text = f"⚠️ {sentence(reading.describe())}. {what}."
    return text, [section(text)]


def skipped(kind: str, reminders: list[str]) -> tuple[str, list[dict]]:
    names = ", ".join(reminders)
    text = f"Skipped reminders for the {title(kind)}"
    return text, [context(f"ℹ️ The {names} reminder(s) for the {title(kind)} were skipped: they fell due while the "
                          "bot was not running, and the freeze has started since.")]


def cancelled(kind: str, start: datetime, user: str) -> tuple[str, list[dict]]:
    return (f"The {title(kind)} is cancelled",
            [section(f"🚫 The *{title(kind)}* planned for {slack_date(start)} is cancelled by <@{user}>.")])


def listing(items: list[FreezeListing]) -> list[dict]:
    if not items:
        return [section("No freeze is scheduled or in effect.")]
    lines = []
    for item in items:
        f = item.freeze
        icon = "🧊" if f.state == FreezeState.ACTIVE else "🗓️"
        verb = "in effect" if f.state == FreezeState.ACTIVE else "scheduled"
        ahead = ", ".join(n.name.removeprefix("remind-") for n in item.pending if n.kind == "remind")
        lines.append(f"{icon} *{title(f.kind)}* {verb} {_span(f)}" + (f"; reminders ahead: {ahead}" if ahead else "")
                     + (f" — {escape(f.note)}" if f.note else ""))
    return [header("Freezes"), *sections(lines, budget=20)]
