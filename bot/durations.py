"""Durations as people write them in a plan file: ``90s``, ``15m``, ``4h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(d|h|m|s)")
_WHOLE = re.compile(r"^(?:\d+(?:d|h|m|s))+$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

EXPECTED = "a duration such as 90s, 15m, 4h or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raises ValueError naming what was expected."""
    if not isinstance(text, str):
        raise ValueError(f"expected {EXPECTED}")
    compact = text.strip().lower().replace(" ", "")
    if not compact or not _WHOLE.match(compact):
        raise ValueError(f"expected {EXPECTED}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"expected {EXPECTED}, greater than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta | float, tenths: bool = False) -> str:
    """Render a duration compactly for people: ``2h 05m``, ``4m 10s``, ``12s``; with ``tenths``, under 10 s to a
    tenth (``0.6s``), where whole seconds would show a switch of 0.6 s as ``0s``. Never rounded up."""
    seconds_float = max(0.0, delta.total_seconds() if isinstance(delta, timedelta) else float(delta))
    if tenths and seconds_float < 10:
        return f"{int(seconds_float * 10) / 10:.1f}s"
    total = int(seconds_float)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def compact_duration(delta: timedelta) -> str:
    """The way a plan file writes it: ``24h``, ``1h30m``, ``10m``, ``90s`` → ``1m30s``."""
    total = int(delta.total_seconds())
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"
