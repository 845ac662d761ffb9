"""What ``status`` and the Home tab show, as plain data: built by ``bot.night.status``, read by the builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.ledger.model import Count
from bot.night.timetable import StepTimes, Timetable
from bot.states import RequestState
from bot.switch.model import Grid


@dataclass(frozen=True)
class StageLine:
    name: str
    host: str
    state: str
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    elapsed: timedelta | None
    depends_on: tuple[str, ...]
    stopping: str = ""  # "cancel pending" (the host has not had it yet) or "stopping", while the run goes on
    owner: str | None = None  # a person's step
    times: StepTimes | None = None


@dataclass(frozen=True)
class FreezeLine:
    kind: str
    state: str
    start_at: datetime
    end_at: datetime | None
    note: str | None
    held: tuple[Count, ...] = ()  # the must-be-zero watches that prove it held


@dataclass(frozen=True)
class RequestLine:
    id: int
    kind: str
    state: str
    requested_by: str
    expires_at: datetime
    approvals: int
    required: int


@dataclass(frozen=True)
class SwitchLine:
    state: RequestState
    target: str | None
    at: datetime | None
    request: str


@dataclass(frozen=True)
class StatusReport:
    now: datetime
    stages: list[StageLine]
    freezes: list[FreezeLine]
    requests: list[RequestLine]
    floating_ip: str | None
    switch: SwitchLine | None = None
    timetable: Timetable | None = None
    window: tuple[Count, ...] = ()  # each watch's latest count of the data window
    window_source: str = ""  # where the moment of the copy comes from
    grid: Grid | None = None  # every site on every path, as the latest request found it
    grid_source: str = ""  # which request, and when in its life: "after go-live #1"
    site_answers: dict[str, datetime] = field(default_factory=dict)
    flipped_at: datetime | None = None
    replica: str | None = None  # where the database's replica stands, as the bot last read it
    # the old server's health file and its record of a switch, as the latest preflight read it: what, by which
    # request's preflight, when
    health_record: tuple[str, str, datetime] | None = None
