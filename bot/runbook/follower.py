"""Following one stage run: tail the host's log into the local copy, keep its message current, settle its end.

Bytes reach the local copy and the stored offset in order, so a restart
resumes exactly where the last one stopped. A reporter thread coalesces the
message to at most one ``chat.update`` a second, whatever the output rate,
and posts notable lines to the thread. The exit file on the host decides
when the run has ended.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Callable

import paramiko

from bot.clock import Clock
from bot.durations import format_duration
from bot.plan import Stage
from bot.runbook import blocks as stage_blocks
from bot.runbook.grep import GrepNotable, grep_available
from bot.runbook.logs import StageLogs
from bot.runbook.messages import RunMessages, stopping_note
from bot.runbook.moves import RunMoves
from bot.runbook.remote import RemoteRuns, RemoteState
from bot.runbook.runs import Runs
from bot.runbook.scan import LAST_LINES, NOTABLE_LIMIT, OutputScanner
from bot.slackapi.notifier import Notifier
from bot.ssh import SSHError
from bot.states import RunState, StopState
from bot.threads import Death, record_death
from bot.workers import error_ref

log = logging.getLogger("cutover.follower")

RETRY_FIRST = 5.0
RETRY_MOST = 60.0
LINGER_QUIET = 3.0  # after the command exits, follow until its log has been still this long
LINGER_MOST = 60.0  # and at most this long while processes it started run on
CHUNK = 4 << 20
UPDATE_INTERVAL = 1.0
OFFSET_SAVE_INTERVAL = 0.5
EXIT_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class FollowKit:
    """What following a run uses, handed in by the runner: the record, the moves the host's word makes, the
    message, the host's protocol, the local log, and where the followers are listed."""

    runs: Runs
    moves: RunMoves
    messages: RunMessages
    remote: RemoteRuns
    logs: StageLogs
    notifier: Notifier
    clock: Clock
    stopping: threading.Event
    followers: "Followers"


class Followers:
    """The followers following now, so that a stopping bot can say on each run's message that it goes on."""

    def __init__(self) -> None:
        self._followers: dict[int, Follower] = {}
        self._lock = threading.Lock()

    def attach(self, follower: "Follower") -> None:
        with self._lock:
            self._followers[follower.run_id] = follower

    def detach(self, follower: "Follower") -> None:
        with self._lock:
            if self._followers.get(follower.run_id) is follower:
                del self._followers[follower.run_id]

    def now(self) -> list["Follower"]:
        with self._lock:
            return list(self._followers.values())


def follow(kit: FollowKit, stage: Stage, run_id: int) -> None:
    """Follow until the run ends. An error here (a full disk, a bug) never ends the following: it is said in the
    message and the thread, and following starts again from the stored offset, with backoff, for as long as the
    run is active."""
    delay = RETRY_FIRST
    said: str | None = None
    while True:
        try:
            Follower(kit, stage, run_id, trouble=said).run()
            return
        except Exception as exc:
            if kit.stopping.is_set():
                log.info("stopped following run %d: the bot is stopping (the run goes on on its host)", run_id)
                return
            ref = error_ref()
            reason = _why(exc, ref)
            log.exception("following run %d failed (ref %s); retrying in %.0f s", run_id, ref, delay)
            run = kit.runs.get(run_id)
            if not run.active:
                kit.moves.settle(run_id)
                return
            if run.message_ts:
                if reason != said:
                    kit.notifier.post(
                        f"⚠️ Following `{run.stage}` stopped: {reason}. The stage itself goes on on "
                        f"`{run.host}`; the bot tries again with growing pauses (up to "
                        f"{format_duration(RETRY_MOST)}) and picks up the log from byte {run.log_offset:,}.",
                        thread_ts=run.message_ts)
                kit.messages.show(run_id, run.message_ts, replace(
                    kit.messages.view_of(run),
                    connection=f"following stopped: {reason}; trying again in {format_duration(delay)}"))
            said = reason
            if kit.stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_MOST)


