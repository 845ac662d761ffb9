"""The night's records, together, as the read-back (status, the Home tab, the report) reads them."""

from __future__ import annotations

from dataclasses import dataclass

from bot.clock import Clock
from bot.freezes.records import FreezeRecords
from bot.ledger.counts import Counts
from bot.plan import Plan
from bot.runbook.runs import Runs
from bot.store import Store
from bot.switch.requests import Requests


@dataclass(frozen=True)
class Records:
    runs: Runs
    requests: Requests
    freezes: FreezeRecords
    counts: Counts
    store: Store  # the audit log

    @classmethod
    def on(cls, store: Store, clock: Clock, plan: Plan) -> "Records":
        return cls(Runs(store, clock), Requests(store, clock), FreezeRecords(store, clock), Counts(store, clock, plan),
                   store)
