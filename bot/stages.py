"""Stages of the deploy script, run detached on their hosts and followed from a stored byte offset.

A stage is started under ``setsid`` by a small wrapper script the bot writes
on the host: its output goes to a log file there, its exit code to a file
written by rename when it ends. The stage outlives the SSH connection and the
bot. The bot follows the remote log from the byte offset stored in SQLite and
keeps a local copy truncated to that offset on every (re)attach, so after a
reconnect or a restart no byte is lost and none is taken twice. Completion is
decided by the exit-code file, never by the connection closing.
"""

from __future__ import annotations

import gzip
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bot import messages
from bot.durations import format_duration
from bot.plan import Stage
from bot.ssh import SSHError, SSHPool, quote
from bot.store import parse_time
from bot.workers import error_ref

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger("cutover.stages")

ACTIVE = ("starting", "running")
NOTABLE_WORDS = ("error", "fatal", "failed", "exception", "traceback", "panic")
DEFAULT_NOTABLE = re.compile(r"\b(?:" + "|".join(NOTABLE_WORDS) + r")\b", re.IGNORECASE)
CHUNK = 1 << 20
UPDATE_INTERVAL = 1.0
OFFSET_SAVE_INTERVAL = 0.5
EXIT_CHECK_INTERVAL = 1.0
NOTABLE_LIMIT = 30
LAST_LINES = 5
GZIP_ABOVE = 20 * 1024 * 1024
CANCEL_GRACE = 10.0
FOLLOW_ATTEMPTS = 5


class StageRefused(Exception):
    """Why a stage cannot start or stop now, worded for the operator."""


@dataclass
class Progress:
    done: float | None = None
    total: float | None = None
    percent: float | None = None
    first_at: float | None = None
    first_fraction: float | None = None
    fraction_at: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.percent is not None:
            return max(0.0, min(1.0, self.percent / 100))
        if self.done is not None and self.total:
            return max(0.0, min(1.0, self.done / self.total))
        return None


@dataclass
class Snapshot:
    """What the progress message shows; written by the follower, read by the reporter."""

    run_id: int
    stage: str
    host: str
    started_by: str
    started_at: datetime
    state: str = "starting"
    last_lines: deque = field(default_factory=lambda: deque(maxlen=LAST_LINES))
    progress: Progress = field(default_factory=Progress)
    bytes: int = 0
    notable: list[str] = field(default_factory=list)
    notable_overflow: bool = False
    connection: str = ""
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    stopped_by: str | None = None
    previous_duration: timedelta | None = None
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def eta(self, now_mono: float, now: datetime) -> timedelta | None:
        p = self.progress
        frac = p.fraction
        if frac is not None and p.first_at is not None and p.fraction_at is not None and frac > (p.first_fraction or 0):
            rate = (frac - (p.first_fraction or 0)) / max(p.fraction_at - p.first_at, 1e-6)
            if rate <= 0:
                return None
            since_last = max(0.0, now_mono - p.fraction_at)  # keeps counting down between progress lines
            return timedelta(seconds=max(0.0, (1 - frac) / rate - since_last))
        if self.previous_duration is not None:
            left = self.previous_duration - (now - self.started_at)
            return left if left > timedelta(0) else timedelta(0)
        return None


