"""The night against its plan: each step's planned and actual times, how late the night is, when the go-live comes.

A step's expected duration is its ``planned`` time, or else how long its last
successful run took (a rehearsal counts). Planned times run from the plan's
``[schedule] start`` through ``depends_on`` (and, one step at a time, through
the plan's order). The projection does the same from what has happened:
steps that ended keep their actual times, a running step ends at its start
plus its expected duration (or now, if that has passed), the rest follow. The
go-live is projected at the end of the last step: the critical path.
Pure: give it the plan, the latest runs, their past durations and the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.durations import format_duration
from bot.plan import Plan
from bot.runbook.runs import Run
from bot.states import RunState

PLANNED = "planned"
LAST_RUN = "last run"
ON_TIME = timedelta(minutes=1)


def lateness(delta: timedelta) -> str:
    """"on time" within a minute either way, else how late or early."""
    if abs(delta) < ON_TIME:
        return "on time"
    return f"{format_duration(abs(delta))} {'late' if delta > timedelta(0) else 'early'}"


@dataclass(frozen=True)
class StepTimes:
    name: str
    expected: timedelta | None
    expected_from: str  # PLANNED, LAST_RUN, or "" when neither says
    planned_start: datetime | None
    planned_end: datetime | None
    start: datetime | None  # actual, or projected while it has not started
    end: datetime | None  # actual, or projected while it has not ended
    started: bool
    ended: bool

    @property
    def late_by(self) -> timedelta | None:
        """How much later than planned it ends (or will end, as projected); negative when early."""
        if self.planned_end is None or self.end is None:
            return None
        return self.end - self.planned_end


@dataclass(frozen=True)
class Timetable:
    now: datetime
    start: datetime | None
    steps: list[StepTimes]
    unknown: list[str]  # steps with neither a planned time nor a successful run: nothing can be projected past them

    @property
    def planned_end(self) -> datetime | None:
        ends = [s.planned_end for s in self.steps]
        return max(ends) if ends and None not in ends else None  # type: ignore[type-var]

    @property
    def projected_end(self) -> datetime | None:
        ends = [s.end for s in self.steps]
        return max(ends) if ends and None not in ends else None  # type: ignore[type-var]

    @property
    def late_by(self) -> timedelta | None:
        if self.planned_end is None or self.projected_end is None:
            return None
        return self.projected_end - self.planned_end


def build_timetable(plan: Plan, runs: dict[str, Run], durations: dict[str, timedelta], now: datetime) -> Timetable:
    """``runs``: each stage's latest run; ``durations``: how long each stage's last successful run took."""
    waits_for = plan.waits_for()
    planned_end: dict[str, datetime | None] = {}
    projected_end: dict[str, datetime | None] = {}
    steps, unknown = [], []
    start = plan.schedule.start
    for stage in plan.stages:
        expected = stage.planned or durations.get(stage.name)
        source = PLANNED if stage.planned else LAST_RUN if expected is not None else ""
        if expected is None:
            unknown.append(stage.name)
        before = [planned_end[p] for p in waits_for[stage.name]]
        p_start = None if start is None or None in before else max([start, *before])  # type: ignore[type-var]
        p_end = p_start + expected if p_start is not None and expected is not None else None
        planned_end[stage.name] = p_end

        run = runs.get(stage.name)
        state = run.state if run else None
        started = run is not None and state in (RunState.RUNNING, RunState.SUCCEEDED, RunState.STARTING)
        ended = state == RunState.SUCCEEDED
        if ended:
            s, e = run.started_at, run.ended_at  # type: ignore[union-attr]
        elif started:  # running now
            s = run.started_at  # type: ignore[union-attr]
            e = max(now, s + expected) if expected is not None else None
        else:  # not run, or to run again after it failed
            before = [projected_end[p] for p in waits_for[stage.name]]
            s = None if None in before else max([now, *before])  # type: ignore[type-var]
            e = s + expected if s is not None and expected is not None else None
        projected_end[stage.name] = e
        steps.append(StepTimes(stage.name, expected, source, p_start, p_end, s, e, started, ended))
    return Timetable(now=now, start=start, steps=steps, unknown=unknown)
