"""Following one stage run: tail the host's log into the local copy, keep its message current, settle its end.

Bytes reach the local copy and the stored offset in order, so a restart
resumes exactly where the last one stopped. A reporter thread coalesces the
message to at most one ``chat.update`` a second, whatever the output rate,
and posts notable lines to the thread. The exit file on the host decides
when the run has ended.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO

import paramiko

from bot import messages
from bot.durations import format_duration
from bot.notable_grep import GrepNotable, grep_available
from bot.output_scan import LAST_LINES, NOTABLE_LIMIT, OutputScanner
from bot.refusals import Refused
from bot.remote_run import RemoteState
from bot.ssh import SSHError
from bot.states import RunState
from bot.workers import error_ref

if TYPE_CHECKING:
    from bot.stages import StageRunner

log = logging.getLogger("cutover.follower")

FOLLOW_ATTEMPTS = 5
CHUNK = 4 << 20
UPDATE_INTERVAL = 1.0
OFFSET_SAVE_INTERVAL = 0.5
EXIT_CHECK_INTERVAL = 1.0


def follow(runner: "StageRunner", run_id: int) -> None:
    """Follow until the run ends; an unexpected error re-attaches from the stored offset, and says so."""
    for attempt in range(1, FOLLOW_ATTEMPTS + 1):
        try:
            Follower(runner, run_id).run()
            return
        except Exception:
            if runner.stopping.is_set():
                log.info("stopped following run %d: the bot is stopping (the run goes on on its host)", run_id)
                return
            ref = error_ref()
            log.exception("following run %d failed (ref %s, attempt %d)", run_id, ref, attempt)
            run = runner.row(run_id)
            last = attempt == FOLLOW_ATTEMPTS
            if run["message_ts"]:
                runner.notifier.post(
                    f"⚠️ Following `{run['stage']}` failed unexpectedly (ref {ref}); "
                    + ("giving up after several tries. The stage may still be running on "
                       f"`{run['host']}`; a bot restart re-attaches to it." if last else
                       "re-attaching from where it was. The stage itself is unaffected."),
                    thread_ts=run["message_ts"])
            if last or runner.stopping.wait(5):
                return


class Follower:
    def __init__(self, runner: "StageRunner", run_id: int) -> None:
        self.runner = runner
        self.run_id = run_id
        row = runner.row(run_id)
        self.stage = runner.stage(row["stage"])
        self.host = row["host"]
        self.remote_dir = row["remote_dir"]
        self.pid = row["pid"]
        self.offset = row["log_offset"]
        self.view = replace(runner.messages.view_of(row), state=RunState.RUNNING)
        self.grep = GrepNotable(runner.local_log(run_id), self.offset) \
            if self.stage.notable is None and grep_available() else None
        self.line_end = self.offset  # the end of the last complete line in the local copy
        self.scanner = OutputScanner(self.stage.progress, self.stage.notable, scan_notable=self.grep is None)
        self.notable: list[str] = []
        self.notable_overflow = False
        self._view_lock = threading.Lock()
        self.version = 0
        self.done = threading.Event()
        self.tail_done = threading.Event()
        self.reconnect = threading.Event()
        self.end: RemoteState | None = None
        self.saved_offset = self.offset
        self.last_save = time.monotonic()

    def run(self) -> None:
        runner = self.runner
        if self.remote_dir is None:
            runner.end_unstarted(self.run_id, RunState.LOST, "the bot stopped before starting it; nothing ran. "
                                                             "Start it again.")
            return
        if self.pid is None:
            pid = runner.remote.read_pid(self.host, self.remote_dir, wait=2.0)
            if pid is None:
                runner.end_unstarted(self.run_id, RunState.LOST, "the bot stopped while starting it, and it did "
                                                                 "not start. Start it again.")
                return
            runner.mark_running(self.run_id, pid)
            self.pid = pid
        path = runner.local_log(self.run_id)
        with path.open("ab") as f:
            f.truncate(self.offset)
        reporter = threading.Thread(target=self._report, name=f"report-{self.run_id}", daemon=True)
        reporter.start()
        try:
            with path.open("r+b", buffering=0) as local:  # unbuffered: grep reads what was written
                local.seek(self.offset)
                self._tail(local)
        finally:
            self.done.set()
            reporter.join(30)
        if not self.view.active:
            runner.messages.show_final(self.run_id, self.view)  # the final state first: the upload can take minutes
            runner.upload_final(self.run_id)

    # -- reading -------------------------------------------------------------------------------------

    def _tail(self, local: BinaryIO) -> None:
        """Read the log as it grows; the watcher thread says when the host has ended the run."""
        channel: paramiko.Channel | None = None
        backoff = 1.0
        watcher = threading.Thread(target=self._watch_end, name=f"watch-{self.run_id}", daemon=True)
        watcher.start()
        try:
            while not self.runner.stopping.is_set():
                end = self.end
                if end is not None and self.offset >= end.size:
                    break
                if self.reconnect.is_set():
                    self.reconnect.clear()
                    if channel is not None:
                        channel.close()
                        channel = None
                if channel is None:
                    try:
                        channel = self.runner.remote.tail(self.host, self.remote_dir, self.offset)
                        channel.settimeout(0.5)
                        if self.view.connection:
                            self._set(connection="")
                        backoff = 1.0
                    except SSHError as exc:
                        self._set(connection=f"lost the connection to `{self.host}`; retrying ({exc})")
                        self._save_offset(local, force=True)
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 15)
                        continue
                try:
                    data = self._read(channel)
                except TimeoutError:
                    data = None
                except OSError:
                    data = b""
                if data:
                    _write_all(local, data)
                    self.offset += len(data)
                    self._consume(data)
                    self._save_offset(local)
                elif data == b"" or channel.exit_status_ready():
                    channel.close()
                    channel = None
        finally:
            self.tail_done.set()
            watcher.join(10)
            if channel is not None:
                channel.close()
        self._save_offset(local, force=True)
        if self.end is not None and self.offset >= self.end.size:
            self._complete(self.end.exit_code)

    def _watch_end(self) -> None:
        """Ask the host once a second whether the run has ended, beside the reading, never in its way."""
        while self.end is None and not self.tail_done.wait(EXIT_CHECK_INTERVAL):
            try:
                self.end = self._check_end()
            except SSHError as exc:
                self._set(connection=f"lost the connection to `{self.host}`; retrying ({exc})")
                self.reconnect.set()

    @staticmethod
    def _read(channel: paramiko.Channel) -> bytes:
        """What the channel holds, up to CHUNK: one write, one scan and one offset per batch, not per packet."""
        first = channel.recv(CHUNK)
        if not first or not channel.recv_ready():
            return first
        parts, size = [first], len(first)
        while size < CHUNK and channel.recv_ready():
            more = channel.recv(CHUNK - size)
            if not more:
                break
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def _check_end(self) -> RemoteState | None:
        """The host's word once the run has ended; meanwhile, enforce the stage's timeout."""
        state = self.runner.remote.state(self.host, self.remote_dir, self.pid)
        if state.ended:
            return state
        timeout = self.stage.timeout
        if timeout and self.runner.clock.now() - self.view.started_at > timeout \
                and not self.runner.row(self.run_id)["cancel_reason"]:
            try:
                self.runner.cancel(self.stage.name, "cutover", reason="timed out")
            except Refused:
                pass  # it ended on its own meanwhile; the next check sees the exit file
        return None

    def _consume(self, data: bytes) -> None:
        cut = data.rfind(b"\n")
        if cut >= 0:
            self.line_end = self.offset - len(data) + cut + 1
        scan = self.scanner.feed(data)
        with self._view_lock:
            lines = (self.view.last_lines + scan.last_lines)[-LAST_LINES:] if scan.last_lines else self.view.last_lines
            progress = self.view.progress.seen(scan.progress, time.monotonic()) if scan.progress else self.view.progress
            self.view = replace(self.view, last_lines=lines, bytes=self.offset, progress=progress)
            self.notable.extend(scan.notable)
            self.notable_overflow = self.notable_overflow or scan.overflow
            self.version += 1

    def _set(self, **changes: object) -> None:
        with self._view_lock:
            self.view = replace(self.view, **changes)  # type: ignore[arg-type]
            self.version += 1

    def _save_offset(self, local: BinaryIO, force: bool = False) -> None:
        now = time.monotonic()
        if self.offset == self.saved_offset or (not force and now - self.last_save < OFFSET_SAVE_INTERVAL):
            return
        local.flush()
        with self.runner.store.transaction() as db:
            db["stage_runs"].update(self.run_id, {"log_offset": self.offset})
        self.saved_offset, self.last_save = self.offset, now

    # -- the end -------------------------------------------------------------------------------------------

    def _complete(self, exit_code: int | None) -> None:
        row = self.runner.row(self.run_id)
        last = self.scanner.flush()
        if last is not None:
            self._set(last_lines=(self.view.last_lines + (last,))[-LAST_LINES:])
        reason = row["cancel_reason"]
        stopped_by = row["cancelled_by"] if row["cancelled_by"] not in (None, "cutover") else None
        if reason == RunState.TIMED_OUT:
            limit = format_duration(self.stage.timeout) if self.stage.timeout else "set"
            state, detail = RunState.TIMED_OUT, f"stopped after its {limit} timeout"
        elif reason:
            state, detail = RunState(reason), "stopped"
        elif exit_code is None:
            state, detail = RunState.LOST, "its processes are gone and left no exit code (killed outside the bot?)"
        else:
            state, detail = (RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED), ""
        self.runner.finish(self.run_id, state, exit_code, detail + (f" by <@{stopped_by}>" if stopped_by else ""))
        self.runner.store.audit(row["started_by"], f"stage-{state.value.replace(' ', '-')}", row["stage"],
                                "ok" if state == RunState.SUCCEEDED else state.value,
                                {"run": self.run_id, "exit": exit_code})
        self._set(state=state, exit_code=exit_code, reason=detail, stopped_by=stopped_by,
                  ended_at=self.runner.clock.now())

    def _report(self) -> None:
        """Coalesce updates: at most one chat.update a second; notable lines to the thread, up to a cap.

        A progress message that could not be posted at the start is posted here as soon as Slack takes it.
        """
        notifier = self.runner.notifier
        shown = -1
        posted = 0
        overflow_said = False
        while True:
            finished = self.done.wait(UPDATE_INTERVAL)
            if self.grep is not None:
                self.grep.scan(self.offset if finished else self.line_end)
            ts = self.runner.messages.message_of(self.run_id, self.view)
            if ts is None:
                if finished:
                    return
                continue
            with self._view_lock:
                version, view = self.version, self.view
            found, overflow = (self.grep.lines, self.grep.overflow) if self.grep is not None \
                else (self.notable, self.notable_overflow)
            pending = found[posted:]
            if pending and notifier.post(f"Notable output from `{view.stage}`",
                                         messages.notable_message(view.stage, pending), thread_ts=ts):
                posted += len(pending)
            if overflow and not overflow_said:
                overflow_said = True
                notifier.post(f"More notable lines than the {NOTABLE_LIMIT} shown here; the full log is uploaded "
                              "to this thread when the stage ends.", thread_ts=ts)
            if finished:
                return
            if version != shown:
                shown = version
                self.runner.messages.show(self.run_id, ts, view)

def _write_all(local: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[local.write(view) or 0:]
