"""The plan at a glance, as plain data: built from the plan, the records and the clock; ``bot.night.blocks``
turns it into blocks."""

from __future__ import annotations

from datetime import datetime

from bot.clock import Clock
from bot.ledger.counts import copy_moment
from bot.night.model import FreezeLine, RequestLine, StageLine, StatusReport, SwitchLine
from bot.night.records import Records
from bot.night.timetable import build_timetable
from bot.plan import Plan
from bot.runbook.runs import Run
from bot.states import NOT_RUN, RequestState, StopState
from bot.switch.requests import Requests


def build_status(plan: Plan, records: Records, clock: Clock, replica: str | None = None) -> StatusReport:
    now = clock.now()
    runs, requests = records.runs, records.requests
    latest = runs.latest()
    timetable = build_timetable(plan, latest, runs.last_durations(), now)
    times = {t.name: t for t in timetable.steps}
    stages = []
    for stage in plan.stages:
        run = latest.get(stage.name)
        elapsed = ((run.ended_at or now) - run.started_at) if run else None
        stages.append(StageLine(name=stage.name, host=stage.host, state=run.state if run else NOT_RUN,
                                started_at=run.started_at if run else None, ended_at=run.ended_at if run else None,
                                exit_code=run.exit_code if run else None, elapsed=elapsed,
                                depends_on=stage.depends_on, stopping=_stopping(run), owner=stage.owner,
                                times=times[stage.name]))
    latest = records.counts.latest()
    window = tuple(latest[w.name] for w in plan.data.watches if w.name in latest)
    lines = [FreezeLine(kind=f.kind, state=f.state, start_at=f.start_at, end_at=f.end_at, note=f.note,
                        held=tuple(c for c in window if c.freeze == f.kind and c.must_be_zero))
             for f in records.freezes.current()]
    open_ = [RequestLine(id=r.id, kind=r.kind, state=r.state, requested_by=r.requested_by, expires_at=r.expires_at,
                         approvals=len(requests.approvals(r.id)), required=r.required)
             for r in requests.in_flight()]
    failover = plan.failover
    return StatusReport(now=now, stages=stages, freezes=lines, requests=open_,
                        floating_ip=failover.floating_ip if failover else None,
                        switch=_last_switch(requests) if failover else None, timetable=timetable,
                        window=window, window_source=copy_moment(plan.data, runs)[1], replica=replica,
                        health_record=_health_record(requests, failover.old) if failover else None,
                        **(_sites(requests) if failover and plan.sites.listed else {}))


def _sites(requests: Requests) -> dict:
    """The grid of the latest request that probed the sites: its verification's, else its preflight's."""
    for request in reversed(requests.every()):
        v = request.verification
        if v is not None and v.grid is not None:
            return {"grid": v.grid, "grid_source": f"after {request.what} #{request.id}",
                    "site_answers": v.site_answers, "flipped_at": request.flipped_at}
        if request.preflight is not None and request.preflight.grid is not None:
            return {"grid": request.preflight.grid, "grid_source": f"at the preflight of {request.what} #{request.id}"}
    return {}


def _health_record(requests: Requests, old: str) -> tuple[str, str, datetime] | None:
    """What the old server's health file held, and who its record says switched, as the latest preflight read it
    (status reads no server: `/cutover check` asks now)."""
    for request in reversed(requests.every()):
        check = next((c for c in (request.preflight.checks if request.preflight else ())
                      if c.name == f"health {old}"), None)
        if check is not None and request.preflight is not None:
            return check.detail, f"{request.what} #{request.id}", request.preflight.at
    return None


def _stopping(run: Run | None) -> str:
    if run is None or not run.active:
        return ""
    return {StopState.PENDING: f"cancel pending (asked by <@{run.cancelled_by}>; the host has not answered)",
            StopState.SENT: f"stopping (asked by <@{run.cancelled_by}>)"}.get(run.stop_state, "")  # type: ignore[arg-type]


def _last_switch(requests: Requests) -> SwitchLine | None:
    """The last switch the bot made, and what it knows of it: verified, still verifying, or unverified."""
    request = requests.last_switch()
    if request is None:
        return None
    label = f"{request.what} #{request.id}"
    v = request.verification
    if request.state == RequestState.VERIFIED and v is not None:
        return SwitchLine(request.state, v.target, v.cloud_confirmed_at or v.first_answer_at, label)
    return SwitchLine(request.state, v.target if v else None, request.flipped_at or request.decided_at, label)
