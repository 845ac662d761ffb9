"""The worker pool long work is handed to, so that no Slack listener ever blocks.

A failure inside a job is logged in full with a short reference, and the
person who asked gets that reference instead of a traceback.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("cutover.workers")


def error_ref() -> str:
    """A short reference tying what a person is told to the full entry in the log."""
    return "E" + secrets.token_hex(3).upper()


class Workers:
    def __init__(self, size: int = 8, name: str = "cutover-work") -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    def submit(self, what: str, fn: Callable[..., Any], *args: Any,
               on_error: Callable[[str], None] | None = None, **kwargs: Any) -> Future:
        def job() -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                ref = error_ref()
                log.exception("%s failed (ref %s)", what, ref)
                if on_error is not None:
                    try:
                        on_error(ref)
                    except Exception:
                        log.exception("reporting the failure of %s failed too (ref %s)", what, ref)
                return None

        try:
            return self._pool.submit(job)
        except RuntimeError:  # the pool is shut down: the bot is stopping, and its next start takes this up
            log.warning("%s was not started: the bot is stopping", what)
            done: Future = Future()
            done.set_result(None)
            return done

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
