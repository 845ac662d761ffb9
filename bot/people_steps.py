"""A person's step in the plan: posted to its owner with a Done button, completed by them or an operator.

It is a stage run like any other (claimed in one transaction, in ``depends_on``,
``status``, the audit and the timeline), only nobody runs a command: the run
is open from the moment its message is posted until its owner or an operator
says done or failed. A step still open past its planned time gets one reminder.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.clock import parse_time
from bot.durations import format_duration
from bot.refusals import Refused
from bot.states import ACTIVE_RUNS, RunState, sql_in

if TYPE_CHECKING:
    from bot.stages import StageRunner

log = logging.getLogger("cutover.people_steps")

REASON_LIMIT = 500
LATE_CHECK_SECONDS = 30


class StepRefused(Refused):
    """Why a person's step cannot be completed now, worded for whoever tried."""


class PeopleSteps:
    def __init__(self, runner: "StageRunner") -> None:
        self.runner = runner

    def open(self, run_id: int) -> None:
        """The step is the owner's from now on: running, with nothing on any host."""
        runner = self.runner
        row = runner.row(run_id)
        with runner.store.transaction() as db:  # only from starting: a Done that came first stays done
            if db.execute("UPDATE stage_runs SET state = ? WHERE id = ? AND state = ?",
                          [RunState.RUNNING.value, run_id, RunState.STARTING.value]).rowcount != 1:
                return
            runner.store.audit(row["started_by"], "step-opened", row["stage"], "ok",
                               {"run": run_id, "owner": row["owner"]}, db=db)
        view = runner.messages.view_of(runner.row(run_id))
        if row["message_ts"]:
            runner.messages.show(run_id, row["message_ts"], view)

    def complete(self, name: str, user: str, ok: bool, reason: str = "", run_id: int | None = None) -> str:
        """Mark the open step done (or failed, with a reason); only its owner or an operator may.

        ``run_id`` is the run a button was on: a button left on an ended run completes nothing.
        """
        runner = self.runner
        stage = runner.stage(name)
        if not stage.manual:
            raise StepRefused(f"`{name}` is a stage the bot runs on `{stage.host}`, not a person's step; it ends "
                              f"by itself (`/cutover cancel {name}` stops it).")
        if user != stage.owner and not runner.plan.is_operator(user):
            raise StepRefused(f"`{name}` is <@{stage.owner}>'s step: only they or an operator can mark it "
                              f"{'done' if ok else 'failed'}.")
        if not ok and not reason.strip():
            raise StepRefused(f"Say why `{name}` failed: `/cutover failed {name} REASON`.")
        state = RunState.SUCCEEDED if ok else RunState.FAILED
        detail = None if ok else reason.strip()[:REASON_LIMIT]  # who is in completed_by
        now = runner.clock.now()
        with runner.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [name]))
            if not rows or (run_id is not None and rows[0]["id"] != run_id):
                last = list(db["stage_runs"].rows_where("stage = ?", [name], order_by="id desc", limit=1))
                if last and (run_id is None or last[0]["id"] == run_id) and last[0]["completed_by"]:
                    said = "done" if last[0]["state"] == RunState.SUCCEEDED else last[0]["state"]
                    raise StepRefused(f"`{name}` is already {said} (by <@{last[0]['completed_by']}>).")
                raise StepRefused(f"`{name}` is not open: it is opened by `/cutover run {name}` or by `run all` "
                                  "when its turn comes." if run_id is None else
                                  f"That button is on an earlier run of `{name}`, which has ended.")
            run = rows[0]
            db["stage_runs"].update(run["id"], {"state": state.value, "ended_at": now.isoformat(),
                                                "completed_by": user, "detail": detail})
            runner.store.audit(user, "step-done" if ok else "step-failed", name, "ok" if ok else "failed",
                               {"run": run["id"], **({} if ok else {"reason": reason.strip()[:REASON_LIMIT]})},
                               db=db)
        runner.ended()
        row = runner.row(run["id"])
        final = runner.messages.final_view(row)
        if row["message_ts"] and runner.messages.show(run["id"], row["message_ts"], final):
            runner.messages.recorded_final(run["id"])
        else:
            runner.workers.submit(f"final message of step {name}", runner.messages.show_final, run["id"], final)
        return (f"`{name}` is marked done." if ok else f"`{name}` is marked failed: {reason.strip()[:REASON_LIMIT]}")

    def cancel(self, name: str, user: str) -> str:
        """A person's step has nothing to stop on a host: cancelling it ends it now."""
        runner = self.runner
        now = runner.clock.now()
        with runner.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [name]))
            if not rows:
                raise StepRefused(f"`{name}` is not open.")
            run = rows[0]
            db["stage_runs"].update(run["id"], {"state": RunState.CANCELLED.value, "ended_at": now.isoformat(),
                                                "completed_by": user, "cancelled_by": user})
            runner.store.audit(user, "step-cancelled", run["stage"], "ok", {"run": run["id"]}, db=db)
        runner.ended()
        runner.workers.submit(f"final message of step {name}", runner.messages.show_final, run["id"],
                              runner.messages.final_view(runner.row(run["id"])))
        return f"`{run['stage']}` is cancelled; it was a person's step, so nothing ran on any host."

    def remind_late(self) -> list[str]:
        """One reminder in the step's thread to an owner whose step is open past its planned time."""
        runner = self.runner
        now = runner.clock.now()
        reminded = []
        for run in runner.store.query(  # a step whose message Slack refused at its start: post it now
                f"SELECT * FROM stage_runs WHERE owner IS NOT NULL AND state IN {sql_in(ACTIVE_RUNS)} "
                "AND message_ts IS NULL"):
            runner.messages.message_of(run, runner.messages.view_of(run))
        for run in runner.store.query(
                f"SELECT * FROM stage_runs WHERE owner IS NOT NULL AND state IN {sql_in(ACTIVE_RUNS)} "
                "AND reminded_at IS NULL AND message_ts IS NOT NULL"):
            expected = runner.messages.view_of(run).previous_duration
            if expected is None:
                continue  # no planned time and no past run: nothing says it is late
            open_for = now - parse_time(run["started_at"])
            if open_for <= expected:
                continue
            with runner.store.transaction() as db:  # claimed first: two ticks never remind twice
                if db.execute("UPDATE stage_runs SET reminded_at = ? WHERE id = ? AND reminded_at IS NULL",
                              [now.isoformat(), run["id"]]).rowcount != 1:
                    continue
            text = (f"<@{run['owner']}> `{run['stage']}` is late: expected {format_duration(expected)}, open "
                    f"{format_duration(open_for)}. Done button above, or `/cutover done {run['stage']}`; "
                    f"`/cutover failed {run['stage']} REASON` if it cannot be done.")
            if runner.notifier.post(text, thread_ts=run["message_ts"]) is None:
                with runner.store.transaction() as db:  # not said: the next tick tries again
                    db["stage_runs"].update(run["id"], {"reminded_at": None})
                log.warning("the reminder for step %s did not post (%s); trying again", run["stage"],
                            runner.notifier.last_error())
                continue
            runner.store.audit("cutover", "step-reminded", run["stage"], "ok",
                               {"run": run["id"], "late_by": str(open_for - expected)})
            reminded.append(run["stage"])
        return reminded
