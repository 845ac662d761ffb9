"""Stage runs, the record: every write to ``stage_runs`` and every read of it, as typed ``Run``s.

A run is claimed in one transaction (its dependencies succeeded, no other run
of the stage active: the partial unique index holds that even across
processes), and each later move of its state is a write here. Whoever else
needs a run's facts (the runner, the follower, people's steps, status, the
report, the switch's data window) reads them from here, never from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from sqlite_utils.db import NotFoundError

from bot.clock import Clock, parse_optional_time, parse_time
from bot.plan import Stage
from bot.refusals import Refused
from bot.states import ACTIVE_RUNS, RunState, StopState, sql_in
from bot.store import Store

REASON_LIMIT = 500


class StageRefused(Refused):
    """Why a stage (or a person's step) cannot start, stop or be completed now, worded for whoever asked."""


@dataclass(frozen=True)
class Run:
    id: int
    stage: str
    host: str
    state: RunState
    started_by: str
    started_at: datetime
    ended_at: datetime | None = None
    exit_code: int | None = None
    remote_dir: str | None = None
    pid: int | None = None
    log_offset: int = 0
    log_uploaded: bool = False
    cancel_reason: str | None = None
    cancelled_by: str | None = None
    channel: str | None = None
    message_ts: str | None = None
    detail: str | None = None
    message_final: bool = False
    stop_state: StopState | None = None
    owner: str | None = None  # a person's step: who does it
    completed_by: str | None = None
    reminded_at: datetime | None = None
    message_doubt: bool = False  # an update of its message got no answer and may still land
    host_started_at: datetime | None = None  # when its command started, by its host's clock

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def duration(self) -> timedelta | None:
        return self.ended_at - self.started_at if self.ended_at is not None else None

    @classmethod
    def from_row(cls, row: dict) -> "Run":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["state"] = RunState(row["state"])
        values["started_at"] = parse_time(row["started_at"])
        values["ended_at"] = parse_optional_time(row["ended_at"])
        values["reminded_at"] = parse_optional_time(row.get("reminded_at"))
        values["host_started_at"] = parse_optional_time(row.get("host_started_at"))
        values["stop_state"] = StopState(row["stop_state"]) if row.get("stop_state") else None
        for flag in ("log_uploaded", "message_final", "message_doubt"):
            values[flag] = bool(row.get(flag))
        return cls(**values)


class Runs:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- reading -----------------------------------------------------------------------------------

    def get(self, run_id: int) -> Run:
        """The run; LookupError when there is none by that id."""
        try:
            return Run.from_row(self.store.get("stage_runs", run_id))
        except NotFoundError:
            raise LookupError(f"no stage run {run_id}") from None

    def _where(self, sql: str, params: list | tuple = ()) -> list[Run]:
        return [Run.from_row(r) for r in self.store.query(f"SELECT * FROM stage_runs WHERE {sql}", params)]

    def latest(self) -> dict[str, Run]:
        """Each stage's latest run."""
        return {r.stage: r for r in self._where("id IN (SELECT MAX(id) FROM stage_runs GROUP BY stage)")}

    def active(self) -> list[Run]:
        return self._where(f"state IN {sql_in(ACTIVE_RUNS)} ORDER BY id")

    def unsettled(self) -> list[Run]:
        """Ended runs whose message has not been shown final, or may have been overwritten by a late update."""
        return self._where(f"state NOT IN {sql_in(ACTIVE_RUNS)} AND (message_final = 0 OR message_doubt = 1)")

    def not_uploaded(self) -> list[Run]:
        """Ended runs with a message whose full log has not reached its thread."""
        return self._where(f"state NOT IN {sql_in(ACTIVE_RUNS)} AND log_uploaded = 0 AND message_ts IS NOT NULL")

    def open_steps(self) -> list[Run]:
        """People's steps waiting for their owner."""
        return self._where(f"owner IS NOT NULL AND state IN {sql_in(ACTIVE_RUNS)} ORDER BY id")

    def count(self) -> int:
        return self.store.query("SELECT COUNT(*) AS n FROM stage_runs")[0]["n"]

    def last_succeeded(self, before: datetime | None = None) -> tuple[str, datetime] | None:
        """The stage that finished last with success (before ``before``, if given), and when: the new server
        holds the old one's data up to then."""
        rows = self.store.query(
            "SELECT stage, ended_at FROM stage_runs WHERE state = ? AND ended_at IS NOT NULL"
            + (" AND ended_at <= ?" if before else "") + " ORDER BY ended_at DESC LIMIT 1",
            [RunState.SUCCEEDED.value] + ([before.isoformat()] if before else []))
        return (rows[0]["stage"], parse_time(rows[0]["ended_at"])) if rows else None

    def last_durations(self) -> dict[str, timedelta]:
        """How long each stage's last successful run took."""
        return {r.stage: r.duration for r in self._where(
            "id IN (SELECT MAX(id) FROM stage_runs WHERE state = ? AND ended_at IS NOT NULL GROUP BY stage)",
            [RunState.SUCCEEDED.value]) if r.duration is not None}

    def previous_duration(self, stage: str, before_run: int) -> timedelta | None:
        """How long the stage's last successful run before ``before_run`` took."""
        runs = self._where("stage = ? AND state = ? AND id < ? ORDER BY id DESC LIMIT 1",
                           [stage, RunState.SUCCEEDED.value, before_run])
        return runs[0].duration if runs else None

    # -- claiming --------------------------------------------------------------------------------------

    def claim(self, stage: Stage, user: str) -> int:
        """Check dependencies and insert the run in one transaction: one run of a stage at a time."""
        now = self.clock.now().isoformat()
        with self.store.transaction() as db:
            active = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [stage.name]))
            if active:
                raise StageRefused(f"`{stage.name}` is already running (run {active[0]['id']}, started by "
                                   f"<@{active[0]['started_by']}>). `cancel {stage.name}` stops it.")
            missing = []
            for dep in stage.depends_on:
                rows = list(db["stage_runs"].rows_where("stage = ?", [dep], order_by="id desc", limit=1))
                if not rows:
                    missing.append(f"`{dep}` has not run")
                elif rows[0]["state"] != RunState.SUCCEEDED:
                    missing.append(f"`{dep}` {rows[0]['state']}")
            if missing:
                raise StageRefused(f"`{stage.name}` needs {', '.join('`' + d + '`' for d in stage.depends_on)} "
                                   f"to have succeeded first: {'; '.join(missing)}.")
            return db["stage_runs"].insert({"stage": stage.name, "host": stage.host,
                                            "state": RunState.STARTING.value, "started_by": user,
                                            "started_at": now, "owner": stage.owner}).last_pk

    # -- a run's moves ------------------------------------------------------------------------------------

    def _set(self, run_id: int, **values: object) -> None:
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, values)

    def posted(self, run_id: int, ts: str, channel: str) -> None:
        self._set(run_id, message_ts=ts, channel=channel)

    def prepared(self, run_id: int, remote_dir: str) -> None:
        self._set(run_id, remote_dir=remote_dir)

    def running(self, run_id: int, pid: int) -> None:
        self._set(run_id, state=RunState.RUNNING.value, pid=pid)

    def finish(self, run_id: int, state: RunState, exit_code: int | None, detail: str = "",
               ended_at: datetime | None = None) -> None:
        """How a run ended; ``ended_at`` is when it ended on its host, if known, else now."""
        self._set(run_id, state=state.value, exit_code=exit_code, detail=detail or None,
                  ended_at=(ended_at or self.clock.now()).isoformat())

    def host_started(self, run_id: int, at: datetime) -> None:
        self._set(run_id, host_started_at=at.isoformat())

    def last_success(self, stage: str) -> Run | None:
        """The stage's latest run that succeeded."""
        found = self._where("stage = ? AND state = ? ORDER BY id DESC LIMIT 1", [stage, RunState.SUCCEEDED.value])
        return found[0] if found else None

    def offset(self, run_id: int, offset: int) -> None:
        self._set(run_id, log_offset=offset)

    def uploaded(self, run_id: int) -> None:
        self._set(run_id, log_uploaded=1)

    def final_shown(self, run_id: int) -> None:
        self._set(run_id, message_final=1)

    def doubt(self, run_id: int, doubted: bool) -> None:
        self._set(run_id, message_doubt=int(doubted))

    # -- stopping ---------------------------------------------------------------------------------------

    def ask_stop(self, stage: str, user: str) -> Run:
        """Record an operator's cancel of the stage's active run as pending; the run as it was before."""
        with self.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [stage]))
            if not rows:
                raise StageRefused(f"`{stage}` is not running.")
            run = Run.from_row(rows[0])
            if run.stop_state in (StopState.PENDING, StopState.SENT):
                who = f"<@{run.cancelled_by}>"
                raise StageRefused(f"`{stage}` is already being stopped (asked by {who}); "
                                   + ("the host has the stop." if run.stop_state == StopState.SENT else
                                      f"`{run.host}` has not answered yet, and gets the stop when it does."))
            db["stage_runs"].update(run.id, {"cancel_reason": RunState.CANCELLED.value, "cancelled_by": user,
                                             "stop_state": StopState.PENDING.value})
        return run

    def stop_reached(self, run_id: int, state: StopState) -> None:
        self._set(run_id, stop_state=state.value)

    # -- people's steps ------------------------------------------------------------------------------------

    def open_step(self, run_id: int) -> bool:
        """A claimed step becomes its owner's (starting → running), audited in the same write; False if a Done
        came first or it was opened already."""
        with self.store.transaction() as db:
            if db.execute("UPDATE stage_runs SET state = ? WHERE id = ? AND state = ?",
                          [RunState.RUNNING.value, run_id, RunState.STARTING.value]).rowcount != 1:
                return False
            run = Run.from_row(db["stage_runs"].get(run_id))
            self.store.audit(run.started_by, "step-opened", run.stage, "ok", {"run": run_id, "owner": run.owner},
                             db=db)
            return True

    def complete_step(self, stage: str, user: str, ok: bool, reason: str, run_id: int | None) -> Run:
        """End the open step as done (or failed, with a reason), by ``user``; ``run_id`` is the run a button was
        on. Refuses a step that is not open, and a button left on an earlier run."""
        state = RunState.SUCCEEDED if ok else RunState.FAILED
        reason = reason.strip()[:REASON_LIMIT]
        with self.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [stage]))
            if not rows or (run_id is not None and rows[0]["id"] != run_id):
                last = list(db["stage_runs"].rows_where("stage = ?", [stage], order_by="id desc", limit=1))
                if last and (run_id is None or last[0]["id"] == run_id) and last[0]["completed_by"]:
                    said = "done" if last[0]["state"] == RunState.SUCCEEDED else last[0]["state"]
                    raise StageRefused(f"`{stage}` is already {said} (by <@{last[0]['completed_by']}>).")
                raise StageRefused(f"`{stage}` is not open: it is opened by `/cutover run {stage}` or by `run all` "
                                   "when its turn comes." if run_id is None else
                                   f"That button is on an earlier run of `{stage}`, which has ended.")
            run_id = rows[0]["id"]
            db["stage_runs"].update(run_id, {"state": state.value, "ended_at": self.clock.now().isoformat(),
                                             "completed_by": user, "detail": None if ok else reason})
            self.store.audit(user, "step-done" if ok else "step-failed", stage, "ok" if ok else "failed",
                             {"run": run_id, **({} if ok else {"reason": reason})}, db=db)
            return Run.from_row(db["stage_runs"].get(run_id))

    def cancel_step(self, stage: str, user: str) -> Run:
        """A person's step has nothing to stop on a host: cancelling it ends it now."""
        with self.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [stage]))
            if not rows:
                raise StageRefused(f"`{stage}` is not open.")
            run_id = rows[0]["id"]
            db["stage_runs"].update(run_id, {"state": RunState.CANCELLED.value, "ended_at": self.clock.now().isoformat(),
                                             "completed_by": user, "cancelled_by": user})
            self.store.audit(user, "step-cancelled", stage, "ok", {"run": run_id}, db=db)
            return Run.from_row(db["stage_runs"].get(run_id))

    def claim_reminder(self, run_id: int) -> bool:
        """Take the one reminder of a late step (two ticks never remind twice); False if it was taken."""
        with self.store.transaction() as db:
            return db.execute("UPDATE stage_runs SET reminded_at = ? WHERE id = ? AND reminded_at IS NULL",
                              [self.clock.now().isoformat(), run_id]).rowcount == 1

    def release_reminder(self, run_id: int) -> None:
        """The reminder was not said: the next tick tries again."""
        self._set(run_id, reminded_at=None)
