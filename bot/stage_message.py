"""A stage run's one message in the channel: its view, posted once, updated in order, the final state last.

Updates of one run's message are sent one at a time, so a progress update
held by a slow Slack can never land after the final one. The final state is
retried until Slack takes it and recorded when it has; a start brings every
message whose run ended without that record up to date.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from bot import messages
from bot.clock import Clock, parse_optional_time, parse_time
from bot.notifier import Notifier
from bot.plan import Plan
from bot.stage_view import StageView
from bot.remote_run import CANCEL_GRACE
from bot.states import RunState, StopState
from bot.store import Store

log = logging.getLogger("cutover.stage_message")

FINAL_RETRY_MAX = 60.0


class RunMessages:
    def __init__(self, store: Store, notifier: Notifier, clock: Clock, channel: str,
                 stopping: threading.Event, plan: Plan) -> None:
        self.plan = plan
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.channel = channel
        self.stopping = stopping
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def view_of(self, run: dict) -> StageView:
        """The view a run's message starts from, with the last successful run's duration for the ETA."""
        previous = self.store.query(
            "SELECT started_at, ended_at FROM stage_runs WHERE stage = ? AND state = ? AND id < ? "
            "ORDER BY id DESC LIMIT 1", [run["stage"], RunState.SUCCEEDED, run["id"]])
        duration = None
        if previous:
            duration = parse_time(previous[0]["ended_at"]) - parse_time(previous[0]["started_at"])
        stage = self.plan.stage(run["stage"])
        if stage is not None and stage.manual and stage.planned is not None:
            duration = stage.planned  # a person's step is measured against its plan
        return StageView(run_id=run["id"], stage=run["stage"], host=run["host"], started_by=run["started_by"],
                         started_at=parse_time(run["started_at"]), state=RunState(run["state"]),
                         previous_duration=duration, bytes=run["log_offset"], stopping=stopping_note(run),
                         owner=run["owner"], instructions=stage.instructions or "" if stage else "",
                         completed_by=run["completed_by"])

    def final_view(self, row: dict) -> StageView:
        """A run that has ended, as its message shows it, from the store alone."""
        return replace(self.view_of(row), state=RunState(row["state"]), exit_code=row["exit_code"],
                       reason=row["detail"] or "", ended_at=parse_optional_time(row["ended_at"]),
                       bytes=row["log_offset"])

    def message_of(self, row: dict, view: StageView) -> str | None:
        """The run's message (``row`` is the run as just read), posting it now if the start could not (None while
        Slack still refuses)."""
        if row["message_ts"] or not view.active:
            return row["message_ts"]
        return self._post(row["id"], view)

    def show(self, run_id: int, ts: str, view: StageView) -> bool:
        """Update the run's message to ``view``; one update at a time per run, so none lands out of order.

        An update that got no answer may still be applied by Slack later, over this or a newer one: the notifier
        shows the message again once that can no longer happen, and the run records the doubt so that a restart
        does the same.
        """
        with self._lock_of(run_id):
            text, blocks = messages.stage_text(view), messages.stage_message(view, time.monotonic(), self.clock.now())
            shown = self.notifier.update(ts, text, blocks, settled=lambda: self._doubt(run_id, False))
            doubted = self.store.get("stage_runs", run_id)["message_doubt"]
            if self.notifier.doubted(ts):
                if not doubted:
                    self._doubt(run_id, True)
            elif shown and doubted:  # doubted before a restart: an update sent then may still land
                self.notifier.expect_late(ts, text, blocks, settled=lambda: self._doubt(run_id, False))
            return shown

    def _doubt(self, run_id: int, doubted: bool) -> None:
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"message_doubt": int(doubted)})

    def show_final(self, run_id: int, view: StageView) -> None:
        """Bring the message to the run's final state, retrying with backoff until Slack takes it."""
        delay = 1.0
        while True:
            ts = self.store.get("stage_runs", run_id)["message_ts"] or self._post(run_id, view)
            if ts and self.show(run_id, ts, view):
                self.recorded_final(run_id)
                return
            log.warning("the final state of run %d is not in Slack yet; trying again in %.0f s", run_id, delay)
            if self.stopping.wait(delay):
                return  # the next start brings it up to date
            delay = min(delay * 2, FINAL_RETRY_MAX)

    def recorded_final(self, run_id: int) -> None:
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"message_final": 1})

    def _post(self, run_id: int, view: StageView) -> str | None:
        ts = self.notifier.post(messages.stage_text(view), messages.stage_message(view, time.monotonic(),
                                                                                  self.clock.now()))
        if ts:
            with self.store.transaction() as db:
                db["stage_runs"].update(run_id, {"message_ts": ts, "channel": self.channel})
        return ts

    def _lock_of(self, run_id: int) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(run_id, threading.Lock())


def stopping_note(run: dict) -> str:
    """What a run's message says of a cancel while the run is still going."""
    if not RunState(run["state"]).active:
        return ""
    who = f"<@{run['cancelled_by']}>"
    if run["stop_state"] == StopState.PENDING:
        return f"Cancel pending (asked by {who}): `{run['host']}` has not answered yet; the bot stops it when it does."
    if run["stop_state"] == StopState.SENT:
        return f"Stopping (asked by {who}): TERM sent, KILL after {CANCEL_GRACE} s if it is still running."
    return ""
