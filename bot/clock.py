"""Time, injected so that approvals, freezes and reminders can be tested by moving it; and stored times read back."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class JumpClock:
    """Real time plus an offset the demo can jump forward, to reach a freeze's reminders in seconds."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self._offset

    def jump(self, delta: timedelta) -> datetime:
        with self._lock:
            self._offset += delta
        return self.now()


def parse_time(value: str) -> datetime:
    """A time as the store keeps it (ISO 8601 with its offset)."""
    return datetime.fromisoformat(value)


def parse_optional_time(value: str | None) -> datetime | None:
    """``parse_time`` for columns that may be empty (an end not reached yet)."""
    return datetime.fromisoformat(value) if value else None
