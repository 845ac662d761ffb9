"""Each run's full log on the bot's disk, and its upload to the run's thread: redacted, gzipped when large.

The local copy is what the follower wrote, byte for byte, from the host's log.
An upload redacts it (and gzips it above GZIP_ABOVE) as a stream into a file
beside it, then sends that file with Slack's three-step upload, so memory
stays flat whatever the log's size or line length.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import BinaryIO, cast

from bot.notifier import Notifier
from bot.redact import Redactor

GZIP_ABOVE = 20 * 1024 * 1024


class StageLogs:
    def __init__(self, log_dir: Path, redactor: Redactor, notifier: Notifier) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redactor = redactor
        self.notifier = notifier
        self.gzip_above = GZIP_ABOVE

    def path(self, run_id: int) -> Path:
        return self.log_dir / f"run-{run_id}.log"

    def upload(self, run: dict, path: Path, user: str | None = None) -> str | None:
        """Upload the run's log to its thread; the file id, or None if Slack did not take it."""
        name = run["stage"]
        filename, payload = self._payload(run, path)
        comment = f"Full log of `{name}` (run {run['id']})" + (f", asked for by <@{user}>" if user else "")
        try:
            return self.notifier.upload(payload, filename, title=f"{name} log, run {run['id']}",
                                        thread_ts=run["message_ts"], comment=comment)
        finally:
            payload.unlink(missing_ok=True)

    def _payload(self, run: dict, path: Path) -> tuple[str, Path]:
        name = f"{run['stage']}-run{run['id']}.log"
        payload = path.with_name(f"{path.stem}.upload-{threading.get_ident()}.tmp")
        with path.open("rb") as src:
            if path.stat().st_size <= self.gzip_above:
                with payload.open("wb") as dst:
                    self.redactor.copy(src, dst)
                return name, payload
            with gzip.open(payload, "wb", compresslevel=6) as packed:
                self.redactor.copy(src, cast(BinaryIO, packed))
        return name + ".gz", payload
