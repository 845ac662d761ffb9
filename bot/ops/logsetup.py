"""Logging setup: a level and a format from the environment; secrets scrubbed from every line.

Redaction runs on the formatted line, so an exception's text in a traceback
is scrubbed as surely as a message. APScheduler's per-job lines ("Running
job …" every second) are kept out of INFO, Slack's libraries never log
request bodies here, even at DEBUG, and paramiko's tracebacks of a failed
handshake stay out unless at DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

from bot.redact import Redactor



class RedactingFormatter(logging.Formatter):
    """The whole formatted record (message, traceback, stack) with secrets replaced."""

    def __init__(self, redactor: Redactor, fmt: str = "text") -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        if not self.json:
            return self.redactor.text(super().format(record))
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redactor.text(json.dumps(entry, ensure_ascii=False))


def setup_logging(redactor: Redactor, level: str | int = "INFO", fmt: str = "text",
                  stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(redactor, fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    quiet_libraries(root.level)


def quiet_libraries(level: int) -> None:
    """What the libraries may add to a log at ``level``: their warnings, never their noise."""
    # One line a second per job is noise at INFO; its warnings (a missed run) still show.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, level))
    # Slack's libraries print request and response bodies at DEBUG: never in this log, whatever the level.
    for name in ("slack_sdk", "slack_bolt", "cutover.bolt"):
        logging.getLogger(name).setLevel(max(logging.INFO, level))
    # paramiko logs a failed handshake as one ERROR record per line of its traceback (hundreds for one `check`
    # against a port that sends no SSH banner), and every connection at INFO; the bot's own line says which host
    # failed and why. They show only at DEBUG.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)
