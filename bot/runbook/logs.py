"""Each run's full log on the bot's disk, and its upload to the run's thread: redacted, gzipped when large,
retried until Slack takes it.

The local copy is what the follower wrote, byte for byte, from the host's log.
An upload redacts it (and gzips it above GZIP_ABOVE) as a stream into a file
beside it, then sends that file with Slack's three-step upload, so memory
stays flat whatever the log's size or line length. An ended run's log is
uploaded on a thread of its own, with growing pauses while Slack refuses,
and recorded once it is there.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from pathlib import Path
from typing import BinaryIO, cast

from bot.durations import format_duration
from bot.redact import Redactor
from bot.runbook.runs import Run, Runs
from bot.slackapi.notifier import Notifier
from bot.workers import error_ref

log = logging.getLogger("cutover.stage_logs")

GZIP_ABOVE = 20 * 1024 * 1024
UPLOAD_RETRY_FIRST = 10.0
UPLOAD_RETRY_MOST = 300.0
UPLOAD_GIVE_UP = 3600.0


class StageLogs:
    def __init__(self, log_dir: Path, redactor: Redactor, notifier: Notifier, runs: Runs,
                 stopping: threading.Event) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redactor = redactor
        self.notifier = notifier
        self.runs = runs
        self.stopping = stopping
        self.gzip_above = GZIP_ABOVE

    def path(self, run_id: int) -> Path:
        return self.log_dir / f"run-{run_id}.log"

    def upload(self, run: Run, user: str | None = None) -> str | None:
        """Upload the run's log to its thread; the file id, or None if Slack did not take it. Once an ended
        run's log is there, it is recorded and not uploaded again by itself."""
        filename, payload = self._payload(run, self.path(run.id))
        comment = f"Full log of `{run.stage}` (run {run.id})" + (f", asked for by <@{user}>" if user else "")
        try:
            file_id = self.notifier.upload(payload, filename, title=f"{run.stage} log, run {run.id}",
                                           thread_ts=run.message_ts, comment=comment)
        finally:
            payload.unlink(missing_ok=True)
        if file_id is not None and not run.active:
            self.runs.uploaded(run.id)
        return file_id

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
            run = self.runs.get(run_id)
            if run.log_uploaded or not self.path(run_id).exists():
                return
            try:
                uploaded = self.upload(run) is not None
                why = self.notifier.last_error()
            except OSError as exc:
                uploaded, why = False, f"the bot could not prepare it ({exc.strerror or exc})"
            if uploaded:
                return
            now = time.monotonic()
            if late_since is None:
                late_since = now
                log.warning("the log of run %d did not upload (%s); retrying in %.0f s", run_id, why, delay)
                self.notifier.post(f"⏳ The full log of `{run.stage}` is late: the upload failed ({why}). "
                                   "The bot keeps trying; it appears here when Slack takes it.",
                                   thread_ts=run.message_ts)
            elif now - late_since > UPLOAD_GIVE_UP:
                self.notifier.post(f"The full log of `{run.stage}` could not be uploaded for "
                                   f"{format_duration(UPLOAD_GIVE_UP)} ({why}); the bot has stopped trying. "
                                   f"`/cutover logs {run.stage}` uploads it when Slack is back.",
                                   thread_ts=run.message_ts)
                return
            if self.stopping.wait(delay):
                return  # a restart takes it up again
            delay = min(delay * 2, UPLOAD_RETRY_MOST)

    def _payload(self, run: Run, path: Path) -> tuple[str, Path]:
        name = f"{run.stage}-run{run.id}.log"
        payload = path.with_name(f"{path.stem}.upload-{threading.get_ident()}.tmp")
        with path.open("rb") as src:
            if path.stat().st_size <= self.gzip_above:
                with payload.open("wb") as dst:
                    self.redactor.copy(src, dst)
                return name, payload
            with gzip.open(payload, "wb", compresslevel=6) as packed:
                self.redactor.copy(src, cast(BinaryIO, packed))
        return name + ".gz", payload
