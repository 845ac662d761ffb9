"""The ``[schedule]`` table: when the night starts, and how many steps run side by side."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.plan.checker import Checker
from bot.plan.model import Schedule
from bot.when import WhenError, parse_when


def schedule(c: Checker, data: dict) -> Schedule:
    t = c.table(data, "schedule", "schedule", required=False)
    if t is None:
        return Schedule()
    c.only(t, "schedule.", {"start", "max_parallel"})
    max_parallel = c.integer(t, "schedule.max_parallel", "max_parallel", required=False, default=1, low=1, high=16)
    start = t.get("start")
    expected = ("the night's start as a date, time and zone, such as 2026-12-01T18:00Z or "
                "\"2026-12-01 18:00 Europe/Berlin\"")
    if start is None:
        return Schedule(max_parallel=max_parallel or 1)
    if isinstance(start, datetime):  # a TOML date-time: it must say its zone
        if start.tzinfo is None:
            c.error("schedule.start", start.isoformat(), expected + " (this one has no zone)")
            start = None
    elif isinstance(start, str) and not start.strip().lower().startswith("in "):
        try:
            start = parse_when(start, datetime.now(timezone.utc))
        except WhenError as exc:
            c.error("schedule.start", start, f"{expected} ({exc})")
            start = None
    else:
        c.error("schedule.start", start, expected + " (a time relative to now means nothing in a plan file)")
        start = None
    return Schedule(start=start.astimezone(timezone.utc) if start else None, max_parallel=max_parallel or 1)
