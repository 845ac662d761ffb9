"""The data window as plain data: what each watch counted, when, over which window. Pure: the record stores it,
the preflight refuses on it, the builders show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.plan import ACCEPTED, MUST_BE_ZERO


@dataclass(frozen=True)
class Count:
    """One watch's count of the rows the old server took in a window, or why it could not be counted."""

    watch: str
    label: str  # what a row is: "sessions"
    losses: str  # ACCEPTED or MUST_BE_ZERO
    since: datetime
    at: datetime  # when it was counted
    until: datetime | None = None  # the window's end; None while it is open
    count: int | None = None  # None: unknown
    rows: tuple[str, ...] = ()  # the rows as the watch printed them, at most the plan's show_ids
    more: int = 0  # rows printed beyond those kept
    error: str = ""  # why it is unknown
    freeze: str | None = None

    @property
    def known(self) -> bool:
        return self.count is not None

    @property
    def must_be_zero(self) -> bool:
        return self.losses == MUST_BE_ZERO

    @property
    def refuses(self) -> bool:
        """Whether this count stops a go-live: unknown, or rows where there must be none."""
        return self.count is None or (self.must_be_zero and self.count > 0)

    def phrase(self) -> str:
        """``37 sessions``, ``1 saved form``, ``0 content edits``, ``content edits unknown``."""
        if self.count is None:
            return f"{self.label} unknown"
        label = self.label[:-1] if self.count == 1 and self.label.endswith("s") else self.label
        return f"{self.count:,} {label}"

    def to_json(self) -> dict:
        return {"watch": self.watch, "label": self.label, "losses": self.losses, "since": self.since.isoformat(),
                "at": self.at.isoformat(), "until": self.until.isoformat() if self.until else None,
                "count": self.count, "rows": list(self.rows), "more": self.more, "error": self.error,
                "freeze": self.freeze}

    @classmethod
    def from_json(cls, data: dict) -> "Count":
        return cls(watch=data["watch"], label=data["label"], losses=data["losses"],
                   since=datetime.fromisoformat(data["since"]), at=datetime.fromisoformat(data["at"]),
                   until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
                   count=data.get("count"), rows=tuple(data.get("rows") or ()), more=data.get("more", 0),
                   error=data.get("error", ""), freeze=data.get("freeze"))


@dataclass(frozen=True)
class Tally:
    """Every watch counted over one window: what a go-live would lose, and what refuses it."""

    since: datetime | None  # the moment of the copy; None when there is none to count from
    source: str  # where that moment comes from: "the start of `db-dump` on `old` (its clock)"
    counts: tuple[Count, ...] = field(default_factory=tuple)
    until: datetime | None = None
    problem: str = ""  # why nothing could be counted (no copy yet)

    @property
    def accepted(self) -> list[Count]:
        return [c for c in self.counts if c.losses == ACCEPTED]

    @property
    def must_be_zero(self) -> list[Count]:
        return [c for c in self.counts if c.must_be_zero]

    def losing(self) -> str:
        """``losing 37 sessions, 4 saved forms; content edits since the copy: 0``: the numbers an approver
        accepts."""
        lost = ", ".join(c.phrase() for c in self.accepted) or "nothing the plan accepts losing"
        held = "; ".join(f"{c.label} since the copy: {c.count if c.known else 'unknown'}" for c in self.must_be_zero)
        return f"losing {lost}" + (f"; {held}" if held else "")

    def to_json(self) -> dict:
        return {"since": self.since.isoformat() if self.since else None, "source": self.source,
                "counts": [c.to_json() for c in self.counts], "until": self.until.isoformat() if self.until else None,
                "problem": self.problem}

    @classmethod
    def from_json(cls, data: dict) -> "Tally":
        return cls(since=datetime.fromisoformat(data["since"]) if data.get("since") else None, source=data["source"],
                   counts=tuple(Count.from_json(c) for c in data.get("counts") or []),
                   until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
                   problem=data.get("problem", ""))
