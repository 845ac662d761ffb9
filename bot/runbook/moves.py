"""What the host's word does to a run: it runs, a cancel reached it, it ended — recorded, audited, said.

The runner, the follower and people's steps move runs only through here, so
each move is written once: the record changes, the audit says so, whoever
waits for a run to end is woken, and an ended run's message and log are
settled.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

from bot.runbook.logs import StageLogs
from bot.runbook.messages import RunMessages
from bot.runbook.remote import RemoteRuns, StopNotYet
from bot.runbook.runs import Runs
from bot.ssh import SSHError
from bot.states import RunState, StopState

log = logging.getLogger("cutover.stages")

Audit = Callable[..., object]


class RunMoves:
    def __init__(self, runs: Runs, remote: RemoteRuns, messages: RunMessages, logs: StageLogs, audit: Audit) -> None:
        self.runs = runs
        self.remote = remote
        self.messages = messages
        self.logs = logs
        self.audit = audit
        self.ended = threading.Condition()  # notified whenever a run ends, for those waiting on any of several

    def running(self, run_id: int, pid: int) -> None:
        """The host runs it, as process group ``pid``; a cancel asked for meanwhile goes to it now."""
        self.runs.running(run_id, pid)
        run = self.runs.get(run_id)
        self.audit(run.started_by, "stage-started", run.stage, "ok", {"run": run_id, "host": run.host, "pid": pid})
        if run.stop_state == StopState.PENDING:
            try:
                self.deliver_stop(run_id)
            except SSHError as exc:
                log.warning("the cancel of run %d is still pending: %s", run_id, exc)

    def deliver_stop(self, run_id: int) -> bool:
        """Carry a pending cancel to the host. True if it reached the live run, False if the run had ended.

        Raises SSHError while the host does not answer (the cancel stays pending).
        """
        run = self.runs.get(run_id)
        try:
            sent = self.remote.stop(run.host, run.remote_dir or "", RunState.CANCELLED.value)
        except StopNotYet:
            return True  # the follower delivers it once the pid file is there
        state = StopState.SENT if sent else StopState.TOO_LATE
        self.runs.stop_reached(run_id, state)
        self.audit(run.cancelled_by or "cutover", "stage-stop-delivered", run.stage, state.value, {"run": run_id})
        return sent

    def finish(self, run_id: int, state: RunState, exit_code: int | None, detail: str = "",
               ended_at: datetime | None = None) -> None:
        """Record how a run ended (``ended_at``: when it did on its host, if known) and wake whoever waits."""
        self.runs.finish(run_id, state, exit_code, detail, ended_at)
        self.wake()

    def end_unstarted(self, run_id: int, state: RunState, reason: str) -> None:
        """End a run that never ran on its host, and make its message say so."""
        self.finish(run_id, state, None, reason)
        run = self.runs.get(run_id)
        if run.message_ts and self.messages.show(run_id, run.message_ts, self.messages.final_view(run)):
            self.runs.final_shown(run_id)

    def settle(self, run_id: int) -> None:
        """Bring an ended run's message to its final state, then its log to its thread (both retried)."""
        self.messages.show_final(run_id)
        self.logs.upload_soon(run_id)

    def wake(self) -> None:
        """A run has ended: wake whoever waits on it."""
        with self.ended:
            self.ended.notify_all()
