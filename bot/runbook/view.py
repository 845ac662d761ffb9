"""What a stage's progress message shows: an immutable view of one run, and its ETA.

The follower builds a new ``StageView`` whenever something changes and
swaps it in whole; message builders read a view without any lock, and can
never see half an update.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.states import RunState


@dataclass(frozen=True)
class Progress:
    """The last progress line seen, and when the rate was first and last measured (monotonic seconds)."""

    done: float | None = None
    total: float | None = None
    percent: float | None = None
    first_at: float | None = None
    first_fraction: float | None = None
    fraction_at: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.percent is not None:
            return max(0.0, min(1.0, self.percent / 100))
        if self.done is not None and self.total:
            return max(0.0, min(1.0, self.done / self.total))
        return None

    def seen(self, groups: dict[str, str | None], now_mono: float) -> "Progress":
        """This progress after a line whose pattern matched with ``groups``; unchanged if they are not numbers."""
        percent, done, total = groups.get("percent"), groups.get("done"), groups.get("total")
        try:
            if percent is not None:
                updated = replace(self, percent=float(percent))
            elif done is not None and total is not None:
                updated = replace(self, done=float(done), total=float(total))
            else:
                return self
        except ValueError:
            return self
        if updated.first_at is None:
            updated = replace(updated, first_at=now_mono, first_fraction=updated.fraction)
        return replace(updated, fraction_at=now_mono)


@dataclass(frozen=True)
class StageView:
    run_id: int
    stage: str
    host: str
    started_by: str
    started_at: datetime
    state: RunState = RunState.STARTING
    last_lines: tuple[str, ...] = ()
    progress: Progress = Progress()
    bytes: int = 0
    connection: str = ""
    stopping: str = ""  # a cancel on its way or under way, while the run goes on
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    stopped_by: str | None = None
    previous_duration: timedelta | None = None
    owner: str | None = None  # a person's step: who does it (then there is no host, no log)
    instructions: str = ""
    completed_by: str | None = None

    @property
    def active(self) -> bool:
        return RunState(self.state).active

    def eta(self, now_mono: float, now: datetime) -> timedelta | None:
        """Time left: from the progress pattern's rate, else from the last successful run's duration."""
        p = self.progress
        frac = p.fraction
        start = p.first_fraction or 0
        if frac is not None and p.first_at is not None and p.fraction_at is not None and frac > start:
            rate = (frac - start) / max(p.fraction_at - p.first_at, 1e-6)
            since_last = max(0.0, now_mono - p.fraction_at)  # keeps counting down between progress lines
            return timedelta(seconds=max(0.0, (1 - frac) / rate - since_last))
        if self.previous_duration is not None:
            left = self.previous_duration - (now - self.started_at)
            return left if left > timedelta(0) else timedelta(0)
        return None