class StageRunner:
    def __init__(self, services: "Services", ssh: SSHPool, log_dir: Path) -> None:
        self.services = services
        self.ssh = ssh
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._followers: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self.gzip_above = GZIP_ABOVE
        self._stopping = threading.Event()

    # -- public operations (called from the worker pool) ------------------------------------

    def start(self, name: str, user: str) -> int:
        """Start one stage; returns its run id once it is running on the host. Raises StageRefused."""
        stage = self._stage(name)
        run_id = self._claim(stage, user)
        snap = self._snapshot(self._run(run_id))
        ts = self.services.notifier.post(messages.stage_text(snap), messages.stage_message(snap, time.monotonic(),
                                                                                          self.services.clock.now()))
        with self.services.store.transaction() as db:
            db["stage_runs"].update(run_id, {"message_ts": ts, "channel": self.services.plan.people.channel})
        try:
            self._launch(stage, run_id)
        except SSHError as exc:
            self.end_unstarted(run_id, "failed", f"could not start: {exc}")
            self.services.audit(user, "stage-failed", name, "error", {"reason": str(exc)})
            raise StageRefused(f"`{name}` could not start on `{stage.host}`: {exc}") from None
        self._follow(run_id)
        return run_id

    def run_all(self, user: str) -> list[str]:
        """Run every stage not yet succeeded, in depends_on order, stopping at the first failure."""
        report = []
        runs = self.services.store.latest_runs()
        for stage in self.services.plan.stages:
            last = runs.get(stage.name)
            if last and last["state"] == "succeeded":
                report.append(f"⏭️ `{stage.name}` already succeeded; skipped (use `run {stage.name}` to repeat it)")
                continue
            try:
                run_id = self.start(stage.name, user)
            except StageRefused as exc:
                report.append(f"🛑 {exc}")
                break
            state = self.wait(run_id)
            report.append(f"{messages.STATE_ICONS.get(state, '•')} `{stage.name}` {state}")
            if state != "succeeded":
                report.append("🛑 stopped: later stages were not started")
                break
        return report

    def run_all_and_report(self, user: str) -> None:
        """``run all`` can take hours, longer than a command's response_url lives: report in the channel."""
        report = self.run_all(user)
        self.services.notifier.post("`run all` finished", [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"`run all` by <@{user}> finished:\n" + "\n".join(report)}}])

    def wait(self, run_id: int, timeout: float | None = None) -> str:
        thread = self._followers.get(run_id)
        if thread is not None:
            thread.join(timeout)
        return self._run(run_id)["state"]

    def cancel(self, name: str, user: str, reason: str = "cancelled") -> str:
        stage = self._stage(name)
        with self.services.store.transaction() as db:
            rows = list(db.query("SELECT * FROM stage_runs WHERE stage = ? AND state IN ('starting', 'running')",
                                 [name]))
            if not rows:
                raise StageRefused(f"`{name}` is not running.")
            run = rows[0]
            db["stage_runs"].update(run["id"], {"cancel_reason": reason, "cancelled_by": user})
        if run["pid"] is None:
            return f"`{name}` is still starting; it will be stopped as soon as it runs."
        self._kill_group(stage.host, run)
        return f"Stopping `{name}` on `{stage.host}` (process group {run['pid']})."

    def latest_log(self, name: str) -> tuple[dict, Path]:
        self._stage(name)
        run = self.services.store.latest_runs().get(name)
        if run is None:
            raise StageRefused(f"`{name}` has not run yet; there is no log.")
        path = self._local_log(run["id"])
        if not path.exists():
            raise StageRefused(f"the log of `{name}` (run {run['id']}) is not on this bot's disk.")
        return run, path

    def upload_log(self, run: dict, path: Path, user: str | None = None) -> str | None:
        name = run["stage"]
        filename, content = self._log_payload(run["id"], path)
        comment = f"Full log of `{name}` (run {run['id']})" + (f", asked for by <@{user}>" if user else "")
        return self.services.notifier.upload(filename, content, title=f"{name} log, run {run['id']}",
                                             thread_ts=run["message_ts"], comment=comment, redacted=True)

    def resume(self) -> list[str]:
        """Re-attach to runs that were in flight when the bot stopped; finish uploads it missed."""
        notes = []
        for run in self.services.store.query("SELECT * FROM stage_runs WHERE state IN ('starting', 'running')"):
            if self.services.plan.stage(run["stage"]) is None:
                self._finish(run["id"], "lost", None, "the stage is no longer in the plan")
                continue
            notes.append(run["stage"])
            self.services.audit("cutover", "reattach", run["stage"], "ok", {"offset": run["log_offset"]})
            if run["message_ts"]:
                self.services.notifier.post(
                    f"Re-attached to `{run['stage']}` after a bot restart; following its log from byte "
                    f"{run['log_offset']:,}.", thread_ts=run["message_ts"])
            self._follow(run["id"])
        for run in self.services.store.query(
                "SELECT * FROM stage_runs WHERE state NOT IN ('starting', 'running') AND log_uploaded = 0 "
                "AND message_ts IS NOT NULL"):
            self.services.workers.submit(f"log upload of run {run['id']}", self._upload_final, run["id"])
        return notes

    def stop(self) -> None:
        """Stop following (the stages themselves keep running on their hosts)."""
        self._stopping.set()
        for thread in list(self._followers.values()):
            thread.join(5)

    # -- claiming and launching -------------------------------------------------------------

    def _stage(self, name: str) -> Stage:
        stage = self.services.plan.stage(name)
        if stage is None:
            raise StageRefused(f"`{name}` is not a stage of the plan.")
        return stage

    def _claim(self, stage: Stage, user: str) -> int:
        """Check dependencies and insert the run in one transaction: one run of a stage at a time."""
        now = self.services.clock.now().isoformat()
        with self.services.store.transaction() as db:
            active = list(db.query("SELECT id, started_by FROM stage_runs WHERE stage = ? AND state IN "
                                   "('starting', 'running')", [stage.name]))
            if active:
                raise StageRefused(f"`{stage.name}` is already running (run {active[0]['id']}, started by "
                                   f"<@{active[0]['started_by']}>). `cancel {stage.name}` stops it.")
            missing = []
            for dep in stage.depends_on:
                rows = list(db.query("SELECT state FROM stage_runs WHERE stage = ? ORDER BY id DESC LIMIT 1", [dep]))
                if not rows:
                    missing.append(f"`{dep}` has not run")
                elif rows[0]["state"] != "succeeded":
                    missing.append(f"`{dep}` {rows[0]['state']}")
            if missing:
                raise StageRefused(f"`{stage.name}` needs {', '.join('`' + d + '`' for d in stage.depends_on)} "
                                   f"to have succeeded first: {'; '.join(missing)}.")
            return db["stage_runs"].insert({"stage": stage.name, "host": stage.host, "state": "starting",
                                            "started_by": user, "started_at": now}).last_pk

    def _wrapper(self, stage: Stage, remote_dir: str) -> bytes:
        d = quote(remote_dir)
        lines = ["#!/bin/sh", f"# cutover: stage {stage.name}", f"D={d}", 'echo $$ > "$D/pid.tmp" && mv "$D/pid.tmp" "$D/pid"',
                 "trap ':' TERM INT", "trap '' HUP",
                 'finish() { echo "$1" > "$D/exit.tmp" && mv "$D/exit.tmp" "$D/exit"; exit "$1"; }']
        if stage.workdir:
            workdir = stage.workdir
            target = '"$HOME"' + quote(workdir[1:]) if workdir.startswith("~") else quote(workdir)
            lines.append(f"cd {target} || {{ echo 'cutover: cannot change to {stage.workdir}'; finish 126; }}")
        lines += [f"sh -c {quote(stage.command)}", "finish $?", ""]
        return "\n".join(lines).encode()

    def _launch(self, stage: Stage, run_id: int) -> None:
        key = f"{stage.name}-{run_id}-{int(time.time())}"
        remote_dir = self.ssh.check(
            stage.host, f'command -v setsid >/dev/null || {{ echo "setsid is not installed" >&2; exit 3; }}; '
                        f'd="$HOME/.cutover/runs/{key}" && mkdir -p "$d" && cd "$d" && pwd').strip()
        with self.services.store.transaction() as db:
            db["stage_runs"].update(run_id, {"remote_dir": remote_dir})
        self.ssh.write_file_atomic(stage.host, f"{remote_dir}/run.sh", self._wrapper(stage, remote_dir), 0o700)
        try:
            self.ssh.check(stage.host, f"cd {quote(remote_dir)} && : > log && "
                                       "setsid sh ./run.sh > log 2>&1 < /dev/null &", retry=False)
        except SSHError:
            # The connection broke during the launch; only the pid file can tell whether the stage started.
            if self.read_pid(stage.host, remote_dir, wait=2.0) is None:
                raise
        pid = self.read_pid(stage.host, remote_dir, wait=10.0)
        if pid is None:
            raise SSHError("the stage did not report its process id within 10 s")
        self._running(run_id, pid)

    def read_pid(self, host: str, remote_dir: str, wait: float) -> int | None:
        """The stage's process (group) id from its pid file, waiting up to ``wait`` seconds for it."""
        deadline = time.monotonic() + wait
        while True:
            raw = self.ssh.read_file(host, f"{remote_dir}/pid")
            if raw and raw.strip().isdigit():
                return int(raw)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _running(self, run_id: int, pid: int) -> None:
        with self.services.store.transaction() as db:
            db["stage_runs"].update(run_id, {"state": "running", "pid": pid})
        run = self._run(run_id)
        self.services.audit(run["started_by"], "stage-started", run["stage"], "ok",
                            {"run": run_id, "host": run["host"], "pid": pid})
        if run["cancel_reason"]:
            self._kill_group(run["host"], run)

    def _kill_group(self, host: str, run: dict) -> None:
        pgid = int(run["pid"])
        self.ssh.run(host, f"kill -TERM -- -{pgid} 2>/dev/null; exit 0")

        def escalate() -> None:
            """SIGKILL whatever of the group is left after the grace period, even once the exit file exists."""
            deadline = time.monotonic() + CANCEL_GRACE
            while time.monotonic() < deadline:
                if self.ssh.run(host, f"kill -0 -- -{pgid} 2>/dev/null").exit_code != 0:
                    return
                time.sleep(0.5)
            log.warning("process group %d on %s ignored SIGTERM; sending SIGKILL", pgid, host)
            self.ssh.run(host, f"kill -KILL -- -{pgid} 2>/dev/null; exit 0")

        self.services.workers.submit(f"escalating the stop of run {run['id']}", escalate)

    # -- following --------------------------------------------------------------------------------

    def _run(self, run_id: int) -> dict:
        return self.services.store.query("SELECT * FROM stage_runs WHERE id = ?", [run_id])[0]

    def _local_log(self, run_id: int) -> Path:
        return self.log_dir / f"run-{run_id}.log"

    def _snapshot(self, run: dict) -> Snapshot:
        previous = self.services.store.query(
            "SELECT started_at, ended_at FROM stage_runs WHERE stage = ? AND state = 'succeeded' AND id < ? "
            "ORDER BY id DESC LIMIT 1", [run["stage"], run["id"]])
        duration = None
        if previous:
            duration = parse_time(previous[0]["ended_at"]) - parse_time(previous[0]["started_at"])  # type: ignore[operator]
        return Snapshot(run_id=run["id"], stage=run["stage"], host=run["host"], started_by=run["started_by"],
                        started_at=parse_time(run["started_at"]), state=run["state"],  # type: ignore[arg-type]
                        previous_duration=duration, bytes=run["log_offset"])

    def _follow(self, run_id: int) -> None:
        thread = threading.Thread(target=self._follow_guarded, args=(run_id,), name=f"follow-{run_id}", daemon=True)
        with self._lock:
            self._followers[run_id] = thread
        thread.start()

    def _follow_guarded(self, run_id: int) -> None:
        """Follow until the run ends; an unexpected error re-attaches from the stored offset, and says so."""
        try:
            for attempt in range(1, FOLLOW_ATTEMPTS + 1):
                try:
                    Follower(self, run_id).run()
                    return
                except Exception:
                    ref = error_ref()
                    log.exception("following run %d failed (ref %s, attempt %d)", run_id, ref, attempt)
                    run = self._run(run_id)
                    last = attempt == FOLLOW_ATTEMPTS
                    if run["message_ts"]:
                        self.services.notifier.post(
                            f"⚠️ Following `{run['stage']}` failed unexpectedly (ref {ref}); "
                            + ("giving up after several tries. The stage may still be running on "
                               f"`{run['host']}`; a bot restart re-attaches to it." if last else
                               "re-attaching from where it was. The stage itself is unaffected."),
                            thread_ts=run["message_ts"])
                    if last or self._stopping.wait(5):
                        return
        finally:
            with self._lock:
                self._followers.pop(run_id, None)

    def end_unstarted(self, run_id: int, state: str, reason: str) -> None:
        """End a run that never ran on its host, and make its message say so."""
        self._finish(run_id, state, None, reason)
        row = self._run(run_id)
        if row["message_ts"]:
            snap = self._snapshot(row)
            snap.reason = reason
            snap.ended_at = self.services.clock.now()
            self.services.notifier.update(row["message_ts"], messages.stage_text(snap),
                                          messages.stage_message(snap, time.monotonic(), snap.ended_at))

    def _finish(self, run_id: int, state: str, exit_code: int | None, detail: str = "") -> None:
        with self.services.store.transaction() as db:
            db["stage_runs"].update(run_id, {"state": state, "exit_code": exit_code, "detail": detail or None,
                                             "ended_at": self.services.clock.now().isoformat()})

    def _log_payload(self, run_id: int, path: Path) -> tuple[str, bytes]:
        """The local copy, redacted line by line; gzipped when large so the upload stays small."""
        run = self._run(run_id)
        redactor = self.services.redactor
        if path.stat().st_size <= self.gzip_above:
            return f"{run['stage']}-run{run_id}.log", redactor.bytes(path.read_bytes())
        packed = path.with_suffix(".log.gz")
        with path.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            for line in src:
                dst.write(redactor.bytes(line))
        data = packed.read_bytes()
        packed.unlink()
        return f"{run['stage']}-run{run_id}.log.gz", data

    def _upload_final(self, run_id: int) -> None:
        run = self._run(run_id)
        if run["log_uploaded"]:
            return
        path = self._local_log(run_id)
        if not path.exists():
            return
        if self.upload_log(run, path) is not None:
            with self.services.store.transaction() as db:
                db["stage_runs"].update(run_id, {"log_uploaded": 1})


