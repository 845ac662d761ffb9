"""APScheduler's background scheduler with its loop watched: a death is recorded, not lost, and can be undone.

In APScheduler 3 an exception that escapes the scheduler's loop ends its
thread for good, silently, with every job still in the store. Here the loop
records why it ended, so that the watchdog can say so and ``revive`` it:
a new thread on the same scheduler, its jobs untouched. One case is no
death: ``shutdown`` racing a job that falls due (the store is emptied under
the loop, which then cannot find the job it ran); that ends quietly. A job
that raises is logged by its id, and the scheduler runs on.
"""

from __future__ import annotations

import logging
import threading
from datetime import timezone

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

from bot.threads import Death, describe, record_death

log = logging.getLogger("cutover.scheduler")


class WatchedScheduler(BackgroundScheduler):
    def __init__(self) -> None:
        super().__init__(timezone=timezone.utc)
        self.death: Death | None = None
        self.add_listener(self._job_failed, EVENT_JOB_ERROR)

    @staticmethod
    def _job_failed(event: JobExecutionEvent) -> None:
        """A job that raises is one failed run, said by its id; the scheduler goes on."""
        from bot.workers import error_ref

        exc = event.exception
        log.error("the scheduled job `%s` failed (ref %s): %s", event.job_id, error_ref(), describe(exc),
                  exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)

    def _main_loop(self) -> None:
        try:
            super()._main_loop()
        except BaseException as exc:
            if self.state == STATE_STOPPED:
                log.debug("the scheduler's loop ended with its shutdown (%s)", exc.__class__.__name__)
                return
            self.death = record_death("the scheduler", exc)

    def dead(self) -> Death | None:
        """How the loop's thread ended while the scheduler should be running; None while it runs."""
        if self.state == STATE_STOPPED:
            return None
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            return None
        return self.death or Death.unexplained()

    def revive(self) -> None:
        """A new loop on the same jobs, woken at once so that whatever fell due meanwhile runs now."""
        self.death = None
        self._event = threading.Event()
        self._thread = threading.Thread(target=self._main_loop, name="APScheduler", daemon=True)
        self._thread.start()
        self.wakeup()
