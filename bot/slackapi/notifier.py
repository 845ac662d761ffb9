"""Everything the bot says in Slack goes through here: redacted, and never raising into a worker.

A failed Slack call is logged with the method and Slack's error code and
reported to the caller as ``None``/``False``; the services decide what that
means. An answer missing a field the bot reads is such a failure, named
(``bot.slackapi.answers``). Rate limits are retried by slack_sdk's retry handler on the client.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.redact import Redactor
from bot.settings import Settings
from bot.slackapi.answers import SlackAnswerError, checked, dotted

log = logging.getLogger("cutover.notifier")

UPLOAD_BLOCK = 1 << 20
HISTORY_PAGES = 5


@dataclass
class _Doubt:
    """A message an update that got no answer may still overwrite, and what it is to show after ``due``."""

    due: float  # monotonic
    text: str
    blocks: list[dict] | None
    settled: Callable[[], None] | None = None


def make_slack_client(settings: Settings, max_rate_limit_retries: int = 5, timeout: int = 30) -> WebClient:
    """The one Web API client of the process; the Bolt app and the notifier share it."""
    return WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=timeout,
        retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2),
                        RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries)],
    )


def slack_error(exc: Exception) -> str:
    """Slack's error code for a refused call, or what kept it from answering."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "unknown") if exc.response is not None else "unknown"
    return f"no answer ({exc.__class__.__name__})"


