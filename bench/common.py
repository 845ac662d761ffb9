"""What the benchmarks share: a minimal plan, and the process's resident memory sampled while work runs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

PLAN = {
    "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"],
              "approvers": ["U0BOB", "U0CAROL", "U0DAVE"], "required_approvals": 2,
              "approval_reaction": "white_check_mark", "approval_ttl": "15m"},
    "hosts": {"old": {"address": "127.0.0.1", "user": "deploy"},
              "new": {"address": "127.0.0.1", "user": "deploy"}},
    "stages": [{"name": "db-import", "host": "new", "command": "./deploy.sh db-import"}],
}


def rss_kb(pid: int | None = None) -> int:
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


class PeakRss:
    """The highest resident set size seen, sampled every 20 ms while the block runs."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kb(self.pid))

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb(self.pid))
