"""The night's records, together, as the read-back (status, the Home tab, the report) reads them."""

from __future__ import annotations

from dataclasses import dataclass

from bot.clock import Clock
from bot.freezes.records import FreezeRecords
from bot.runbook.runs import Runs
from bot.store import Store
from bot.switch.requests import Requests


@dataclass(frozen=True)
class Records:
    runs: Runs
    requests: Requests
    freezes: FreezeRecords
    store: Store  # the audit log

    @classmethod
    def on(cls, store: Store, clock: Clock) -> "Records":
        return cls(Runs(store, clock), Requests(store, clock), FreezeRecords(store, clock), store)
