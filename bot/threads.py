"""How a background thread ended when it should not have (recorded by the thread itself), and what the watchdog
needs to watch a thing that runs on threads of its own."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("cutover.watchdog")


@dataclass(frozen=True)
class Death:
    """When (monotonic seconds) and why a thread ended."""

    at: float
    why: str

    @classmethod
    def unexplained(cls) -> "Death":
        return cls(time.monotonic(), "it ended without saying why")


def describe(exc: BaseException) -> str:
    """``RuntimeError: the reason``, cut to a line: what the channel and /readyz say of a death."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def record_death(name: str, exc: BaseException) -> Death:
    """Log a thread's death with its traceback, once, and return what the watchdog needs of it."""
    log.error("%s stopped: %s", name, describe(exc), exc_info=exc)
    return Death(time.monotonic(), describe(exc))


@dataclass
class Watched:
    """One thing that runs on threads of its own, and how to tell it died and start it again."""

    name: str  # "the scheduler"
    does: str  # "freeze notices, reminders and go-live expiry": what stops while it is down
    dead: Callable[[], Death | None]
    revive: Callable[[], None]
    resumed: str = ""  # said after a restart, with {at}; default "<does> resumed at {at}"

    def resumed_at(self, at: str) -> str:
        return (self.resumed or f"{self.does} resumed at {{at}}").format(at=at)
