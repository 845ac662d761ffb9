"""Running the plan's stages: claim a run, launch it on its host, follow it, cancel it, hand out its log.

A run is claimed in one transaction (dependencies met, no other run of the
stage active), launched through the remote-run protocol, then followed by a
``Follower`` thread that tails the host's log from the byte offset stored in
SQLite. After a restart ``resume`` re-attaches to every run still active.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from bot.clock import Clock
from bot.plan import Plan, Stage
from bot.redact import Redactor
from bot.runbook.follower import FollowKit, Followers, follow
from bot.runbook.logs import StageLogs
from bot.runbook.messages import RunMessages
from bot.runbook.moves import RunMoves
from bot.runbook.remote import CANCEL_GRACE, RemoteRuns
from bot.runbook.runs import Run, Runs, StageRefused
from bot.runbook.steps import PeopleSteps
from bot.slackapi.notifier import Notifier
from bot.ssh import SSHError, SSHPool
from bot.states import RunState
from bot.threads import Death, Watched, record_death
from bot.workers import Workers

log = logging.getLogger("cutover.stages")

STOP_NOTE_WAIT = 5.0

__all__ = ["StageRefused", "StageRunner"]


class StageRunner:
    def __init__(self, plan: Plan, runs: Runs, audit: Callable[..., object], notifier: Notifier, clock: Clock,
                 ssh: SSHPool, workers: Workers, redactor: Redactor, log_dir: Path) -> None:
        self.plan = plan
        self.notifier = notifier
        self.clock = clock
        self.workers = workers
        self.stopping = threading.Event()
        self.runs = runs
        self.remote = RemoteRuns(ssh, plan.keep_runs)
        self.logs = StageLogs(log_dir, redactor, notifier, self.runs, self.stopping)
        self.messages = RunMessages(self.runs, notifier, clock, plan.people.channel, self.stopping, plan)
        self.moves = RunMoves(self.runs, self.remote, self.messages, self.logs, audit)
        self.people = PeopleSteps(plan, self.runs, self.moves, self.messages, notifier, clock, workers)
        self.followers = Followers()
        self._kit = FollowKit(self.runs, self.moves, self.messages, self.remote, self.logs, notifier, clock,
                              self.stopping, self.followers)
        self._threads: dict[int, threading.Thread] = {}  # the thread following each run
        self._dead: dict[int, Death] = {}  # runs whose follower's thread died, until the watchdog restarts it
        self._lock = threading.Lock()

    # -- operations (called from the worker pool) ------------------------------------------------

    def start(self, name: str, user: str, env: dict[str, int | str] | None = None) -> int:
        """Start one stage (or a salvage run); returns its run id once it is running on the host. Raises
        StageRefused. ``env``: variables its command finds set."""
        stage = self.stage(name)
        run_id = self.runs.claim(stage, user)
        self.messages.post(run_id, self.messages.view_of(self.runs.get(run_id)))
        if stage.manual:
            self.people.open(run_id)
            return run_id
        try:
            remote_dir = self.remote.prepare(stage, run_id, env)
            self.runs.prepared(run_id, remote_dir)
            pid = self.remote.launch(stage.host, remote_dir)
        except SSHError as exc:
            self.moves.end_unstarted(run_id, RunState.FAILED, f"could not start: {exc}")
            self.moves.audit(user, "stage-failed", name, "error", {"reason": str(exc)})
            raise StageRefused(f"`{name}` could not start on `{stage.host}`: {exc}") from None
        self.moves.running(run_id, pid)
        self._follow(run_id)
        return run_id

    def wait(self, run_id: int, timeout: float | None = None) -> RunState:
        """The run's state once it has ended, or once the bot stops following it (stopping), or at ``timeout``."""
        return self.wait_any([run_id], timeout)[run_id]

    def wait_any(self, run_ids: list[int], timeout: float | None = None) -> dict[int, RunState]:
        """The states of ``run_ids`` once one of them has ended, the bot is stopping, or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.moves.ended:
            while True:
                runs = {rid: self.runs.get(rid) for rid in run_ids}
                states = {rid: run.state for rid, run in runs.items()}
                if not all(s.active for s in states.values()) or self.stopping.is_set():
                    return states
                with self._lock:
                    followed = any(rid in self._threads for rid in run_ids)
                if not followed and not any(run.owner for run in runs.values()):
                    return states  # nothing here follows these runs: their end is not coming to this process
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return states
                self.moves.ended.wait(0.5 if left is None else min(left, 0.5))

    def cancel(self, name: str, user: str) -> str:
        """Ask the host to stop the stage's run; until the host has it, the cancel is pending, not done."""
        stage = self.stage(name)
        if stage.manual:
            return self.people.cancel(name, user)
        run = self.runs.ask_stop(name, user)
        self.moves.audit(user, "stage-cancel", name, "asked", {"run": run.id})
        if run.pid is None:
            return f"`{name}` is still starting; it is stopped as soon as it runs, and its message says so."
        try:
            delivered = self.moves.deliver_stop(run.id)
        except SSHError as exc:
            return (f"Cancel of `{name}` is *pending*: `{stage.host}` does not answer ({exc}). The bot delivers it "
                    "as soon as the host answers; until then the stage may still be running. Its message and "
                    "`/cutover status` say when it has stopped.")
        if not delivered:
            return f"`{name}` had already ended on `{stage.host}` before the cancel reached it; its message says how."
        return (f"Stopping `{name}` on `{stage.host}` (process group {run.pid}): TERM now, KILL after "
                f"{CANCEL_GRACE} s if it is still running.")

    def latest_log(self, name: str) -> Run:
        """The stage's latest run, whose full log is on this bot's disk."""
        self.stage(name)
        run = self.runs.latest().get(name)
        if run is None:
            raise StageRefused(f"`{name}` has not run yet; there is no log.")
        if not self.logs.path(run.id).exists():
            raise StageRefused(f"the log of `{name}` (run {run.id}) is not on this bot's disk.")
        return run

    def send_log(self, name: str, user: str) -> Run | None:
        """Upload the latest full log of the stage to its run's thread; the run, or None if Slack refused."""
        run = self.latest_log(name)
        return run if self.logs.upload(run, user) is not None else None

    def resume(self) -> list[str]:
        """Re-attach to runs that were in flight when the bot stopped; finish the messages and uploads it missed."""
        notes = []
        for run in self.runs.active():
            if self.plan.step(run.stage) is None:
                self.moves.finish(run.id, RunState.LOST, None, "the stage is no longer in the plan")
                continue
            if run.owner:  # a person's step: still theirs, nothing to follow on a host
                if run.state == RunState.STARTING:
                    self.people.open(run.id)  # the bot stopped between claiming it and opening it
                continue
            notes.append(run.stage)
            self.moves.audit("cutover", "reattach", run.stage, "ok", {"offset": run.log_offset})
            if run.message_ts:
                self.notifier.post(f"Re-attached to `{run.stage}` after a bot restart; following its log from "
                                   f"byte {run.log_offset:,}.", thread_ts=run.message_ts)
            self._follow(run.id)
        for run in self.runs.unsettled():
            self.workers.submit(f"final message of run {run.id}", self.messages.show_final, run.id,
                                self.messages.final_view(run))
        for run in self.runs.not_uploaded():
            self.logs.upload_soon(run.id)
        return notes

    def stop(self) -> None:
        """Stop following (the stages themselves keep running on their hosts), and say so on each message.

        Bounded: a Slack that does not answer cannot hold the bot's exit beyond a few seconds.
        """
        self.stopping.set()
        following = self.followers.now()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(5)
        notes = [threading.Thread(target=f.left_running, name=f"left-running-{f.run_id}", daemon=True)
                 for f in following if f.view.active]
        for note in notes:
            note.start()
        deadline = time.monotonic() + STOP_NOTE_WAIT
        for note in notes:
            note.join(max(0.0, deadline - time.monotonic()))

    def stage(self, name: str) -> Stage:
        stage = self.plan.step(name)
        if stage is None:
            raise StageRefused(f"`{name}` is not a stage of the plan.")
        return stage

    # -- following ---------------------------------------------------------------------------------------

    def _follow(self, run_id: int) -> None:
        thread = threading.Thread(target=self._followed, args=(run_id,), name=f"follow-{run_id}", daemon=True)
        with self._lock:
            self._threads[run_id] = thread
        thread.start()

    def _followed(self, run_id: int) -> None:
        try:
            follow(self._kit, self.stage(self.runs.get(run_id).stage), run_id)
        except BaseException as exc:  # past follow's own retries: the watchdog says so and follows again
            death = record_death(f"following run {run_id}", exc)
            with self._lock:
                self._dead[run_id] = death
        finally:
            with self._lock:
                self._threads.pop(run_id, None)

    def watched_followers(self) -> list[Watched]:
        """The followers whose thread died while their run goes on, for the watchdog to say and restart."""
        with self._lock:
            dead = dict(self._dead)
        out = []
        for run_id, death in dead.items():
            run = self.runs.get(run_id)
            if self.stopping.is_set() or not run.active:
                with self._lock:
                    self._dead.pop(run_id, None)
                continue
            out.append(Watched(f"following `{run.stage}` (run {run_id})",
                               "its progress message, notable lines and final state",
                               dead=lambda death=death: death, revive=lambda run_id=run_id: self._refollow(run_id),
                               resumed=f"following it resumed at {{at}}, from byte {run.log_offset:,}"))
        return out

    def _refollow(self, run_id: int) -> None:
        with self._lock:
            self._dead.pop(run_id, None)
        self._follow(run_id)
