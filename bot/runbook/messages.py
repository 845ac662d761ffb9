"""A stage run's one message in the channel: its view, posted once, updated in order, the final state last.

Updates of one run's message are sent one at a time, so a progress update
held by a slow Slack can never land after the final one. The final state is
retried until Slack takes it and recorded when it has; a start brings every
message whose run ended without that record up to date. An update Slack did
not answer may still land later, over a newer one: the run records that
doubt, and the message is shown again once it can no longer happen.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from bot.clock import Clock
from bot.plan import Plan
from bot.runbook import blocks as stage_blocks
from bot.runbook.remote import CANCEL_GRACE
from bot.runbook.runs import Run, Runs
from bot.runbook.view import StageView
from bot.slackapi.notifier import Notifier
from bot.states import StopState

log = logging.getLogger("cutover.stage_message")

FINAL_RETRY_MAX = 60.0


class RunMessages:
    def __init__(self, runs: Runs, notifier: Notifier, clock: Clock, channel: str,
                 stopping: threading.Event, plan: Plan) -> None:
        self.plan = plan
        self.runs = runs
        self.notifier = notifier
        self.clock = clock
        self.channel = channel
        self.stopping = stopping
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def view_of(self, run: Run) -> StageView:
        """The view a run's message starts from, with the last successful run's duration for the ETA."""
        duration = self.runs.previous_duration(run.stage, run.id)
        stage = self.plan.stage(run.stage)
        if stage is not None and stage.manual and stage.planned is not None:
            duration = stage.planned  # a person's step is measured against its plan
        return StageView(run_id=run.id, stage=run.stage, host=run.host, started_by=run.started_by,
                         started_at=run.started_at, state=run.state, previous_duration=duration,
                         bytes=run.log_offset, stopping=stopping_note(run), owner=run.owner,
                         instructions=stage.instructions or "" if stage else "", completed_by=run.completed_by)

    def final_view(self, run: Run) -> StageView:
        """A run that has ended, as its message shows it, from the record alone."""
        return replace(self.view_of(run), state=run.state, exit_code=run.exit_code, reason=run.detail or "",
                       ended_at=run.ended_at, bytes=run.log_offset)

    def post(self, run_id: int, view: StageView) -> str | None:
        """Post the run's message; its ts, recorded with the run, or None while Slack refuses."""
        ts = self.notifier.post(stage_blocks.stage_text(view),
                                stage_blocks.stage_message(view, time.monotonic(), self.clock.now()))
        if ts:
            self.runs.posted(run_id, ts, self.channel)
        return ts

    def message_of(self, run: Run, view: StageView) -> str | None:
        """The run's message (``run`` as just read), posting it now if the start could not (None while Slack
        still refuses)."""
        if run.message_ts or not view.active:
            return run.message_ts
        return self.post(run.id, view)

    def show(self, run_id: int, ts: str, view: StageView) -> bool:
        """Update the run's message to ``view``; one update at a time per run, so none lands out of order.

        An update that got no answer may still be applied by Slack later, over this or a newer one: the notifier
        shows the message again once that can no longer happen, and the run records the doubt so that a restart
        does the same.
        """
        with self._lock_of(run_id):
            text = stage_blocks.stage_text(view)
            blocks = stage_blocks.stage_message(view, time.monotonic(), self.clock.now())
            shown = self.notifier.update(ts, text, blocks, settled=lambda: self.runs.doubt(run_id, False))
            doubted = self.runs.get(run_id).message_doubt
            if self.notifier.doubted(ts):
                if not doubted:
                    self.runs.doubt(run_id, True)
            elif shown and doubted:  # doubted before a restart: an update sent then may still land
                self.notifier.expect_late(ts, text, blocks, settled=lambda: self.runs.doubt(run_id, False))
            return shown

    def show_final(self, run_id: int, view: StageView | None = None) -> None:
        """Bring the message to the run's final state, retrying with backoff until Slack takes it."""
        delay = 1.0
        while True:
            run = self.runs.get(run_id)
            final = view or self.final_view(run)
            ts = run.message_ts or self.post(run_id, final)
            if ts and self.show(run_id, ts, final):
                self.runs.final_shown(run_id)
                return
            log.warning("the final state of run %d is not in Slack yet; trying again in %.0f s", run_id, delay)
            if self.stopping.wait(delay):
                return  # the next start brings it up to date
            delay = min(delay * 2, FINAL_RETRY_MAX)

    def _lock_of(self, run_id: int) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(run_id, threading.Lock())


def stopping_note(run: Run) -> str:
    """What a run's message says of a cancel while the run is still going."""
    if not run.active:
        return ""
    who = f"<@{run.cancelled_by}>"
    if run.stop_state == StopState.PENDING:
        return f"Cancel pending (asked by {who}): `{run.host}` has not answered yet; the bot stops it when it does."
    if run.stop_state == StopState.SENT:
        return f"Stopping (asked by {who}): TERM sent, KILL after {CANCEL_GRACE} s if it is still running."
    return ""