def _why(exc: Exception, ref: str) -> str:
    """What stopped the following, in words for the channel."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the bot's disk for the log"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS):
        return "the bot may not write its copy of the log"
    return f"an unexpected error in the bot (ref {ref})"


class Follower:
    def __init__(self, kit: FollowKit, stage: Stage, run_id: int, trouble: str | None = None) -> None:
        self.kit = kit
        self.run_id = run_id
        run = kit.runs.get(run_id)
        self.stage = stage
        self.host = run.host
        self.remote_dir = run.remote_dir
        self.pid = run.pid
        self.offset = run.log_offset
        self.view = replace(kit.messages.view_of(run), state=RunState.RUNNING)
        self.grep = GrepNotable(kit.logs.path(run_id), self.offset) \
            if self.stage.notable is None and grep_available() else None
        self.line_end = self.offset  # the end of the last complete line in the local copy
        self.said_until = 0  # the log was followed (and its notable lines posted) up to here before
        self.scanner = OutputScanner(self.stage.progress, self.stage.notable, scan_notable=self.grep is None)
        self.notable: list[str] = []
        self.notable_overflow = False
        self._view_lock = threading.Lock()
        self.version = 0
        self.done = threading.Event()
        self.tail_done = threading.Event()
        self.reconnect = threading.Event()
        self.end: RemoteState | None = None
        self.ended_at: datetime | None = None  # when the command ended, by the host's clock, in ours
        self.outlived = False  # processes the command started were still running when following ended
        self._linger: tuple[float, float, int] | None = None  # since, still since, size
        self.trouble = trouble
        self.saved_offset = self.offset
        self.last_save = time.monotonic()
        self.helper_died: Death | None = None
        self.start_noted = run.host_started_at is not None

    def run(self) -> None:
        self.kit.followers.attach(self)
        try:
            self._run()
        finally:
            self.kit.followers.detach(self)

    def left_running(self) -> None:
        """The bot is stopping: the message says the stage goes on without it, and how it will catch up."""
        ts = self.kit.runs.get(self.run_id).message_ts
        log.info("run %d of %s keeps running on %s while the bot is away", self.run_id, self.stage.name, self.host)
        if ts and not self.kit.messages.show(self.run_id, ts, replace(self.view, connection=(
                f"the bot stopped (a restart or a deploy); the stage keeps running on `{self.host}`, and the bot "
                "picks up its log where it left off when it is back"))):
            log.warning("run %d of %s: Slack did not take the note that the bot stopped; its message shows the "
                        "stage as it was last followed until the bot is back", self.run_id, self.stage.name)

    def _run(self) -> None:
        kit = self.kit
        if self.remote_dir is None:
            kit.moves.end_unstarted(self.run_id, RunState.LOST, "the bot stopped before starting it; nothing ran. "
                                                             "Start it again.")
            return
        if self.pid is None:
            pid = kit.remote.read_pid(self.host, self.remote_dir, wait=2.0)
            if pid is None:
                kit.moves.end_unstarted(self.run_id, RunState.LOST, "the bot stopped while starting it, and it did "
                                                                 "not start. Start it again.")
                return
            kit.moves.running(self.run_id, pid)
            self.pid = pid
        path = kit.logs.path(self.run_id)
        have = path.stat().st_size if path.exists() else 0
        if have < self.offset:  # the local copy is gone (a database restored on another machine): fetch it all
            log.info("run %d of %s: the local log has %d of %d bytes; reading it from the host from the start",
                     self.run_id, self.stage.name, have, self.offset)
            self.said_until, self.offset, self.line_end = self.offset, 0, 0
            if self.grep is not None:
                self.grep = GrepNotable(path, self.said_until)  # what was before was said already
        with path.open("ab") as f:
            f.truncate(self.offset)
        reporter = threading.Thread(target=self._helper(self._report), name=f"report-{self.run_id}", daemon=True)
        reporter.start()
        try:
            with path.open("r+b", buffering=0) as local:  # unbuffered: grep reads what was written
                local.seek(self.offset)
                self._tail(local)
        finally:
            self.done.set()
            reporter.join(30)
        if not self.view.active:
            kit.messages.show_final(self.run_id, self.view)  # the final state first: the upload can take minutes
            kit.logs.upload_soon(self.run_id)

    # -- reading -------------------------------------------------------------------------------------

    def _tail(self, local: BinaryIO) -> None:
        """Read the log as it grows; the watcher thread says when the host has ended the run."""
        channel: paramiko.Channel | None = None
        backoff = 1.0
        watcher = threading.Thread(target=self._helper(self._watch_end), name=f"watch-{self.run_id}", daemon=True)
        watcher.start()
        try:
            while not self.kit.stopping.is_set():
                if self.helper_died is not None:  # following starts over, with the retries of any failure
                    raise RuntimeError(f"a thread of the follower stopped ({self.helper_died.why})")
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
                        channel = self.kit.remote.tail(self.host, self.remote_dir, self.offset)
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
                    if self.trouble is not None:
                        self.trouble = None
                        self._say(f"Following `{self.stage.name}` again, from byte {self.offset:,}.")
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
            self._complete(self.end)

    def _helper(self, target: Callable[[], None]) -> Callable[[], None]:
        """A thread of this follower (the reporter, the exit watcher) whose death ends the following, so that it
        is said and started again instead of leaving a message that no longer moves."""
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.helper_died = record_death(threading.current_thread().name, exc)

        return run

    def _watch_end(self) -> None:
        """Ask the host once a second how the run stands, beside the reading, never in its way. A cancel that
        could not reach the host yet is delivered here, as soon as the host answers."""
        while self.end is None and not self.tail_done.wait(EXIT_CHECK_INTERVAL):
            try:
                state = self.kit.remote.state(self.host, self.remote_dir, self.pid)
                self._note_start(state)
                self._deliver_stop()
            except SSHError as exc:
                self._set(connection=f"lost the connection to `{self.host}`; retrying ({exc})")
                self.reconnect.set()
                continue
            self.end = self._settled(state)

    def _note_start(self, state: RemoteState) -> None:
        """When the command started, by its host's clock: the moment of a copy is the copy stage's start."""
        if state.started is not None and not self.start_noted:
            self.kit.runs.host_started(self.run_id, datetime.fromtimestamp(state.started, timezone.utc))
            self.start_noted = True

    def _deliver_stop(self) -> None:
        if self.kit.runs.get(self.run_id).stop_state == StopState.PENDING:
            self.kit.moves.deliver_stop(self.run_id)

    def _settled(self, state: RemoteState) -> RemoteState | None:
        """The state to end on, once the run has ended and its log has had its last word; else None.

        When the command exits but processes it started live on, the log is followed until it has been still
        for LINGER_QUIET (at most LINGER_MOST), and the message says they outlived it.
        """
        if not state.ended:
            return None
        now = time.monotonic()
        if state.exited and state.group_alive:
            since, still_since, size = self._linger or (now, now, state.size)
            if state.size != size:
                still_since, size = now, state.size
            self._linger = (since, still_since, size)
            if now - still_since < LINGER_QUIET and now - since < LINGER_MOST:
                if not self.view.connection:
                    self._set(connection=f"the command exited ({state.exit_code}); processes it started still "
                                         "run, and their output is followed until it stops")
                return None
            self.outlived = True
        ago = state.ended_ago if state.ended_ago is not None else 0
        self.ended_at = self.kit.clock.now() - timedelta(seconds=ago)
        return state

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

    def _consume(self, data: bytes) -> None:
        cut = data.rfind(b"\n")
        if cut >= 0:
            self.line_end = self.offset - len(data) + cut + 1
        scan = self.scanner.feed(data)
        with self._view_lock:
            lines = (self.view.last_lines + scan.last_lines)[-LAST_LINES:] if scan.last_lines else self.view.last_lines
            progress = self.view.progress.seen(scan.progress, time.monotonic()) if scan.progress else self.view.progress
            self.view = replace(self.view, last_lines=lines, bytes=self.offset, progress=progress)
            if self.offset > self.said_until:  # notable lines read again after a restore were posted already
                self.notable.extend(scan.notable)
            self.notable_overflow = self.notable_overflow or scan.overflow
            self.version += 1

    def _say(self, text: str) -> None:
        ts = self.kit.runs.get(self.run_id).message_ts
        if ts:
            self.kit.notifier.post(text, thread_ts=ts)

    def _set(self, **changes: object) -> None:
        with self._view_lock:
            self.view = replace(self.view, **changes)  # type: ignore[arg-type]
            self.version += 1

    def _save_offset(self, local: BinaryIO, force: bool = False) -> None:
        now = time.monotonic()
        if self.offset == self.saved_offset or (not force and now - self.last_save < OFFSET_SAVE_INTERVAL):
            return
        local.flush()
        self.kit.runs.offset(self.run_id, self.offset)
        self.saved_offset, self.last_save = self.offset, now

    # -- the end -------------------------------------------------------------------------------------------

    def _complete(self, end: RemoteState) -> None:
        """Record how the run ended, as the host says: its exit code, and whether a stop reached it."""
        run = self.kit.runs.get(self.run_id)
        last = self.scanner.flush()
        if last is not None:
            self._set(last_lines=(self.view.last_lines + (last,))[-LAST_LINES:])
        stopped_by = None
        if end.stop == RunState.TIMED_OUT:
            limit = format_duration(self.stage.timeout) if self.stage.timeout else "set"
            state, detail = RunState.TIMED_OUT, f"stopped after its {limit} timeout"
        elif end.stop == RunState.CANCELLED:
            state, detail, stopped_by = RunState.CANCELLED, "stopped", run.cancelled_by
        elif end.exit_code is None:
            state, detail = RunState.LOST, "its processes are gone and left no exit code (killed outside the bot?)"
        else:
            state, detail = (RunState.SUCCEEDED if end.exit_code == 0 else RunState.FAILED), ""
            if run.cancelled_by:
                detail = f"it ended before the cancel by <@{run.cancelled_by}> reached `{self.host}`"
        if self.outlived:
            detail = "; ".join(filter(None, [detail, f"processes it started still run on `{self.host}` (process "
                                                     f"group {self.pid}); the full log stops where they were left"]))
        self.kit.moves.finish(self.run_id, state, end.exit_code,
                              detail + (f" by <@{stopped_by}>" if stopped_by else ""), ended_at=self.ended_at)
        self.kit.moves.audit(run.started_by, f"stage-{state.value.replace(' ', '-')}", run.stage,
                                "ok" if state == RunState.SUCCEEDED else state.value,
                                {"run": self.run_id, "exit": end.exit_code, "outlived": self.outlived})
        self._set(state=state, exit_code=end.exit_code, reason=detail, stopped_by=stopped_by,
                  ended_at=self.ended_at or self.kit.clock.now(), connection="", stopping="")

    def _report(self) -> None:
        """Coalesce updates: at most one chat.update a second; notable lines to the thread, up to a cap.

        A progress message that could not be posted at the start is posted here as soon as Slack takes it.
        """
        notifier = self.kit.notifier
        shown = -1
        posted = 0
        overflow_said = False
        while True:
            finished = self.done.wait(UPDATE_INTERVAL)
            if self.grep is not None:
                self.grep.scan(self.offset if finished else self.line_end)
            run = self.kit.runs.get(self.run_id)
            if not finished:
                stopping = stopping_note(run)
                if stopping != self.view.stopping:
                    self._set(stopping=stopping)
            ts = self.kit.messages.message_of(run, self.view)
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
                                         stage_blocks.notable_message(view.stage, pending), thread_ts=ts):
                posted += len(pending)
            if overflow and not overflow_said:
                overflow_said = True
                notifier.post(f"More notable lines than the {NOTABLE_LIMIT} shown here; the full log is uploaded "
                              "to this thread when the stage ends.", thread_ts=ts)
            if finished:
                return
            if version != shown:
                shown = version
                self.kit.messages.show(self.run_id, ts, view)




def _write_all(local: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[local.write(view) or 0:]
