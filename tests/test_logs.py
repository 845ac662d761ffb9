"""Logs an operator can read: a level and a format chosen by the environment, secrets scrubbed from every line
including tracebacks, the scheduler's per-second chatter kept out of INFO."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.ops.logsetup import setup_logging
from bot.redact import Redactor
from bot.settings import SettingsError, load_settings

SECRET = "xoxb-a-token-that-must-never-be-logged"


def logged(fmt: str, level: str = "INFO") -> tuple[str, logging.Logger]:
    stream = io.StringIO()
    setup_logging(Redactor([SECRET]), level=level, fmt=fmt, stream=stream)
    return stream, logging.getLogger("cutover.test")


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("apscheduler", "slack_sdk", "slack_bolt", "cutover.bolt"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_an_exception_is_scrubbed_from_the_traceback_too(fmt):
    stream, log = logged(fmt)
    try:
        raise RuntimeError(f"Slack refused the token {SECRET}")
    except RuntimeError:
        log.exception("posting failed for %s", "U0ALICE")
    out = stream.getvalue()
    assert SECRET not in out and "[redacted]" in out and "RuntimeError" in out
    if fmt == "json":
        record = json.loads(out.strip().splitlines()[-1])
        assert record["level"] == "ERROR" and record["logger"] == "cutover.test"
        assert record["message"] == "posting failed for U0ALICE" and "Traceback" in record["exception"]


def test_the_level_is_honoured_and_the_scheduler_stays_out_of_info():
    stream, log = logged("text", "WARNING")
    log.info("an info line")
    log.warning("a warning line")
    assert "an info line" not in stream.getvalue() and "a warning line" in stream.getvalue()
    stream, _ = logged("text", "INFO")
    logging.getLogger("apscheduler.executors.default").info('Running job "GoLive.expire_due"')
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    out = stream.getvalue()
    assert "Running job" not in out and "was missed" in out
    stream, _ = logged("text", "DEBUG")
    logging.getLogger("slack_sdk.web.base_client").debug("Sending a request - body: {'text': 'hello'}")
    assert "Sending a request" not in stream.getvalue()


def test_a_bad_log_level_or_format_is_named():
    with pytest.raises(SettingsError) as caught:
        load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "LOG_LEVEL": "LOUD",
                       "LOG_FORMAT": "xml"}).require("socket")
    text = str(caught.value)
    assert "LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR (got `LOUD`)" in text
    assert "LOG_FORMAT: expected `text` or `json` (got `xml`)" in text
