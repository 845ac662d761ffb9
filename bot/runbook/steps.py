"""A person's step in the plan: posted to its owner with a Done button, completed by them or an operator.

It is a stage run like any other (claimed in one transaction, in ``depends_on``,
``status``, the audit and the timeline), only nobody runs a command: the run
is open from the moment its message is posted until its owner or an operator
says done or failed. A step still open past its planned time gets one reminder.
"""

from __future__ import annotations

import logging

from bot.clock import Clock
from bot.durations import format_duration
from bot.plan import Plan
from bot.runbook.messages import RunMessages
from bot.runbook.moves import RunMoves
from bot.runbook.runs import REASON_LIMIT, Run, Runs, StageRefused
from bot.slackapi.notifier import Notifier
from bot.workers import Workers

log = logging.getLogger("cutover.people_steps")

LATE_CHECK_SECONDS = 30


class PeopleSteps:
    def __init__(self, plan: Plan, runs: Runs, moves: RunMoves, messages: RunMessages, notifier: Notifier,
                 clock: Clock, workers: Workers) -> None:
        self.plan = plan
        self.runs = runs
        self.moves = moves
        self.messages = messages
        self.notifier = notifier
        self.clock = clock
        self.workers = workers

    def open(self, run_id: int) -> None:
        """The step is the owner's from now on: running, with nothing on any host."""
        if not self.runs.open_step(run_id):  # only from starting: a Done that came first stays done
            return
        run = self.runs.get(run_id)
        if run.message_ts:
            self.messages.show(run_id, run.message_ts, self.messages.view_of(run))

    def complete(self, name: str, user: str, ok: bool, reason: str = "", run_id: int | None = None) -> str:
        """Mark the open step done (or failed, with a reason); only its owner or an operator may.

        ``run_id`` is the run a button was on: a button left on an ended run completes nothing.
        """
        stage = self.plan.stage(name)
        if stage is None:
            raise StageRefused(f"`{name}` is not a stage of the plan.")
        if not stage.manual:
            raise StageRefused(f"`{name}` is a stage the bot runs on `{stage.host}`, not a person's step; it ends "
                               f"by itself (`/cutover cancel {name}` stops it).")
        if user != stage.owner and not self.plan.is_operator(user):
            raise StageRefused(f"`{name}` is <@{stage.owner}>'s step: only they or an operator can mark it "
                               f"{'done' if ok else 'failed'}.")
        if not ok and not reason.strip():
            raise StageRefused(f"Say why `{name}` failed: `/cutover failed {name} REASON`.")
        run = self.runs.complete_step(name, user, ok, reason, run_id)
        self.moves.wake()
        final = self.messages.final_view(run)
        if run.message_ts and self.messages.show(run.id, run.message_ts, final):
            self.runs.final_shown(run.id)
        else:
            self.workers.submit(f"final message of step {name}", self.messages.show_final, run.id, final)
        return f"`{name}` is marked done." if ok else f"`{name}` is marked failed: {reason.strip()[:REASON_LIMIT]}"

    def step_of(self, button_value: str) -> Run:
        """The run a Done button was put on (its value is the run's id)."""
        try:
            return self.runs.get(int(button_value))
        except (ValueError, LookupError):
            raise StageRefused("That button belongs to no step this bot knows.") from None

    def cancel(self, name: str, user: str) -> str:
        """A person's step has nothing to stop on a host: cancelling it ends it now."""
        run = self.runs.cancel_step(name, user)
        self.moves.wake()
        self.workers.submit(f"final message of step {name}", self.messages.show_final, run.id,
                            self.messages.final_view(run))
        return f"`{run.stage}` is cancelled; it was a person's step, so nothing ran on any host."

    def remind_late(self) -> list[str]:
        """One reminder in the step's thread to an owner whose step is open past its planned time; a step whose
        message Slack refused at its start is posted now."""
        now = self.clock.now()
        reminded = []
        for run in self.runs.open_steps():
            if run.message_ts is None:
                self.messages.message_of(run, self.messages.view_of(run))
                continue
            if run.reminded_at is not None:
                continue
            expected = self.messages.view_of(run).previous_duration
            if expected is None:
                continue  # no planned time and no past run: nothing says it is late
            open_for = now - run.started_at
            if open_for <= expected or not self.runs.claim_reminder(run.id):
                continue
            text = (f"<@{run.owner}> `{run.stage}` is late: expected {format_duration(expected)}, open "
                    f"{format_duration(open_for)}. Done button above, or `/cutover done {run.stage}`; "
                    f"`/cutover failed {run.stage} REASON` if it cannot be done.")
            if self.notifier.post(text, thread_ts=run.message_ts) is None:
                self.runs.release_reminder(run.id)
                log.warning("the reminder for step %s did not post (%s); trying again", run.stage,
                            self.notifier.last_error())
                continue
            self.moves.audit("cutover", "step-reminded", run.stage, "ok",
                             {"run": run.id, "late_by": str(open_for - expected)})
            reminded.append(run.stage)
        return reminded
