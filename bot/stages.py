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
from datetime import datetime
from pathlib import Path

from bot import messages
from bot.clock import Clock
from bot.deaths import Death, record_death
from bot.durations import format_duration
from bot.follower import Follower, follow
from bot.notifier import Notifier
from bot.people_steps import PeopleSteps
from bot.plan import Plan, Stage
from bot.redact import Redactor
from bot.refusals import Refused
from bot.remote_run import CANCEL_GRACE, RemoteRuns, StopNotYet
from bot.ssh import SSHError, SSHPool
from bot.stage_logs import StageLogs
from bot.stage_message import RunMessages
from bot.states import ACTIVE_RUNS, RunState, StopState, sql_in
from bot.store import Store
from bot.watchdog import Watched
from bot.workers import Workers, error_ref

log = logging.getLogger("cutover.stages")

UPLOAD_RETRY_FIRST = 10.0
UPLOAD_RETRY_MOST = 300.0
UPLOAD_GIVE_UP = 3600.0
STOP_NOTE_WAIT = 5.0


class StageRefused(Refused):
    """Why a stage cannot start or stop now, worded for the operator."""


class StageRunner:
    def __init__(self, plan: Plan, store: Store, notifier: Notifier, clock: Clock, ssh: SSHPool,
                 workers: Workers, redactor: Redactor, log_dir: Path) -> None:
        self.plan = plan
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.ssh = ssh
        self.remote = RemoteRuns(ssh)
        self.workers = workers
        self.stopping = threading.Event()
        self.logs = StageLogs(log_dir, redactor, notifier)
        self.messages = RunMessages(store, notifier, clock, plan.people.channel, self.stopping, plan)
        self.people = PeopleSteps(self)
        self._ended = threading.Condition()  # notified whenever a run ends, for those waiting on any of several
        self._followers: dict[int, threading.Thread] = {}
        self.following: dict[int, Follower] = {}  # the Follower of each run being followed now
        self._dead: dict[int, Death] = {}  # runs whose follower's thread died, until the watchdog restarts it
        self._lock = threading.Lock()

    # -- operations (called from the worker pool) ------------------------------------------------

    def start(self, name: str, user: str) -> int:
        """Start one stage; returns its run id once it is running on the host. Raises StageRefused."""
        stage = self.stage(name)
        run_id = self._claim(stage, user)
        view = self.messages.view_of(self.row(run_id))
        ts = self.notifier.post(messages.stage_text(view), messages.stage_message(view, time.monotonic(),
                                                                                  self.clock.now()))
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"message_ts": ts, "channel": self.plan.people.channel})
        if stage.manual:
            self.people.open(run_id)
            return run_id
        try:
            remote_dir = self.remote.prepare(stage, run_id)
            with self.store.transaction() as db:
                db["stage_runs"].update(run_id, {"remote_dir": remote_dir})
            pid = self.remote.launch(stage.host, remote_dir)
        except SSHError as exc:
            self.end_unstarted(run_id, RunState.FAILED, f"could not start: {exc}")
            self.store.audit(user, "stage-failed", name, "error", {"reason": str(exc)})
            raise StageRefused(f"`{name}` could not start on `{stage.host}`: {exc}") from None
        self.mark_running(run_id, pid)
        self._follow(run_id)
        return run_id

    def wait(self, run_id: int, timeout: float | None = None) -> RunState:
        """The run's state once it has ended, or once the bot stops following it (stopping), or at ``timeout``."""
        return self.wait_any([run_id], timeout)[run_id]

    def wait_any(self, run_ids: list[int], timeout: float | None = None) -> dict[int, RunState]:
        """The states of ``run_ids`` once one of them has ended, the bot is stopping, or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ended:
            while True:
                states = {rid: RunState(self.row(rid)["state"]) for rid in run_ids}
                if not all(s.active for s in states.values()) or self.stopping.is_set():
                    return states
                with self._lock:
                    followed = any(rid in self._followers for rid in run_ids)
                if not followed and not any(self.row(rid)["owner"] for rid in run_ids):
                    return states  # nothing here follows these runs: their end is not coming to this process
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return states
                self._ended.wait(0.5 if left is None else min(left, 0.5))

    def ended(self) -> None:
        """A run has ended: wake whoever waits on it."""
        with self._ended:
            self._ended.notify_all()

    def cancel(self, name: str, user: str) -> str:
        """Ask the host to stop the stage's run; until the host has it, the cancel is pending, not done."""
        stage = self.stage(name)
        if stage.manual:
            return self.people.cancel(name, user)
        with self.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [name]))
            if not rows:
                raise StageRefused(f"`{name}` is not running.")
            run = rows[0]
            if run["stop_state"] in (StopState.PENDING, StopState.SENT):
                who = f"<@{run['cancelled_by']}>"
                raise StageRefused(f"`{name}` is already being stopped (asked by {who}); "
                                   + ("the host has the stop." if run["stop_state"] == StopState.SENT else
                                      f"`{stage.host}` has not answered yet, and gets the stop when it does."))
            db["stage_runs"].update(run["id"], {"cancel_reason": RunState.CANCELLED.value, "cancelled_by": user,
                                                "stop_state": StopState.PENDING.value})
        self.store.audit(user, "stage-cancel", name, "asked", {"run": run["id"]})
        if run["pid"] is None:
            return f"`{name}` is still starting; it is stopped as soon as it runs, and its message says so."
        try:
            delivered = self.deliver_stop(run["id"])
        except SSHError as exc:
            return (f"Cancel of `{name}` is *pending*: `{stage.host}` does not answer ({exc}). The bot delivers it "
                    "as soon as the host answers; until then the stage may still be running. Its message and "
                    "`/cutover status` say when it has stopped.")
        if not delivered:
            return f"`{name}` had already ended on `{stage.host}` before the cancel reached it; its message says how."
        return (f"Stopping `{name}` on `{stage.host}` (process group {run['pid']}): TERM now, KILL after "
                f"{CANCEL_GRACE} s if it is still running.")

    def deliver_stop(self, run_id: int) -> bool:
        """Carry a pending cancel to the host. True if it reached the live run, False if the run had ended.

        Raises SSHError while the host does not answer (the cancel stays pending).
        """
        run = self.row(run_id)
        try:
            sent = self.remote.stop(run["host"], run["remote_dir"], RunState.CANCELLED.value)
        except StopNotYet:
            return True  # the follower delivers it once the pid file is there
        state = StopState.SENT if sent else StopState.TOO_LATE
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"stop_state": state.value})
        self.store.audit(run["cancelled_by"] or "cutover", "stage-stop-delivered", run["stage"], state.value,
                         {"run": run_id})
        return sent

    def latest_log(self, name: str) -> tuple[dict, Path]:
        self.stage(name)
        run = self.store.latest_runs().get(name)
        if run is None:
            raise StageRefused(f"`{name}` has not run yet; there is no log.")
        path = self.local_log(run["id"])
        if not path.exists():
            raise StageRefused(f"the log of `{name}` (run {run['id']}) is not on this bot's disk.")
        return run, path

    def upload_log(self, run: dict, path: Path, user: str | None = None) -> str | None:
        """Upload a run's log to its thread; once an ended run's log is there, it is not uploaded again."""
        file_id = self.logs.upload(run, path, user)
        if file_id is not None and not RunState(run["state"]).active:
            with self.store.transaction() as db:
                db["stage_runs"].update(run["id"], {"log_uploaded": 1})
        return file_id

    def resume(self) -> list[str]:
        """Re-attach to runs that were in flight when the bot stopped; finish uploads it missed."""
        notes = []
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state IN {sql_in(ACTIVE_RUNS)}"):
            if self.plan.stage(run["stage"]) is None:
                self.finish(run["id"], RunState.LOST, None, "the stage is no longer in the plan")
                continue
            if run["owner"]:  # a person's step: still theirs, nothing to follow on a host
                if run["state"] == RunState.STARTING:
                    self.people.open(run["id"])  # the bot stopped between claiming it and opening it
                continue
            notes.append(run["stage"])
            self.store.audit("cutover", "reattach", run["stage"], "ok", {"offset": run["log_offset"]})
            if run["message_ts"]:
                self.notifier.post(f"Re-attached to `{run['stage']}` after a bot restart; following its log from "
                                   f"byte {run['log_offset']:,}.", thread_ts=run["message_ts"])
            self._follow(run["id"])
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state NOT IN {sql_in(ACTIVE_RUNS)} "
                                    "AND (message_final = 0 OR message_doubt = 1)"):
            self.workers.submit(f"final message of run {run['id']}", self.messages.show_final, run["id"],
                                self.messages.final_view(run))
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state NOT IN {sql_in(ACTIVE_RUNS)} "
                                    "AND log_uploaded = 0 AND message_ts IS NOT NULL"):
            self.upload_soon(run["id"])
        return notes

    def stop(self) -> None:
        """Stop following (the stages themselves keep running on their hosts), and say so on each message.

        Bounded: a Slack that does not answer cannot hold the bot's exit beyond a few seconds.
        """
        self.stopping.set()
        with self._lock:
            following = list(self.following.values())
        for thread in list(self._followers.values()):
            thread.join(5)
        notes = [threading.Thread(target=f.left_running, name=f"left-running-{f.run_id}", daemon=True)
                 for f in following if f.view.active]
        for note in notes:
            note.start()
        deadline = time.monotonic() + STOP_NOTE_WAIT
        for note in notes:
            note.join(max(0.0, deadline - time.monotonic()))

    # -- what the follower uses ---------------------------------------------------------------------

    def attach(self, follower: Follower) -> None:
        with self._lock:
            self.following[follower.run_id] = follower

    def detach(self, follower: Follower) -> None:
        with self._lock:
            if self.following.get(follower.run_id) is follower:
                del self.following[follower.run_id]

    def stage(self, name: str) -> Stage:
        stage = self.plan.stage(name)
        if stage is None:
            raise StageRefused(f"`{name}` is not a stage of the plan.")
        return stage

    def row(self, run_id: int) -> dict:
        return self.store.get("stage_runs", run_id)

    def local_log(self, run_id: int) -> Path:
        return self.logs.path(run_id)

    def mark_running(self, run_id: int, pid: int) -> None:
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"state": RunState.RUNNING.value, "pid": pid})
        run = self.row(run_id)
        self.store.audit(run["started_by"], "stage-started", run["stage"], "ok",
                         {"run": run_id, "host": run["host"], "pid": pid})
        if run["stop_state"] == StopState.PENDING:
            try:
                self.deliver_stop(run_id)
            except SSHError as exc:
                log.warning("the cancel of run %d is still pending: %s", run_id, exc)

    def end_unstarted(self, run_id: int, state: RunState, reason: str) -> None:
        """End a run that never ran on its host, and make its message say so."""
        self.finish(run_id, state, None, reason)
        row = self.row(run_id)
        if row["message_ts"] and self.messages.show(run_id, row["message_ts"], self.messages.final_view(row)):
            self.messages.recorded_final(run_id)

    def finish(self, run_id: int, state: RunState, exit_code: int | None, detail: str = "",
               ended_at: datetime | None = None) -> None:
        """Record how a run ended; ``ended_at`` is when it ended on its host, if known, else now."""
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"state": state.value, "exit_code": exit_code, "detail": detail or None,
                                             "ended_at": (ended_at or self.clock.now()).isoformat()})
        self.ended()

    def settle_ended(self, run_id: int) -> None:
        """Bring an ended run's message to its final state, then its log to its thread (both retried)."""
        self.messages.show_final(run_id, self.messages.final_view(self.row(run_id)))
        self.upload_soon(run_id)

    def upload_soon(self, run_id: int) -> None:
        """Upload an ended run's log on a thread of its own: a late upload never holds up what comes next."""
        def upload() -> None:
            try:
                self.upload_final(run_id)
            except Exception:
                log.exception("uploading the log of run %d failed (ref %s)", run_id, error_ref())

        threading.Thread(target=upload, name=f"upload-{run_id}", daemon=True).start()

    def upload_final(self, run_id: int) -> None:
        """Upload an ended run's log to its thread, retrying with growing pauses until Slack takes it.

        The first failure is said in the thread ("late"), so nobody waits for a log that is not coming; after
        UPLOAD_GIVE_UP the thread is told how to ask for it.
        """
        delay, late_since = UPLOAD_RETRY_FIRST, None
        while True:
            run = self.row(run_id)
            path = self.local_log(run_id)
            if run["log_uploaded"] or not path.exists():
                return
            try:
                uploaded = self.upload_log(run, path) is not None
                why = self.notifier.last_error()
            except OSError as exc:
                uploaded, why = False, f"the bot could not prepare it ({exc.strerror or exc})"
            if uploaded:
                return
            now = time.monotonic()
            if late_since is None:
                late_since = now
                log.warning("the log of run %d did not upload (%s); retrying in %.0f s", run_id, why, delay)
                self.notifier.post(f"⏳ The full log of `{run['stage']}` is late: the upload failed ({why}). "
                                   "The bot keeps trying; it appears here when Slack takes it.",
                                   thread_ts=run["message_ts"])
            elif now - late_since > UPLOAD_GIVE_UP:
                self.notifier.post(f"The full log of `{run['stage']}` could not be uploaded for "
                                   f"{format_duration(UPLOAD_GIVE_UP)} ({why}); the bot has stopped trying. "
                                   f"`/cutover logs {run['stage']}` uploads it when Slack is back.",
                                   thread_ts=run["message_ts"])
                return
            if self.stopping.wait(delay):
                return  # a restart takes it up again
            delay = min(delay * 2, UPLOAD_RETRY_MOST)

    # -- inside ------------------------------------------------------------------------------------------

    def _claim(self, stage: Stage, user: str) -> int:
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

    def _follow(self, run_id: int) -> None:
        thread = threading.Thread(target=self._followed, args=(run_id,), name=f"follow-{run_id}", daemon=True)
        with self._lock:
            self._followers[run_id] = thread
        thread.start()

    def _followed(self, run_id: int) -> None:
        try:
            follow(self, run_id)
        except BaseException as exc:  # past follow's own retries: the watchdog says so and follows again
            death = record_death(f"following run {run_id}", exc)
            with self._lock:
                self._dead[run_id] = death
        finally:
            with self._lock:
                self._followers.pop(run_id, None)

    def watched_followers(self) -> list[Watched]:
        """The followers whose thread died while their run goes on, for the watchdog to say and restart."""
        with self._lock:
            dead = dict(self._dead)
        out = []
        for run_id, death in dead.items():
            run = self.row(run_id)
            if self.stopping.is_set() or not RunState(run["state"]).active:
                with self._lock:
                    self._dead.pop(run_id, None)
                continue
            out.append(Watched(f"following `{run['stage']}` (run {run_id})",
                               "its progress message, notable lines and final state",
                               dead=lambda death=death: death, revive=lambda run_id=run_id: self._refollow(run_id),
                               resumed=f"following it resumed at {{at}}, from byte {run['log_offset']:,}"))
        return out

    def _refollow(self, run_id: int) -> None:
        with self._lock:
            self._dead.pop(run_id, None)
        self._follow(run_id)
