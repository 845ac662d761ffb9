"""Which Slack deliveries were already seen, so that a retried or redelivered one acts once.

An ack must never wait on the database (Slack allows three seconds, and a
locked database can hold a write for longer), so the check is in two steps:
the listener asks the in-memory memo only, and the lane that does the work
records the delivery in the store before acting, which also catches a
redelivery after a restart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

REMEMBERED = 10_000


def delivery_key(body: dict) -> str | None:
    """What identifies one delivery across Slack's retries: the event id, or a command's trigger id."""
    if body.get("event_id"):
        return "event:" + str(body["event_id"])
    if body.get("trigger_id") and body.get("command"):
        return "command:" + str(body["trigger_id"])
    if body.get("trigger_id") and body.get("type") == "block_actions":
        return "action:" + str(body["trigger_id"])
    return None


class RecentDeliveries:
    """The last REMEMBERED delivery keys this process saw, in memory."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen before; records it either way."""
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return True
            self._keys[key] = None
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
            return False
