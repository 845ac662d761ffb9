"""Counting what the old server took after the copy: each watch's read-only command, run on its host.

The moment of the copy is the start, by its host's clock, of the plan's copy
stage's last successful run (or the plan's ``copied_at``). A watch's command
finds it in ``$CUTOVER_SINCE`` and the window's end in ``$CUTOVER_UNTIL``
(epoch seconds, exported before the command runs, never pasted into its
text; while the window is open, the end is the year 2100), and prints a
count, then one row per line. A command that fails, does not finish in its
``timeout`` or prints no number is *unknown*: nothing is guessed.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bot.clock import Clock
from bot.ledger.counts import Counts, copy_moment
from bot.ledger.model import Count, Tally
from bot.plan import OPEN_END, Plan, Watch
from bot.refusals import Refused
from bot.runbook.runner import StageRunner
from bot.runbook.runs import Runs
from bot.ssh import SSHError, SSHPool

log = logging.getLogger("cutover.ledger")


class SalvageRefused(Refused):
    """Why a watch's rows cannot be salvaged now."""

LINE_LIMIT = 300  # a row as a watch printed it, cut to this


class Ledger:
    def __init__(self, plan: Plan, ssh: SSHPool, runs: Runs, counts: Counts, clock: Clock,
                 stages: StageRunner | None = None) -> None:
        self.plan = plan
        self.stages = stages  # runs a salvage
        self.data = plan.data
        self.ssh = ssh
        self.runs = runs
        self.counts = counts
        self.clock = clock

    @property
    def watching(self) -> bool:
        return bool(self.data.watches)

    def copy_moment(self) -> tuple[datetime | None, str]:
        return copy_moment(self.data, self.runs)

    def count(self, purpose: str, until: datetime | None = None, request_id: int | None = None,
              only: set[str] | None = None) -> Tally:
        """Every watch (or those named ``only``) counted now over the copy → ``until`` (open when None), side by
        side; each recorded."""
        since, source = self.copy_moment()
        return self._count(purpose, since, source, until, request_id, only)

    def recount_closed(self, request_id: int) -> Tally | None:
        """The window go-live ``request_id`` closed, counted again over the same bounds (a final count that was
        unknown, or a second look); None when that go-live closed no window."""
        window = self.counts.closed_window()
        if window is None or window[2] != request_id:
            return None
        since, until, _ = window
        return self._count("final", since, "the copy, as the go-live's final count took it", until, request_id, None)

    def _count(self, purpose: str, since: datetime | None, source: str, until: datetime | None,
               request_id: int | None, only: set[str] | None) -> Tally:
        watches = [w for w in self.data.watches if only is None or w.name in only]
        if since is None:
            now = self.clock.now()
            counts = tuple(Count(w.name, w.label, w.losses, now, now, error=source, freeze=w.freeze) for w in watches)
            return Tally(None, source, counts, until, problem=source)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(watches))), thread_name_prefix="watch") as pool:
            counts = tuple(pool.map(lambda w: self._one(w, since, until), watches))
        for c in counts:
            self.counts.add(c, purpose, request_id)
        return Tally(since, source, counts, until)

    def salvage(self, name: str, user: str) -> tuple[int, datetime, datetime]:
        """Start the watch's salvage command as a run of its own, with the closed window's bounds in its
        environment; the run, and the window. Never automatic: an operator asks for it."""
        watch = self.data.watch(name)
        if watch is None:
            raise SalvageRefused(f"`{name}` is not a watch of the plan.")
        if watch.salvage is None:
            raise SalvageRefused(f"The watch `{name}` has no `salvage` command in the plan: nothing saves its rows.")
        window = self.counts.closed_window()
        if window is None:
            raise SalvageRefused("The data window has not closed yet: salvage runs once traffic has moved to the new "
                                 "server (after a go-live's final count), so that it takes every row of the window.")
        since, until, _ = window
        assert self.stages is not None
        run_id = self.stages.start(watch.salvage_step, user, env={
            "CUTOVER_SINCE": math.floor(since.timestamp()), "CUTOVER_UNTIL": math.ceil(until.timestamp()),
            "CUTOVER_WATCH": watch.name})
        return run_id, since, until

    def _one(self, watch: Watch, since: datetime, until: datetime | None) -> Count:
        base = Count(watch.name, watch.label, watch.losses, since, self.clock.now(), until, freeze=watch.freeze)
        env = (f"export CUTOVER_SINCE={math.floor(since.timestamp())} "
               f"CUTOVER_UNTIL={math.ceil(until.timestamp()) if until else OPEN_END} CUTOVER_WATCH={watch.name}; ")
        try:
            result = self.ssh.run(watch.host, env + watch.command, timeout=watch.timeout.total_seconds())
        except SSHError as exc:
            return _unknown(base, str(exc))
        if result.exit_code != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            return _unknown(base, f"the command exited {result.exit_code}" + (f": {said[-1][:200]}" if said else ""))
        lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
        if not lines or not lines[0].isdigit():
            shown = f"`{lines[0][:60]}`" if lines else "nothing"
            return _unknown(base, f"it printed no number (its first line: {shown})")
        rows = [ln[:LINE_LIMIT] for ln in lines[1:]]
        kept = rows[:self.data.show_ids]
        return Count(base.watch, base.label, base.losses, since, self.clock.now(), until, count=int(lines[0]),
                     rows=tuple(kept), more=len(rows) - len(kept), freeze=watch.freeze)


def _unknown(base: Count, why: str) -> Count:
    log.warning("watch %s could not be counted: %s", base.watch, why)
    return Count(base.watch, base.label, base.losses, base.since, base.at, base.until, error=why, freeze=base.freeze)
