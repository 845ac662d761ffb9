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
_DATE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{1,2}:\d{2}(?::\d{2})?)(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE)


class WhenError(ValueError):
    pass


def parse_when(text: str, now: datetime) -> datetime:
    """An aware UTC datetime; WhenError says what was wrong and what is accepted."""
    words = text.strip().split()
    if not words:
        raise WhenError(f"a time is missing; use {EXAMPLES}")
    if words[0].lower() == "in":
        if len(words) != 2:
            raise WhenError(f"`{text}`: after `in` give one duration such as `2h`, `30m` or `1h30m`")
        try:
            return now + parse_duration(words[1])
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
    elif zone_name:
        if zone_name.upper() in ("UTC", "Z", "GMT"):
            tz = timezone.utc
        else:
            try:
                tz = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise WhenError(f"`{zone_name}` is not a time zone; use a name such as `Europe/Berlin` or "
                                "`America/New_York`, or `UTC`") from None
    else:
        raise WhenError(f"`{text}` has no time zone, and the people in the channel may be in several; "
                        f"add one: `{stamp}Z`, `{stamp} Europe/Berlin`, or use `in 2h`")
    return naive.replace(tzinfo=tz).astimezone(timezone.utc)


def _offset(text: str) -> timezone:
    sign = 1 if text[0] == "+" else -1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
