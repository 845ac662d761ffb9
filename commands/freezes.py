"""``freeze KIND at WHEN [until WHEN] [-- NOTE]``, ``freeze list``, ``freeze cancel KIND``, ``unfreeze KIND``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bot.freezes import blocks as fm
from bot.slackapi.blocks import sentence
from bot.when import WhenError, parse_when_noted
from commands.router import Caller, Command, Reply, UsageError

NOTE_LIMIT = 500  # a freeze note is shown in every notice; longer is cut, with a visible mark

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class FreezeArgs:
    action: str
    kind: str = ""
    start: datetime | None = None
    end: datetime | None = None
    note: str | None = None
    said: tuple[str, ...] = ()  # what parsing the times had to decide, told back to the operator


def _kind(word: str, services: "Services") -> str:
    kinds = services.plan.freezes.kinds
    if word not in kinds:
        raise UsageError(f"`{word[:30]}` is not a freeze kind; use " + ", ".join(f"`{k}`" for k in kinds) + ".")
    return word


def parse_freeze(args: list[str], services: "Services") -> FreezeArgs:
    if not args:
        raise UsageError("Say what to freeze and when, or `list`.")
    if args[0] == "list" and len(args) == 1:
        return FreezeArgs("list")
    if args[0] == "cancel":
        if len(args) != 2:
            raise UsageError("`freeze cancel` takes one freeze kind.")
        return FreezeArgs("cancel", _kind(args[1], services))
    kind = _kind(args[0], services)
    words, note = args[1:], None
    if "--" in words:
        cut = words.index("--")
        words, note = words[:cut], " ".join(words[cut + 1:]).strip() or None
    cut_note = note is not None and len(note) > NOTE_LIMIT
    if note is not None and cut_note:
        note = note[:NOTE_LIMIT - 1].rstrip() + "…"
    if not words or words[0] != "at":
        raise UsageError(f"After the kind comes `at WHEN`, e.g. `freeze {kind} at 2026-12-01 18:00 Europe/Berlin`.")
    words = words[1:]
    until = words.index("until") if "until" in words else len(words)
    now = services.clock.now()
    try:
        start, start_note = parse_when_noted(" ".join(words[:until]), now)
        end, end_note = parse_when_noted(" ".join(words[until + 1:]), now) if until < len(words) else (None, None)
    except WhenError as exc:
        raise UsageError(sentence(str(exc)) + ".") from None
    if start <= now:
        raise UsageError(f"{fm.slack_date(start)} is in the past; a freeze starts in the future (or `in 1m`).")
    if end is not None and end <= start:
        raise UsageError(f"`until` ({fm.slack_date(end)}) must be after `at` ({fm.slack_date(start)}).")
    cut_said = f"(The note was cut to {NOTE_LIMIT} characters, marked with …; the channel shows that much.)"
    return FreezeArgs("schedule", kind, start, end, note,
                      tuple(n for n in (start_note, end_note, cut_said if cut_note else None) if n))


def run_freeze(services: "Services", caller: Caller, args: FreezeArgs) -> Reply:
    if args.action == "list":
        return Reply(text="Freezes", blocks=fm.listing(services.freezes.listing()))
    if args.action == "cancel":
        return Reply(text=services.freezes.cancel(args.kind, caller.user))
    assert args.start is not None
    freeze = services.freezes.schedule(args.kind, args.start, args.end, args.note, caller.user)
    said = "".join(f" {note}" for note in args.said)
    announced = services.freezes.notice_outcome(freeze.id, "announce")
    if announced in ("posted", "late"):
        return Reply(text=f"Scheduled the {fm.title(freeze.kind)}; it is announced in the channel.{said}")
    return Reply(text=f"Scheduled the {fm.title(freeze.kind)}, but its announcement could not be posted in the "
                      f"channel (Slack said `{services.notifier.last_error()}`); the bot tries again every minute "
                      f"and the reminders and the start still come.{said}")


def parse_unfreeze(args: list[str], services: "Services") -> str:
    if len(args) != 1:
        raise UsageError("Name the freeze kind to lift, e.g. `unfreeze content`.")
    return _kind(args[0], services)


def run_unfreeze(services: "Services", caller: Caller, kind: str) -> Reply:
    return Reply(text=services.freezes.lift(kind, caller.user))


FREEZE = Command("freeze", "freeze KIND at WHEN [until WHEN] [-- NOTE] | freeze list | freeze cancel KIND",
                 "schedule, list or cancel content and registration freezes, with reminders",
                 acts=lambda parsed: parsed is None or parsed.action != "list", run=run_freeze, parse=parse_freeze,
                 read_usage="freeze list")
UNFREEZE = Command("unfreeze", "unfreeze KIND", "lift a freeze now", acts=True, run=run_unfreeze,
                   parse=parse_unfreeze)
