"""A preflight kept fresh while a request is open, so that the last approval is answered in milliseconds.

While a request waits for its approvals, its full preflight runs again every
``FRESH_EVERY`` seconds and on each approval. At the threshold, a full
preflight that passed within ``FRESH_FOR`` is only confirmed: what can change
in seconds (health files, keepalived's states, the VIP, stages, freezes) is
read again in one SSH command per server, and the rest is taken from it. An
older one is run again in full.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from bot.ledger.model import Tally
from bot.states import RequestState
from bot.switch.model import Preflight
from bot.switch.preflight import Preflights
from bot.switch.requests import Requests

FRESH_EVERY = 5.0  # while a request is open, its full preflight is run again this often, and on each approval
FRESH_FOR = 10.0  # at the threshold, a passed full preflight this recent needs only a fast confirmation


class FreshPreflights:
    def __init__(self, preflights: Preflights, requests: Requests, say: Callable[[int, str], None]) -> None:
        self.preflights = preflights
        self.requests = requests
        self.say = say  # into the request's thread
        self._fresh: dict[int, tuple[float, Preflight]] = {}  # request -> (monotonic, its last full preflight)
        self._lock = threading.Lock()

    def remember(self, request_id: int, preflight: Preflight, started: float) -> None:
        """Keep ``preflight`` (begun at ``started``, monotonic) unless a later-begun one is already kept."""
        with self._lock:
            kept = self._fresh.get(request_id)
            if kept is None or kept[0] < started:
                self._fresh[request_id] = (started, preflight)

    def refresh(self, request_id: int | None = None) -> None:
        """Run the full preflight again for the open request(s), so that the threshold finds it fresh."""
        for request in self.requests.in_state(RequestState.OPEN):
            if request_id is not None and request.id != request_id:
                continue
            started = time.monotonic()
            self.remember(request.id, self.preflights.run(request.kind, ignore_request=request.id), started)
        open_ids = {r.id for r in self.requests.in_flight()}
        with self._lock:  # forget closed requests
            for gone in [r for r in self._fresh if r not in open_ids]:
                del self._fresh[gone]

    def recheck(self, request_id: int, kind: str) -> tuple[Preflight, str]:
        """The check at the threshold, and how it was made: a fast confirmation beside a fresh full preflight,
        else a full one."""
        fresh = self._fresh_one(request_id)
        if fresh is not None:
            started = time.monotonic()
            confirmation = self.preflights.confirm(kind, ignore_request=request_id)
            took = (time.monotonic() - started) * 1000
            merged = {c.name: c for c in fresh[1].checks}
            merged.update({c.name: c for c in confirmation.checks})
            how = (f"the preflight of {fresh[0]:.0f} s ago, confirmed in {took:.0f} ms (health files, keepalived, "
                   "VIP, stages, freezes" + (", the must-be-zero watches" if confirmation.tally else "") + ")")
            return Preflight(kind, confirmation.at, tuple(merged.values()),
                             _merged(fresh[1].tally, confirmation.tally), fresh[1].grid), how
        self.say(request_id, f"Approvals complete. Running the preflight again before the "
                             f"{'flip' if kind == 'golive' else 'rollback'}…")
        return self.preflights.run(kind, ignore_request=request_id), "a full preflight"

    def _fresh_one(self, request_id: int) -> tuple[float, Preflight] | None:
        """The request's last full preflight, with its age in seconds, if it passed within FRESH_FOR."""
        with self._lock:
            fresh = self._fresh.get(request_id)
        if fresh is None or not fresh[1].ok or time.monotonic() - fresh[0] > FRESH_FOR:
            return None
        return time.monotonic() - fresh[0], fresh[1]


def _merged(fresh: Tally | None, confirmed: Tally | None) -> Tally | None:
    """The fresh preflight's counts, with those counted again at the threshold in their place."""
    if fresh is None or confirmed is None:
        return confirmed or fresh
    again = {c.watch: c for c in confirmed.counts}
    return replace(fresh, counts=tuple(again.get(c.watch, c) for c in fresh.counts))
