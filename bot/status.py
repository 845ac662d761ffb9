"""The plan at a glance, as plain data; ``bot.messages`` turns it into blocks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock, parse_optional_time, parse_time
from bot.plan import Plan
from bot.timetable import StepTimes, Timetable, build_timetable, last_durations
from bot.states import RequestState, RunState, StopState, sql_in
from bot.store import Store

NOT_RUN = "not run"
SWITCHED = (RequestState.FLIPPING, RequestState.FLIPPED, RequestState.VERIFIED, RequestState.UNVERIFIED,
            RequestState.UNKNOWN)


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


def build_status(plan: Plan, store: Store, clock: Clock) -> StatusReport:
    now = clock.now()
    runs = store.latest_runs()
    timetable = build_timetable(plan, runs, last_durations(store), now)
    times = {t.name: t for t in timetable.steps}
    stages = []
    for stage in plan.stages:
        run = runs.get(stage.name)
        started = parse_time(run["started_at"]) if run else None
        ended = parse_optional_time(run["ended_at"]) if run else None
        elapsed = (ended or now) - started if started else None
        stages.append(StageLine(name=stage.name, host=stage.host, state=run["state"] if run else NOT_RUN,
                                started_at=started, ended_at=ended, exit_code=run["exit_code"] if run else None,
                                elapsed=elapsed, depends_on=stage.depends_on, stopping=_stopping(run),
                                owner=stage.owner, times=times[stage.name]))
    freezes = [FreezeLine(kind=f["kind"], state=f["state"], start_at=parse_time(f["start_at"]),
                          end_at=parse_optional_time(f["end_at"]), note=f["note"])
               for f in store.current_freezes()]
    requests = []
    for r in store.open_requests():
        count = store.query("SELECT COUNT(*) AS n FROM approvals WHERE request_id = ?", [r["id"]])[0]["n"]
        requests.append(RequestLine(id=r["id"], kind=r["kind"], state=r["state"], requested_by=r["requested_by"],
                                    expires_at=parse_time(r["expires_at"]),
                                    approvals=count, required=r["required"]))
    failover = plan.failover
    return StatusReport(now=now, stages=stages, freezes=freezes, requests=requests,
                        floating_ip=failover.floating_ip if failover else None, switch=_last_switch(plan, store),
                        timetable=timetable)


def _stopping(run: dict | None) -> str:
    if run is None or not RunState(run["state"]).active:
        return ""
    return {StopState.PENDING: f"cancel pending (asked by <@{run['cancelled_by']}>; the host has not answered)",
            StopState.SENT: f"stopping (asked by <@{run['cancelled_by']}>)"}.get(run["stop_state"], "")


def _last_switch(plan: Plan, store: Store) -> SwitchLine | None:
    """The last switch the bot made, and what it knows of it: verified, still verifying, or unverified."""
    rows = store.query(
        f"SELECT id, kind, state, result, decided_at FROM golive_requests WHERE state IN {sql_in(SWITCHED)} "
        "ORDER BY id DESC LIMIT 1")
    if plan.failover is None or not rows:
        return None
    row = rows[0]
    label = f"{'go-live' if row['kind'] == 'golive' else 'rollback'} #{row['id']}"
    result = json.loads(row["result"] or "{}")
    state = RequestState(row["state"])
    verification = result.get("verification") or {}
    if state == RequestState.VERIFIED:
        when = parse_time(verification.get("cloud_confirmed_at") or verification["first_answer_at"])
        return SwitchLine(state, verification["target"], when, label)
    when = parse_optional_time(result.get("flipped_at")) or parse_optional_time(row["decided_at"])
    return SwitchLine(state, verification.get("target"), when, label)
