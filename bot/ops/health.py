"""Whether the bot can do its job now: readiness for ``/readyz``, the health file and ``cutover status --local``.

Ready means: Slack's Web API answers the bot's token, the database takes a
write, the scheduler (freezes, reminders, go-live expiry) runs, and so does
every other background thread the watchdog watches. Each is
asked with a short deadline of its own, so a readiness probe is never stuck
behind the thing it checks. The running bot writes the answer to a health file
every ``WRITE_EVERY`` seconds from its watchdog, so a file older than
``STALE_AFTER`` means the bot (or its watchdog) is not running.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.ops.replica import Replica
from bot.ops.scheduler import WatchedScheduler
from bot.ops.watchdog import Watchdog
from bot.settings import Settings
from bot.store import database_writable

SLACK_DEADLINE = 3.0
DB_DEADLINE = 2.0
CACHE_FOR = 5.0  # a flood of /readyz asks Slack once per this many seconds
WRITE_EVERY = 15
STALE_AFTER = 60


@dataclass(frozen=True)
class Item:
    name: str
    ok: bool
    detail: str


class Readiness:
    def __init__(self, settings: Settings, scheduler: WatchedScheduler, watchdog: Watchdog | None = None,
                 replica: Replica | None = None) -> None:
        self.settings = settings
        self.replica = replica
        self.scheduler = scheduler
        self.watchdog = watchdog
        self.slack = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url,
                               timeout=int(SLACK_DEADLINE))
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Item]] | None = None

    def check(self) -> list[Item]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_FOR:
                return self._cached[1]
            items = [self._slack(), self._database(), self._scheduler()]
            if self.watchdog is not None:
                items.append(self._threads())
            if self.replica is not None:
                items.append(Item("replica", *self.replica.said()))
            self._cached = (time.monotonic(), items)
            return items

    def _database(self) -> Item:
        path = self.settings.db_path
        problem = database_writable(path, DB_DEADLINE)
        return Item("database", problem is None, f"{path} takes writes" if problem is None else problem)

    def _slack(self) -> Item:
        try:
            self.slack.auth_test()
            return Item("slack", True, "Slack's Web API accepts the bot token")
        except SlackApiError as exc:
            return Item("slack", False, f"Slack answered `{exc.response.get('error', 'an error')}` to auth.test")
        except (SlackClientError, OSError) as exc:
            return Item("slack", False, f"Slack's Web API gave no answer ({exc.__class__.__name__}, within a "
                                        f"{SLACK_DEADLINE:g}s deadline): check SLACK_API_URL and the network")

    def _scheduler(self) -> Item:
        if self.scheduler.running and self.scheduler.dead() is None:
            restarted = [st.detail for st in (self.watchdog.states() if self.watchdog else [])
                         if st.name == "the scheduler" and st.ok]
            return Item("scheduler", True, "the scheduler runs (freezes, reminders, go-live expiry)"
                        + (f"; {restarted[0]}" if restarted else ""))
        if self.watchdog is not None:
            gone = [st.detail for st in self.watchdog.states() if st.name == "the scheduler" and not st.ok]
            if gone:
                return Item("scheduler", False, gone[0])
        return Item("scheduler", False, "the scheduler is not running: freezes, reminders and go-live expiry "
                                        "would not happen")

    def _threads(self) -> Item:
        assert self.watchdog is not None
        states = [s for s in self.watchdog.states() if s.name != "the scheduler"]  # the item above says it
        down = [s.detail for s in states if not s.ok]
        if down:
            return Item("threads", False, "; ".join(down))
        restarted = [s.detail for s in states if s.ok]
        return Item("threads", True, "every background thread runs"
                    + (" (" + "; ".join(restarted) + ")" if restarted else ""))


def health_file(settings: Settings) -> Path:
    return Path(f"{settings.db_path}.health.json")


def write_health(path: Path, items: list[Item], mode: str, note: str | None = None) -> None:
    """The state of readiness, for ``cutover status --local`` and a container's HEALTHCHECK; by rename."""
    ready = note is None and all(item.ok for item in items)
    body = {"ready": ready, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
            "mode": mode, "note": note, "checks": [asdict(item) for item in items]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)


def read_health(path: Path, now: datetime | None = None) -> tuple[bool, list[str]]:
    """What the health file says, as lines for a person, and whether the bot is ready by it."""
    try:
        body = json.loads(path.read_text())
        at = datetime.fromisoformat(body["at"])
    except FileNotFoundError:
        return False, [f"✘ no health file at {path}: the bot is not running here, or has not finished starting "
                       "(it is beside CUTOVER_DB)"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, [f"✘ the health file {path} cannot be read: {exc.__class__.__name__}"]
    age = ((now or datetime.now(timezone.utc)) - at).total_seconds()
    lines = [f"{'✔' if c.get('ok') else '✘'} {c.get('name')}: {c.get('detail')}" for c in body.get("checks", [])]
    if body.get("note"):
        lines.append(f"✘ {body['note']}")
    if age > STALE_AFTER:
        lines.append(f"✘ the health file is {age:.0f}s old (written every {WRITE_EVERY}s): the bot (pid "
                     f"{body.get('pid')}) has stopped, or its watchdog has")
        return False, lines
    ready = bool(body.get("ready"))
    lines.append(f"{'ready' if ready else 'NOT ready'} ({body.get('mode')} mode, pid {body.get('pid')}, "
                 f"checked {age:.0f}s ago)")
    return ready, lines
