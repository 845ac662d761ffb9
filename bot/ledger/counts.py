"""The data window's counts, the record: every write to ``watch_counts`` and every read of it."""

from __future__ import annotations

import json
from datetime import datetime

from bot.clock import Clock, parse_optional_time, parse_time
from bot.ledger.model import Count
from bot.plan import DataPlan, Plan
from bot.runbook.runs import Runs
from bot.store import Store

def copy_moment(data: DataPlan, runs: Runs) -> tuple[datetime | None, str]:
    """When the old server's data was copied, and where that comes from; None (and why) when it was not: the start,
    by its host's clock, of the copy stage's last successful run, or the plan's ``copied_at``."""
    if data.copied_at is not None:
        return data.copied_at, "the plan's `copied_at`"
    stage = data.copy_stage
    if stage is None:
        return None, "the plan names no copy (`[data] copy_stage` or `copied_at`)"
    run = runs.last_success(stage)
    if run is None:
        return None, f"`{stage}`, the stage that copies the data, has not succeeded yet: there is no copy to count from"
    if run.host_started_at is not None:
        return run.host_started_at, f"the start of `{stage}` on `{run.host}`, by its clock"
    return run.started_at, f"the start of `{stage}`, by the bot's clock (its host did not say)"


class Counts:
    def __init__(self, store: Store, clock: Clock, plan: Plan) -> None:
        self.store = store
        self.clock = clock
        self.plan = plan

    def add(self, count: Count, purpose: str, request_id: int | None = None) -> None:
        """``purpose``: why it was counted — ``preflight``, ``losses`` (asked for) or ``final`` (a closed window)."""
        with self.store.transaction() as db:
            db["watch_counts"].insert({
                "watch": count.watch, "purpose": purpose, "request_id": request_id, "counted_at": count.at.isoformat(),
                "since": count.since.isoformat(), "until": count.until.isoformat() if count.until else None,
                "count": count.count, "rows": json.dumps(list(count.rows)), "more": count.more,
                "error": count.error or None})

    def latest(self) -> dict[str, Count]:
        """Each watch's latest count, whatever it was counted for."""
        rows = self.store.query("SELECT * FROM watch_counts WHERE id IN (SELECT MAX(id) FROM watch_counts GROUP BY watch)")
        return {r["watch"]: c for r in rows if (c := self._count(r)) is not None}

    def final(self, request_id: int) -> list[Count]:
        """The counts over the closed window of a go-live (each watch's latest, if it was counted again), in the
        plan's order."""
        rows = self.store.query("SELECT * FROM watch_counts WHERE id IN (SELECT MAX(id) FROM watch_counts "
                                "WHERE purpose = 'final' AND request_id = ? GROUP BY watch)", [request_id])
        by_watch = {c.watch: c for r in rows if (c := self._count(r)) is not None}
        return [by_watch[w.name] for w in self.plan.data.watches if w.name in by_watch]

    def closed_window(self) -> tuple[datetime, datetime, int] | None:
        """The last window a go-live closed: its start, its end and the request that closed it."""
        rows = self.store.query("SELECT since, until, request_id FROM watch_counts WHERE purpose = 'final' "
                                "AND until IS NOT NULL ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        return parse_time(rows[0]["since"]), parse_time(rows[0]["until"]), rows[0]["request_id"]

    def _count(self, row: dict) -> Count | None:
        watch = self.plan.data.watch(row["watch"])
        if watch is None:
            return None  # a watch the plan no longer has
        return Count(watch=watch.name, label=watch.label, losses=watch.losses, since=parse_time(row["since"]),
                     at=parse_time(row["counted_at"]), until=parse_optional_time(row["until"]), count=row["count"],
                     rows=tuple(json.loads(row["rows"] or "[]")), more=row["more"], error=row["error"] or "",
                     freeze=watch.freeze)
