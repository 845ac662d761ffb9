"""HTTP probes: who answers at a URL right now."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    body: str
    error: str | None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def shows(self, marker: str) -> bool:
        return self.status == 200 and marker in self.body

    def describe(self) -> str:
        if self.error:
            return f"no answer ({self.error})"
        return f"HTTP {self.status} `{self.body.strip()[:80]}`"


def probe(url: str, timeout: float = 2.0) -> ProbeResult:
    request = urllib.request.Request(url, headers={"User-Agent": "cutover-probe", "Cache-Control": "no-cache",
                                                   "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return ProbeResult(response.status, response.read(4096).decode("utf-8", "replace"), None)
    except urllib.error.HTTPError as exc:
        return ProbeResult(exc.code, exc.read(4096).decode("utf-8", "replace"), None)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(None, "", str(reason) or exc.__class__.__name__)
