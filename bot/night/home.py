"""The app's Home tab: the runbook as it stands, for everyone who has opened it, kept up to date.

Opening the tab publishes it at once. After that a job compares what the tab
would show with what each person was last shown, and publishes only a
change, at most once every ``HOME_EVERY`` seconds per person: a running
stage's clock must not turn into a flood of ``views.publish``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Callable

from bot.clock import Clock
from bot.night import blocks as night_blocks
from bot.night.model import StatusReport
from bot.slackapi.notifier import Notifier

log = logging.getLogger("cutover.home")

HOME_EVERY = 5.0
MAX_VIEWERS = 200  # the people who opened the tab since the bot started; the oldest are let go beyond this


class HomeView:
    def __init__(self, notifier: Notifier, clock: Clock, status: Callable[[], StatusReport]) -> None:
        self.notifier = notifier
        self.clock = clock
        self.status = status
        self.every = HOME_EVERY
        self._shown: dict[str, tuple[str, float]] = {}  # user -> (digest of what they were shown, monotonic when)
        self._lock = threading.Lock()

    def opened(self, user: str) -> bool:
        """``user`` opened the tab: publish it for them now."""
        body = night_blocks.status_body(self.status(), stage_budget=80)
        return self._publish(user, body, _digest(body))

    def refresh(self) -> int:
        """Publish the tab to whoever was shown something else, at most once every HOME_EVERY s each."""
        with self._lock:
            viewers = dict(self._shown)
        if not viewers:
            return 0
        body = night_blocks.status_body(self.status(), stage_budget=80)
        digest = _digest(body)
        now = time.monotonic()
        sent = 0
        for user, (shown, at) in viewers.items():
            if shown != digest and now - at >= self.every:
                sent += self._publish(user, body, digest)
        return sent

    def _publish(self, user: str, body: list[dict], digest: str) -> bool:
        ok = self.notifier.publish_home(user, night_blocks.home_view(body, self.clock.now()))
        with self._lock:
            # a failed publish is tried again at the next refresh (its digest is not recorded as shown)
            self._shown[user] = (digest if ok else "", time.monotonic())
            while len(self._shown) > MAX_VIEWERS:
                self._shown.pop(next(iter(self._shown)))
        if not ok:
            log.warning("the Home tab of %s was not published (%s); trying again", user, self.notifier.last_error())
        return ok


def _digest(body: list[dict]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
