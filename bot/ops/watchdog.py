"""Every background thread of the bot, watched: a dead one is said once in the channel, restarted, and named at
``/readyz``; one that cannot be restarted ends the process, so that systemd or Docker start it again.

The watchdog looks every second at what it watches: the scheduler, each
worker lane, each stage's follower. A thread that ended while it should run
is restarted, and the channel is told when it stopped, why, and when what it
does resumed. One that keeps dying (RESTARTS_ALLOWED within RESTART_WINDOW),
or whose restart fails, is said as such, and ``fatal`` is set: ``cutover
run`` then exits non-zero. The watchdog also writes the health file, and is
itself watched by a scheduler job: each of the two restarts the other.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from bot.clock import Clock
from bot.durations import format_duration
from bot.slackapi.blocks import sentence, slack_date
from bot.slackapi.notifier import Notifier
from bot.threads import Death, Watched, record_death

log = logging.getLogger("cutover.watchdog")

SWEEP_EVERY = 1.0
RESTARTS_ALLOWED = 3
RESTART_WINDOW = 600.0
REMEMBER_RESTARTS = 600.0  # how long /readyz and status --local name a thread that was restarted
RESTART_HINT = "restart the bot (`systemctl restart cutover`, or its container)"


@dataclass(frozen=True)
class ThreadState:
    """What readiness says of one watched thing that is, or was lately, not running."""

    name: str
    ok: bool
    detail: str


@dataclass
class _Down:
    death: Death
    died_at: datetime
    restarted_at: datetime | None = None
    gave_up: str = ""
    seen: float = field(default_factory=time.monotonic)


class Watchdog:
    def __init__(self, notifier: Notifier, clock: Clock, every: float = SWEEP_EVERY) -> None:
        self.notifier = notifier
        self.clock = clock
        self.every = every
        self.fatal = threading.Event()
        self.fatal_reason = ""
        self._watched: list[Watched] = []
        self._sources: list[Callable[[], list[Watched]]] = []
        self._restarts: dict[str, list[float]] = {}
        self._down: dict[str, _Down] = {}
        self._unsaid: list[str] = []  # what the channel must still be told (Slack refused it so far)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._death: Death | None = None
        self._tasks: list[tuple[float, Callable[[], None], list[float]]] = []  # every, what, [next due]

    # -- what it watches ---------------------------------------------------------------------

    def watch(self, watched: Watched) -> None:
        self._watched.append(watched)

    def watch_each(self, source: Callable[[], list[Watched]]) -> None:
        """Things that come and go (a follower per running stage): ``source`` lists those to watch now."""
        self._sources.append(source)

    def every_sweep(self, seconds: float, task: Callable[[], None]) -> None:
        """Run ``task`` from the watchdog's thread every ``seconds`` (the health file: written even when the
        scheduler is down)."""
        self._tasks.append((seconds, task, [time.monotonic()]))

    # -- its own thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def itself(self) -> Watched:
        """The watchdog as something to watch, for the scheduler job that keeps it running."""
        return Watched("the watchdog", "watching the bot's threads and writing the health file",
                       dead=self._dead, revive=self.start)

    def ensure_running(self) -> None:
        """From a scheduler job: the watchdog's own thread, restarted (and said) if it died."""
        self._check(self.itself())

    def _dead(self) -> Death | None:
        if self._stop.is_set() or self._thread is None or self._thread.is_alive():
            return None
        return self._death or Death.unexplained()

    def _loop(self) -> None:
        self._death = None
        try:
            while not self._stop.wait(self.every):
                self.sweep()
        except BaseException as exc:
            self._death = record_death("the watchdog", exc)

    def sweep(self) -> None:
        """Look at everything watched once; restart and say what died; run the periodic tasks."""
        for watched in self._everything():
            self._check(watched)
        self._say_unsaid()
        now = time.monotonic()
        for seconds, task, due in self._tasks:
            if now >= due[0]:
                due[0] = now + seconds
                try:
                    task()
                except Exception:
                    log.exception("a periodic task of the watchdog failed")

    def _everything(self) -> list[Watched]:
        found = list(self._watched)
        for source in self._sources:
            try:
                found += source()
            except Exception:
                log.exception("listing what to watch failed")
        return found

    # -- a death ------------------------------------------------------------------------------------

    def _check(self, watched: Watched) -> None:
        death = watched.dead()
        if death is None:
            return
        with self._lock:
            down = self._down.get(watched.name)
            if down is not None and down.gave_up:
                return  # said, and the process is on its way out
            died_at = self.clock.now() - timedelta(seconds=max(0.0, time.monotonic() - death.at))
            now_mono = time.monotonic()
            recent = [t for t in self._restarts.get(watched.name, []) if now_mono - t < RESTART_WINDOW]
            if len(recent) >= RESTARTS_ALLOWED:
                self._give_up(watched, death, died_at, f"it stopped {len(recent) + 1} times within "
                                                       f"{format_duration(RESTART_WINDOW)}")
                return
            try:
                watched.revive()
            except Exception as exc:
                log.exception("restarting %s failed", watched.name)
                self._give_up(watched, death, died_at, f"restarting it failed ({exc.__class__.__name__}: {exc})")
                return
            self._restarts[watched.name] = recent + [now_mono]
            restarted = self.clock.now()
            self._down[watched.name] = _Down(death, died_at, restarted)
        log.warning("%s stopped (%s) and was restarted", watched.name, death.why)
        self._say(f"⚠️ {sentence(watched.name)} stopped at {slack_date(died_at)} ({death.why}); "
                  f"{watched.resumed_at(slack_date(restarted))}.")

    def _give_up(self, watched: Watched, death: Death, died_at: datetime, why: str) -> None:
        self._down[watched.name] = _Down(death, died_at, gave_up=why)
        self.fatal_reason = f"{watched.name} stopped ({death.why}) and could not be restarted: {why}"
        log.error("%s; exiting so that the service manager starts the bot again", self.fatal_reason)
        self._say(f"🛑 {sentence(watched.name)} stopped at {slack_date(died_at)} ({death.why}) and could not be "
                  f"restarted: {why}. Until the bot restarts, {watched.does} do not happen: {RESTART_HINT}.")
        self.fatal.set()

    def _say(self, text: str) -> None:
        with self._lock:
            self._unsaid.append(text)
        self._say_unsaid()

    def _say_unsaid(self) -> None:
        """Post what is still unsaid, oldest first; what Slack refuses is tried again at the next sweep."""
        with self._lock:
            while self._unsaid:
                if self.notifier.post(self._unsaid[0]) is None:
                    log.warning("the channel was not told that a thread stopped (%s); trying again",
                                self.notifier.last_error())
                    return
                self._unsaid.pop(0)

    # -- what readiness says --------------------------------------------------------------------------

    def states(self) -> list[ThreadState]:
        """The watched things that are down, or were restarted within REMEMBER_RESTARTS, for /readyz."""
        out = []
        with self._lock:
            for name, down in list(self._down.items()):
                if down.gave_up:
                    out.append(ThreadState(name, False, f"{name} stopped at {_utc(down.died_at)} "
                                                        f"({down.death.why}) and could not be restarted: "
                                                        f"{down.gave_up}; {RESTART_HINT}"))
                elif time.monotonic() - down.seen < REMEMBER_RESTARTS:
                    out.append(ThreadState(name, True, f"{name} stopped at {_utc(down.died_at)} "
                                                       f"({down.death.why}) and was restarted at "
                                                       f"{_utc(down.restarted_at)}"))
                else:
                    del self._down[name]
        for watched in self._everything() + [self.itself()]:
            if watched.name not in self._down and (death := watched.dead()) is not None:
                out.append(ThreadState(watched.name, False, f"{watched.name} is not running ({death.why}); "
                                                            f"{watched.does} do not happen"))
        return out


def _utc(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S UTC") if when else "?"