class Follower:
    """Follows one run: tails the remote log into the local copy, watches for the exit file."""

    def __init__(self, runner: StageRunner, run_id: int) -> None:
        self.runner = runner
        self.services = runner.services
        self.run_id = run_id
        row = runner._run(run_id)
        self.stage = self.services.plan.stage(row["stage"])
        assert self.stage is not None
        self.host = row["host"]
        self.remote_dir = row["remote_dir"]
        self.offset = row["log_offset"]
        self.snap = runner._snapshot(row)
        self.snap.state = "running"
        self.partial = ""
        self.notable = self.stage.notable or DEFAULT_NOTABLE
        self.done = threading.Event()
        self.saved_offset = self.offset
        self.last_save = time.monotonic()

    def run(self) -> None:
        if self.remote_dir is None:
            self.runner.end_unstarted(self.run_id, "lost", "the bot stopped before starting it; nothing ran. "
                                                           "Start it again.")
            return
        if self.runner._run(self.run_id)["pid"] is None:
            pid = self.runner.read_pid(self.host, self.remote_dir, wait=2.0)
            if pid is None:
                self.runner.end_unstarted(self.run_id, "lost", "the bot stopped while starting it, and it did "
                                                               "not start. Start it again.")
                return
            self.runner._running(self.run_id, pid)
        path = self.runner._local_log(self.run_id)
        with path.open("ab") as f:
            f.truncate(self.offset)
        reporter = threading.Thread(target=self._report, name=f"report-{self.run_id}", daemon=True)
        reporter.start()
        try:
            with path.open("r+b") as local:
                local.seek(self.offset)
                self._tail(local)
        finally:
            self.done.set()
            reporter.join(30)
        if self.snap.state not in ACTIVE:
            self.runner._upload_final(self.run_id)
            self._post_final()

    def _tail(self, local) -> None:  # type: ignore[no-untyped-def]
        channel = None
        last_exit_check = 0.0
        final_size: int | None = None
        exit_code: int | None = None
        backoff = 1.0
        while not self.runner._stopping.is_set():
            if final_size is not None and self.offset >= final_size:
                break
            if channel is None:
                try:
                    channel = self.runner.ssh.open_stream(
                        self.host, f"exec tail -c +{self.offset + 1} -f -- {quote(self.remote_dir + '/log')}")
                    channel.settimeout(0.5)
                    if self.snap.connection:
                        self._set(connection="")
                    backoff = 1.0
                except SSHError as exc:
                    self._set(connection=f"lost the connection to `{self.host}`; retrying ({exc})")
                    self._save_offset(local, force=True)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 15)
                    continue
            try:
                data = channel.recv(CHUNK)
            except TimeoutError:
                data = None
            except OSError:
                data = b""
            if data:
                local.write(data)
                self.offset += len(data)
                self._consume(data)
                self._save_offset(local)
            elif data == b"" or channel.exit_status_ready():
                channel.close()
                channel = None
                continue
            now = time.monotonic()
            if final_size is None and now - last_exit_check >= EXIT_CHECK_INTERVAL:
                last_exit_check = now
                try:
                    final_size, exit_code = self._check_end()
                except SSHError as exc:
                    self._set(connection=f"lost the connection to `{self.host}`; retrying ({exc})")
                    if channel is not None:
                        channel.close()
                        channel = None
        if channel is not None:
            channel.close()
        self._save_offset(local, force=True)
        if final_size is not None:
            self._complete(exit_code)

    def _check_end(self) -> tuple[int | None, int | None]:
        """The log's final size once the stage has ended (exit file, or its process group gone)."""
        row = self.runner._run(self.run_id)
        d = quote(self.remote_dir)
        result = self.runner.ssh.run(
            self.host, f"cat {d}/exit 2>/dev/null || echo none; stat -c %s {d}/log; "
                       f"kill -0 -- -{int(row['pid'])} 2>/dev/null && echo alive || echo gone")
        lines = result.stdout.split()
        if len(lines) < 3:
            raise SSHError(f"could not read the state of run {self.run_id} on `{self.host}`")
        code, size, alive = lines[0], int(lines[1]), lines[2] == "alive"
        if code.lstrip("-").isdigit():
            return size, int(code)
        if not alive:
            return size, None
        if self.stage.timeout and self.services.clock.now() - self.snap.started_at > self.stage.timeout \
                and not row["cancel_reason"]:
            try:
                self.runner.cancel(self.stage.name, "cutover", reason="timed out")
            except StageRefused:
                pass  # it ended on its own meanwhile; the next check sees the exit file
        return None, None

    def _consume(self, data: bytes) -> None:
        text = self.partial + data.decode("utf-8", "replace")
        cut = text.rfind("\n")
        if cut < 0:
            self.partial = text[-4096:]
            return
        complete, self.partial = text[:cut], text[cut + 1:][-4096:]
        tail = complete.rsplit("\n", 50)
        progress = None
        if self.stage.progress is not None:
            for line in reversed(tail):
                progress = self.stage.progress.search(line)
                if progress:
                    break
            if progress is None and len(tail) > 50:
                for progress in self.stage.progress.finditer(complete):
                    pass
        notable: list[str] = []
        overflow = False
        room = NOTABLE_LIMIT - len(self.snap.notable)
        if not self.snap.notable_overflow and self._may_be_notable(complete):
            for line in complete.split("\n"):
                if self.notable.search(line):
                    if len(notable) == room:
                        overflow = True
                        break
                    notable.append(line[:300])
        with self.snap.lock:
            for line in tail[-LAST_LINES:]:
                self.snap.last_lines.append(line[:200])
            self.snap.bytes = self.offset
            if progress:
                self._progress(progress)
            self.snap.notable.extend(notable)
            self.snap.notable_overflow = self.snap.notable_overflow or overflow
            self.snap.version += 1

    def _may_be_notable(self, text: str) -> bool:
        """A cheap first look: the default pattern's words as substrings (a regex scan costs ~30 ms/MB)."""
        if self.notable is DEFAULT_NOTABLE:
            low = text.lower()
            return any(word in low for word in NOTABLE_WORDS)
        return self.notable.search(text) is not None

    def _progress(self, match: re.Match[str]) -> None:
        groups = match.groupdict()
        p = self.snap.progress
        try:
            if groups.get("percent") is not None:
                p.percent = float(groups["percent"])
            else:
                p.done, p.total = float(groups["done"]), float(groups["total"])
        except (TypeError, ValueError):
            return
        now = time.monotonic()
        if p.first_at is None:
            p.first_at, p.first_fraction = now, p.fraction
        p.fraction_at = now

    def _set(self, **changes: object) -> None:
        with self.snap.lock:
            for k, v in changes.items():
                setattr(self.snap, k, v)
            self.snap.version += 1

    def _save_offset(self, local, force: bool = False) -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        if self.offset == self.saved_offset or (not force and now - self.last_save < OFFSET_SAVE_INTERVAL):
            return
        local.flush()
        with self.services.store.transaction() as db:
            db["stage_runs"].update(self.run_id, {"log_offset": self.offset})
        self.saved_offset, self.last_save = self.offset, now

    def _complete(self, exit_code: int | None) -> None:
        row = self.runner._run(self.run_id)
        if self.partial:
            with self.snap.lock:
                self.snap.last_lines.append(self.partial[:200])
        reason = row["cancel_reason"]
        stopped_by = row["cancelled_by"] if row["cancelled_by"] not in (None, "cutover") else None
        if reason == "timed out":
            state, detail = reason, f"stopped after its {format_duration(self.stage.timeout)} timeout"  # type: ignore[arg-type]
        elif reason:
            state, detail = reason, "stopped"
        elif exit_code is None:
            state, detail = "lost", "its processes are gone and left no exit code (killed outside the bot?)"
        else:
            state, detail = ("succeeded" if exit_code == 0 else "failed"), ""
        self.runner._finish(self.run_id, state, exit_code, detail + (f" by <@{stopped_by}>" if stopped_by else ""))
        self.services.audit(row["started_by"], f"stage-{state.replace(' ', '-')}", row["stage"],
                            "ok" if state == "succeeded" else state, {"run": self.run_id, "exit": exit_code})
        self._set(state=state, exit_code=exit_code, reason=detail, stopped_by=stopped_by,
                  ended_at=self.services.clock.now())

    def _report(self) -> None:
        """Coalesce updates: at most one chat.update a second, whatever the output rate.

        Notable lines go to the thread, at most NOTABLE_LIMIT of them in all, then one note.
        """
        ts = self.runner._run(self.run_id)["message_ts"]
        shown = -1
        posted = 0
        overflow_said = False
        while ts:
            finished = self.done.wait(UPDATE_INTERVAL)
            with self.snap.lock:
                version = self.snap.version
                pending = self.snap.notable[posted:]
                overflow = self.snap.notable_overflow
            if pending:
                posted += len(pending)
                self.services.notifier.post(f"Notable output from `{self.snap.stage}`",
                                            messages.notable_message(self.snap.stage, pending), thread_ts=ts)
            if overflow and not overflow_said:
                overflow_said = True
                self.services.notifier.post(f"More notable lines than the {NOTABLE_LIMIT} shown here; the full log "
                                            "is uploaded to this thread when the stage ends.", thread_ts=ts)
            if finished:
                return
            if version != shown:
                shown = version
                self.services.notifier.update(ts, messages.stage_text(self.snap),
                                              messages.stage_message(self.snap, time.monotonic(),
                                                                     self.services.clock.now()))

    def _post_final(self) -> None:
        ts = self.runner._run(self.run_id)["message_ts"]
        if ts:
            self.services.notifier.update(ts, messages.stage_text(self.snap),
                                          messages.stage_message(self.snap, time.monotonic(), self.services.clock.now()))

