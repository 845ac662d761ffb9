"""A freeze as data, and the notices it is owed: announce, reminders still ahead, start, end.

Pure: the service decides when to post, the builders what to say; both
read the same ``Freeze`` and the same planned ``Notice`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import parse_optional_time, parse_time
from bot.durations import compact_duration
from bot.states import FreezeState


@dataclass(frozen=True)
class Freeze:
    id: int
    kind: str
    state: FreezeState
    start_at: datetime
    end_at: datetime | None
    note: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict) -> "Freeze":
        return cls(id=row["id"], kind=row["kind"], state=FreezeState(row["state"]),
                   start_at=parse_time(row["start_at"]), end_at=parse_optional_time(row["end_at"]),
                   note=row["note"], created_by=row["created_by"], created_at=parse_time(row["created_at"]))


@dataclass(frozen=True)
class Notice:
    name: str
    due: datetime
    kind: str


def notices_for(freeze: Freeze, reminders: tuple[timedelta, ...]) -> list[Notice]:
    """Every notice of a freeze in the order they fall due; reminders already past at scheduling are left out."""
    out = [Notice("announce", freeze.created_at, "announce")]
    for offset in reminders:
        due = freeze.start_at - offset
        if due > freeze.created_at:
            out.append(Notice(f"remind-{compact_duration(offset)}", due, "remind"))
    out.append(Notice("start", freeze.start_at, "start"))
    if freeze.end_at is not None:
        out.append(Notice("end", freeze.end_at, "end"))
    return sorted(out, key=lambda n: n.due)


@dataclass(frozen=True)
class FreezeListing:
    """A freeze in ``freeze list``: with the notices still ahead of it."""

    freeze: Freeze
    pending: tuple[Notice, ...]


@dataclass(frozen=True)
class ReadBack:
    """What a freeze's check printed: whether the site reads back as frozen, by the plan's own command."""

    kind: str
    command: str
    host: str
    expected: str  # what the check prints while frozen
    at: datetime
    printed: str | None = None  # None: the check could not be run, or failed
    error: str = ""

    @property
    def frozen(self) -> bool:
        return self.printed is not None and self.printed == self.expected

    def describe(self) -> str:
        if self.printed is None:
            return (f"the {self.kind} freeze's check `{self.command}` on `{self.host}` could not tell ({self.error}): "
                    "whether the site is frozen is unknown")
        if self.frozen:
            return f"the {self.kind} freeze holds: `{self.command}` on `{self.host}` printed `{self.printed}`"
        return (f"the {self.kind} freeze does not hold: `{self.command}` on `{self.host}` printed "
                f"`{self.printed[:60]}`, expected `{self.expected}`")
