"""What the Slack stand-in's parts share: an envelope delivered to the app, a planned fault, a channel, Slack's
error, and the shapes of parameters and messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Envelope:
    envelope_id: str
    type: str
    payload: dict
    key: str
    transport: str
    delivered_at: float = 0.0
    acked_at: float | None = None
    ack_payload: dict | None = None
    retry_attempt: int = 0
    http_status: int | None = None

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.delivered_at


@dataclass
class Fault:
    method: str
    status: int = 429
    error: str = "ratelimited"
    retry_after: int = 1
    remaining: int = 1
    html: bool = False  # answer with an HTML error page, as a proxy in front of Slack would


@dataclass
class Channel:
    id: str
    name: str
    messages: list[dict] = field(default_factory=list)
    bot_is_member: bool = True
    archived: bool = False


class SlackError(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


def json_param(params: dict, key: str) -> Any:
    """A parameter Slack takes as JSON: as sent in a form (a string) or in a JSON body (already parsed)."""
    value = params.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise SlackError("invalid_arguments") from None
    return value


def without_metadata(msg: dict) -> dict:
    """Slack returns a message's metadata only to those who ask for it (``include_all_metadata``)."""
    return {k: v for k, v in msg.items() if k != "metadata"}
