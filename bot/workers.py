"""The worker lanes long work is handed to, so that no Slack listener ever blocks.

A lane is a fixed set of threads taking jobs from one queue. A failure inside
a job is logged in full with a short reference, and the person who asked gets
that reference instead of a traceback. A thread that dies all the same (a
job raising past ``Exception``) is recorded, and the watchdog says so and
starts another in its place.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from concurrent.futures import Future
from typing import Any, Callable

from bot.threads import Death, record_death

log = logging.getLogger("cutover.workers")

_STOP = object()


def error_ref() -> str:
    """A short reference tying what a person is told to the full entry in the log."""
    return "E" + secrets.token_hex(3).upper()


class Workers:
    def __init__(self, size: int = 8, name: str = "cutover-work", does: str = "") -> None:
        self.name = name
        self.does = does or "the work handed to it"
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._deaths: dict[int, Death] = {}  # slot -> how its thread died, until it is replaced
        for slot in range(size):
            self._threads.append(self._start(slot))

    def submit(self, what: str, fn: Callable[..., Any], *args: Any,
               on_error: Callable[[str], None] | None = None, **kwargs: Any) -> Future:
        done: Future = Future()
        with self._lock:
            if self._closed:  # the bot is stopping, and its next start takes this up
                log.warning("%s was not started: the bot is stopping", what)
                done.set_result(None)
                return done
            self._queue.put((done, what, fn, args, kwargs, on_error))
        return done

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            if not wait:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        item[0].cancel()
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(_STOP)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    # -- watched -----------------------------------------------------------------------------------

    def dead(self) -> Death | None:
        """How the first of this lane's dead threads died, while the lane should run; None when all live."""
        with self._lock:
            if self._closed:
                return None
            for slot, thread in enumerate(self._threads):
                if not thread.is_alive():
                    return self._deaths.get(slot) or Death.unexplained()
        return None

    def revive(self) -> None:
        """Start a new thread in the place of each one that died."""
        with self._lock:
            if self._closed:
                return
            for slot, thread in enumerate(self._threads):
                if not thread.is_alive():
                    self._deaths.pop(slot, None)
                    self._threads[slot] = self._start(slot)

    # -- inside ------------------------------------------------------------------------------------

    def _start(self, slot: int) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(slot,), name=f"{self.name}-{slot}", daemon=True)
        thread.start()
        return thread

    def _loop(self, slot: int) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                self._run(*item)
        except BaseException as exc:
            self._deaths[slot] = record_death(f"{self.name} (thread {slot})", exc)

    @staticmethod
    def _run(done: Future, what: str, fn: Callable[..., Any], args: tuple, kwargs: dict,
             on_error: Callable[[str], None] | None) -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception:
            ref = error_ref()
            log.exception("%s failed (ref %s)", what, ref)
            if on_error is not None:
                try:
                    on_error(ref)
                except Exception:
                    log.exception("reporting the failure of %s failed too (ref %s)", what, ref)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            raise