class Notifier:
    def __init__(self, client: WebClient, channel: str, redactor: Redactor) -> None:
        self.client = client
        self.channel = channel
        self.redactor = redactor
        self._bot_user_id: str | None = None
        self._failure = threading.local()
        self._doubts: dict[tuple[str, str], _Doubt] = {}  # messages an unanswered update may still overwrite
        self._doubts_lock = threading.Lock()
        # Slack may apply an update it did not answer within the client's timeout until about that long again.
        self.late_window = 2.0 * float(client.timeout or 30)

    def last_error(self) -> str:
        """Why this thread's last failed Slack call failed (Slack's error code, or what broke)."""
        return getattr(self._failure, "error", "") or "no answer"

    def bot_user_id(self) -> str | None:
        """Who the bot is in Slack, so that its own reactions never count (asked once it answers); None while
        Slack does not say (a reaction is then judged by ``users.info`` alone)."""
        if self._bot_user_id is None:
            data = self._call("auth_test")
            if data is not None:
                self._bot_user_id = str(data["user_id"])
        return self._bot_user_id

    def is_bot(self, user: str) -> bool | None:
        """Whether ``user`` is a bot or an app, from ``users.info``; None when Slack could not say."""
        data = self._call("users_info", user=user)
        if not data:
            return None
        info = data["user"]
        return bool(info.get("is_bot")) or bool(info.get("is_app_user"))

    def _call(self, method: str, **kwargs: Any) -> dict | None:
        kwargs = {k: self.redactor.deep(v) if k in ("text", "blocks", "initial_comment", "title", "view") else v
                  for k, v in kwargs.items() if v is not None}
        try:
            return checked(dotted(method), getattr(self.client, method)(**kwargs))
        except SlackAnswerError as exc:
            log.error("%s (channel %s)", exc, kwargs.get("channel") or kwargs.get("channel_id"))
            self._failure.error, self._failure.answered = exc.short, True
        except SlackApiError as exc:
            error = slack_error(exc)
            detail = exc.response.get("errors") if exc.response is not None else None
            log.error("Slack %s failed: %s%s (channel %s)", method, error,
                      f" {detail}" if detail else "", kwargs.get("channel") or kwargs.get("channel_id"))
            self._failure.error, self._failure.answered = error, True
        except (SlackClientError, OSError) as exc:
            log.error("Slack %s failed: %s", method, exc.__class__.__name__)
            self._failure.error, self._failure.answered = slack_error(exc), False
        return None

    def post(self, text: str, blocks: list[dict] | None = None, *, thread_ts: str | None = None,
             channel: str | None = None, metadata: dict | None = None) -> str | None:
        """Post; ``metadata`` ({"event_type", "event_payload"}) marks the message so it can be found again."""
        data = self._call("chat_postMessage", channel=channel or self.channel, text=text, blocks=blocks,
                          thread_ts=thread_ts, metadata=metadata)
        return data.get("ts") if data else None

    def find_marked(self, event_type: str, payload: dict, *, channel: str | None = None,
                    pages: int = HISTORY_PAGES) -> str | None | bool:
        """The ts of a recent message marked with this metadata; False when none of the last
        ``pages`` × 200 messages is; None when Slack could not be asked."""
        cursor = None
        for _ in range(pages):
            data = self._call("conversations_history", channel=channel or self.channel, include_all_metadata=True,
                              limit=200, cursor=cursor)
            if data is None:
                return None
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                if meta.get("event_type") == event_type and meta.get("event_payload") == payload:
                    return str(message["ts"])
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor:
                break
        return False

    def update(self, ts: str, text: str, blocks: list[dict] | None = None, *, channel: str | None = None,
               settled: Callable[[], None] | None = None) -> bool:
        """Update a message in place. An update that got no answer may still be applied by Slack later, over a
        newer one: the message is then shown again as last asked for, once such a late update can no longer
        land (``late_window`` after it); ``settled`` is called when that has been done."""
        channel = channel or self.channel
        done = self._call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks) is not None
        answerless = not done and not getattr(self._failure, "answered", True)
        with self._doubts_lock:
            doubt = self._doubts.get((channel, ts))
            if answerless:
                log.warning("an update of message %s got no answer: Slack may still apply it, so the message is "
                            "shown again as last asked for in %.0f s", ts, self.late_window)
                doubt = self._doubts[(channel, ts)] = _Doubt(time.monotonic() + self.late_window, text, blocks,
                                                              settled or (doubt.settled if doubt else None))
            elif doubt is not None:  # a late one may still land over this: this is what is shown again then
                doubt.text, doubt.blocks = text, blocks
                doubt.settled = settled or doubt.settled
        return done

    def expect_late(self, ts: str, text: str, blocks: list[dict] | None = None, *, channel: str | None = None,
                    settled: Callable[[], None] | None = None) -> None:
        """Show the message as ``text``/``blocks`` again after ``late_window``: an update sent before a restart
        may have got no answer and may still land."""
        with self._doubts_lock:
            self._doubts[(channel or self.channel, ts)] = _Doubt(time.monotonic() + self.late_window, text, blocks,
                                                                  settled)

    def doubted(self, ts: str, *, channel: str | None = None) -> bool:
        """Whether an update of this message got no answer and may still land over a newer one."""
        with self._doubts_lock:
            return (channel or self.channel, ts) in self._doubts

    def reassert_due(self) -> int:
        """Show again each message whose late update can no longer land; returns how many were shown."""
        now = time.monotonic()
        with self._doubts_lock:
            due = [(key, d) for key, d in self._doubts.items() if d.due <= now]
            for key, _ in due:
                del self._doubts[key]
        shown = 0
        for (channel, ts), doubt in due:
            if self.update(ts, doubt.text, doubt.blocks, channel=channel, settled=doubt.settled):
                shown += 1
                log.info("message %s shown again as last asked for, after an update that got no answer", ts)
                if doubt.settled is not None and (channel, ts) not in self._doubts:
                    doubt.settled()
        return shown

    def ephemeral(self, user: str, text: str, blocks: list[dict] | None = None, *,
                  channel: str | None = None) -> bool:
        return self._call("chat_postEphemeral", channel=channel or self.channel, user=user, text=text,
                          blocks=blocks) is not None

    def publish_home(self, user: str, view: dict) -> bool:
        """Show ``view`` as ``user``'s Home tab of the app (``views.publish``)."""
        return self._call("views_publish", user_id=user, view=view) is not None

    def reactions(self, ts: str, *, channel: str | None = None) -> list[dict] | None:
        """The reactions on a message as Slack has them now (``reactions.get``); None if Slack did not say."""
        data = self._call("reactions_get", channel=channel or self.channel, timestamp=ts, full=True)
        if not data:
            return None
        return list((data.get("message") or {}).get("reactions") or [])

    def react(self, ts: str, name: str, *, channel: str | None = None) -> bool:
        return self._call("reactions_add", channel=channel or self.channel, timestamp=ts, name=name) is not None

    def upload(self, path: Path, filename: str, *, title: str, thread_ts: str | None = None,
               comment: str | None = None, channel: str | None = None) -> str | None:
        """Upload a file the caller has already redacted, streamed from disk (Slack's three-step upload).

        The bytes go from the file to the socket in blocks, so memory stays flat whatever the file's size.
        Returns the file id, or None when any step failed (logged with the step and the reason).
        """
        size = path.stat().st_size
        data = self._call("files_getUploadURLExternal", filename=filename, length=size)
        if not data:
            return None
        file_id, url = data["file_id"], data["upload_url"]
        try:
            status = _post_file(url, path, size, self.client.timeout)
        except (OSError, http.client.HTTPException) as exc:
            log.error("Slack file upload of %s failed: %s", filename, exc.__class__.__name__)
            self._failure.error = f"the file transfer got no answer ({exc.__class__.__name__})"
            return None
        if status != 200:
            log.error("Slack file upload of %s failed: HTTP %d", filename, status)
            self._failure.error = f"the file transfer was refused (HTTP {status})"
            return None
        done = self._call("files_completeUploadExternal", files=[{"id": file_id, "title": self.redactor.text(title)}],
                          channel_id=channel or self.channel, thread_ts=thread_ts, initial_comment=comment)
        return file_id if done else None


def _post_file(url: str, path: Path, size: int, timeout: float) -> int:
    """POST a file as the request body in 1 MiB blocks; returns the HTTP status."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.netloc, timeout=timeout, blocksize=UPLOAD_BLOCK)
    try:
        with path.open("rb") as body:
            conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                         headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            response.read(4096)
            return response.status
    finally:
        conn.close()
