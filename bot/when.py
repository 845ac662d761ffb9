"""WHEN as operators type it: ``2026-12-01T18:00Z``, ``2026-12-01 18:00 Europe/Berlin``, ``in 2h``.

A time without a zone is refused rather than guessed: on launch night the
people in the channel may sit in three time zones.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.durations import parse_duration

EXAMPLES = "`2026-12-01T18:00Z`, `2026-12-01 18:00 Europe/Berlin` or `in 2h`"
_ZERO = re.compile(r"^(?:0+[dhms])+$", re.IGNORECASE)
MAX_AHEAD = timedelta(days=5 * 365)
_DATE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{1,2}:\d{2}(?::\d{2})?)(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE)


class WhenError(ValueError):
    pass


def parse_when(text: str, now: datetime) -> datetime:
    """An aware UTC datetime; WhenError says what was wrong and what is accepted."""
    return parse_when_noted(text, now)[0]


def parse_when_noted(text: str, now: datetime) -> tuple[datetime, str | None]:
    """``parse_when``, with a note to pass on when the time needed a choice (a wall-clock time seen twice)."""
    try:
        when, note = _parse(text, now)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, WhenError):
            raise
        raise WhenError(f"`{text[:60]}` is out of range; give a time within the next "
                        f"{MAX_AHEAD.days // 365} years") from None
    if when - now > MAX_AHEAD:
        raise WhenError(f"`{text[:60]}` is more than {MAX_AHEAD.days // 365} years ahead")
    return when, note


def _parse(text: str, now: datetime) -> tuple[datetime, str | None]:
    words = text.strip().split()
    if not words:
        raise WhenError(f"a time is missing; use {EXAMPLES}")
    if words[0].lower() == "in":
        if len(words) != 2:
            raise WhenError(f"`{text}`: after `in` give one duration such as `2h`, `30m` or `1h30m`")
        if _ZERO.match(words[1]):
            raise WhenError(f"`{text}` is now, not later; a time given with `in` must be in the future, "
                            "such as `in 1m`")
        try:
            return now + parse_duration(words[1]), None
        except ValueError:
            raise WhenError(f"`{text}`: `{words[1]}` is not a duration such as `2h`, `30m` or `1h30m`") from None
    zone_name = None
    if len(words) == 3:
        stamp, zone_name = f"{words[0]} {words[1]}", words[2]
    elif len(words) == 2 and re.match(r"^\d", words[1]):
        stamp = f"{words[0]} {words[1]}"
    elif len(words) == 2:
        stamp, zone_name = words[0], words[1]
    elif len(words) == 1:
        stamp = words[0]
    else:
        raise WhenError(f"`{text}` is not a time; use {EXAMPLES}")
    match = _DATE_TIME.match(stamp)
    if not match:
        raise WhenError(f"`{text}` is not a time; use {EXAMPLES}")
    date, clock, offset = match.groups()
    try:
        naive = datetime.fromisoformat(f"{date}T{clock if len(clock) > 4 else '0' + clock}")
    except ValueError:
        raise WhenError(f"`{stamp}` is not a real date and time") from None
    if offset and zone_name:
        raise WhenError(f"`{text}` has both an offset and a zone; give one")
    if offset:
        tz = timezone.utc if offset.upper() == "Z" else _offset(offset)
        return naive.replace(tzinfo=tz).astimezone(timezone.utc), None
    if not zone_name:
        raise WhenError(f"`{text}` has no time zone, and the people in the channel may be in several; "
                        f"add one: `{stamp}Z`, `{stamp} Europe/Berlin`, or use `in 2h`")
    if zone_name.upper() in ("UTC", "Z", "GMT"):
        return naive.replace(tzinfo=timezone.utc), None
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WhenError(f"`{zone_name}` is not a time zone; use a name such as `Europe/Berlin` or "
                        "`America/New_York`, or `UTC`") from None
    return _in_zone(naive, zone, stamp, zone_name)


def _in_zone(naive: datetime, zone: ZoneInfo, stamp: str, zone_name: str) -> tuple[datetime, str | None]:
    """A wall-clock time in a zone: refused if the clocks skip it, the first one taken if they show it twice."""
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != naive:
        raise WhenError(f"`{stamp}` does not exist in {zone_name}: the clocks skip it when daylight saving "
                        "time starts; give a time an hour later, or a UTC time")
    if first.utcoffset() != second.utcoffset():
        taken = first.astimezone(timezone.utc)
        return taken, (f"`{stamp}` happens twice in {zone_name} (the clocks go back that night); the first "
                       f"one was taken: {taken.strftime('%H:%M')} UTC (UTC{_format_offset(first)}).")
    return first.astimezone(timezone.utc), None


def _format_offset(when: datetime) -> str:
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _offset(text: str) -> timezone:
    sign = 1 if text[0] == "+" else -1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 14 or minutes > 59:
        raise WhenError(f"`{text}` is not a UTC offset; offsets run from `-12:00` to `+14:00`")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
