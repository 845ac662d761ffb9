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

from bot import messages
from bot.clock import Clock
from bot.follower import follow
from bot.notifier import Notifier
from bot.plan import Plan, Stage
from bot.redact import Redactor
from bot.refusals import Refused
from bot.remote_run import RemoteRuns
from bot.ssh import SSHError, SSHPool
from bot.stage_logs import StageLogs
from bot.stage_message import RunMessages
from bot.states import ACTIVE_RUNS, RunState, sql_in
from bot.store import Store
from bot.workers import Workers

log = logging.getLogger("cutover.stages")



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
        self.messages = RunMessages(store, notifier, clock, plan.people.channel, self.stopping)
        self.stopping = threading.Event()
        self._followers: dict[int, threading.Thread] = {}
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
        thread = self._followers.get(run_id)
        if thread is not None:
            thread.join(timeout)
        return RunState(self.row(run_id)["state"])

    def cancel(self, name: str, user: str, reason: str = "cancelled") -> str:
        stage = self.stage(name)
        with self.store.transaction() as db:
            rows = list(db["stage_runs"].rows_where(f"stage = ? AND state IN {sql_in(ACTIVE_RUNS)}", [name]))
            if not rows:
                raise StageRefused(f"`{name}` is not running.")
            run = rows[0]
            db["stage_runs"].update(run["id"], {"cancel_reason": reason, "cancelled_by": user})
        if run["pid"] is None:
            return f"`{name}` is still starting; it will be stopped as soon as it runs."
        self.stop_group(stage.host, run)
        return f"Stopping `{name}` on `{stage.host}` (process group {run['pid']})."

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
        return self.logs.upload(run, path, user)

    def resume(self) -> list[str]:
        """Re-attach to runs that were in flight when the bot stopped; finish uploads it missed."""
        notes = []
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state IN {sql_in(ACTIVE_RUNS)}"):
            if self.plan.stage(run["stage"]) is None:
                self.finish(run["id"], RunState.LOST, None, "the stage is no longer in the plan")
                continue
            notes.append(run["stage"])
            self.store.audit("cutover", "reattach", run["stage"], "ok", {"offset": run["log_offset"]})
            if run["message_ts"]:
                self.notifier.post(f"Re-attached to `{run['stage']}` after a bot restart; following its log from "
                                   f"byte {run['log_offset']:,}.", thread_ts=run["message_ts"])
            self._follow(run["id"])
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state NOT IN {sql_in(ACTIVE_RUNS)} "
                                    "AND message_final = 0"):
            self.workers.submit(f"final message of run {run['id']}", self.messages.show_final, run["id"],
                                self.messages.final_view(run))
        for run in self.store.query(f"SELECT * FROM stage_runs WHERE state NOT IN {sql_in(ACTIVE_RUNS)} "
                                    "AND log_uploaded = 0 AND message_ts IS NOT NULL"):
            self.workers.submit(f"log upload of run {run['id']}", self.upload_final, run["id"])
        return notes

    def stop(self) -> None:
        """Stop following (the stages themselves keep running on their hosts)."""
        self.stopping.set()
        for thread in list(self._followers.values()):
            thread.join(5)

    # -- what the follower uses ---------------------------------------------------------------------

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
        if run["cancel_reason"]:
            self.stop_group(run["host"], run)

    def stop_group(self, host: str, run: dict) -> None:
        """TERM the run's process group now; KILL what is left of it after the grace period."""
        self.remote.stop_group(host, int(run["pid"]), lambda fn: self.workers.submit(
            f"escalating the stop of run {run['id']}", fn))

    def end_unstarted(self, run_id: int, state: RunState, reason: str) -> None:
        """End a run that never ran on its host, and make its message say so."""
        self.finish(run_id, state, None, reason)
        row = self.row(run_id)
        if row["message_ts"] and self.messages.show(run_id, row["message_ts"], self.messages.final_view(row)):
            self.messages.recorded_final(run_id)

    def finish(self, run_id: int, state: RunState, exit_code: int | None, detail: str = "") -> None:
        with self.store.transaction() as db:
            db["stage_runs"].update(run_id, {"state": state.value, "exit_code": exit_code, "detail": detail or None,
                                             "ended_at": self.clock.now().isoformat()})

    def upload_final(self, run_id: int) -> None:
        run = self.row(run_id)
        if run["log_uploaded"]:
            return
        path = self.local_log(run_id)
        if not path.exists():
            return
        if self.upload_log(run, path) is not None:
            with self.store.transaction() as db:
                db["stage_runs"].update(run_id, {"log_uploaded": 1})

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
                                            "started_at": now}).last_pk

    def _follow(self, run_id: int) -> None:
        thread = threading.Thread(target=self._followed, args=(run_id,), name=f"follow-{run_id}", daemon=True)
        with self._lock:
            self._followers[run_id] = thread
        thread.start()

    def _followed(self, run_id: int) -> None:
        try:
            follow(self, run_id)
        finally:
            with self._lock:
                self._followers.pop(run_id, None)
