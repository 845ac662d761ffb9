"""Everything the bot says in Slack goes through here: redacted, and never raising into a worker.

A failed Slack call is logged with the method and Slack's error code and
reported to the caller as ``None``/``False``; the services decide what that
means. Rate limits are retried by slack_sdk's retry handler on the client.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.redact import Redactor
from bot.settings import Settings

log = logging.getLogger("cutover.notifier")


def make_slack_client(settings: Settings, max_rate_limit_retries: int = 5) -> WebClient:
    """The one Web API client of the process; the Bolt app and the notifier share it."""
    return WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=30,
        retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2),
                        RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries)],
    )


class Notifier:
    def __init__(self, client: WebClient, channel: str, redactor: Redactor) -> None:
        self.client = client
        self.channel = channel
        self.redactor = redactor

    def _call(self, method: str, **kwargs: Any) -> dict | None:
        kwargs = {k: self.redactor.deep(v) if k in ("text", "blocks", "initial_comment", "title") else v
                  for k, v in kwargs.items() if v is not None}
        try:
            return getattr(self.client, method)(**kwargs).data  # type: ignore[no-any-return]
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else "unknown"
            detail = exc.response.get("errors") if exc.response is not None else None
            log.error("Slack %s failed: %s%s (channel %s)", method, error,
                      f" {detail}" if detail else "", kwargs.get("channel") or kwargs.get("channel_id"))
        except (SlackClientError, OSError) as exc:
            log.error("Slack %s failed: %s", method, exc.__class__.__name__)
        return None

    def post(self, text: str, blocks: list[dict] | None = None, *, thread_ts: str | None = None,
             channel: str | None = None) -> str | None:
        data = self._call("chat_postMessage", channel=channel or self.channel, text=text, blocks=blocks,
                          thread_ts=thread_ts)
        return data.get("ts") if data else None

    def update(self, ts: str, text: str, blocks: list[dict] | None = None, *, channel: str | None = None) -> bool:
        return self._call("chat_update", channel=channel or self.channel, ts=ts, text=text,
                          blocks=blocks) is not None

    def ephemeral(self, user: str, text: str, blocks: list[dict] | None = None, *,
                  channel: str | None = None) -> bool:
        return self._call("chat_postEphemeral", channel=channel or self.channel, user=user, text=text,
                          blocks=blocks) is not None

    def react(self, ts: str, name: str, *, channel: str | None = None) -> bool:
        return self._call("reactions_add", channel=channel or self.channel, timestamp=ts, name=name) is not None

    def upload(self, filename: str, content: bytes, *, title: str, thread_ts: str | None = None,
               comment: str | None = None, channel: str | None = None, redacted: bool = False) -> str | None:
        """Upload a file; ``redacted`` says the caller already redacted it (binary, e.g. gzip, must be)."""
        data = self._call("files_upload_v2", channel=channel or self.channel, filename=filename,
                          content=content if redacted else self.redactor.bytes(content), title=title,
                          thread_ts=thread_ts, initial_comment=comment)
        if not data:
            return None
        files = data.get("files") or []
        return files[0].get("id") if files else None
