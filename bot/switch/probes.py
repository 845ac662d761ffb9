"""HTTP probes: who answers at a URL right now."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


BODY_LIMIT = 4096


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
    """One GET, over within about ``timeout`` seconds whatever the server does (slow headers or a trickled body)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "cutover-probe", "Cache-Control": "no-cache",
                                                   "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return ProbeResult(response.status, _body(response, deadline), None)
    except urllib.error.HTTPError as exc:
        return ProbeResult(exc.code, _body(exc, deadline), None)
    except _Late:
        return ProbeResult(None, "", f"the answer took longer than {timeout:g}s")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(None, "", str(reason) or exc.__class__.__name__)


class _Late(Exception):
    pass


def _body(response, deadline: float) -> str:  # type: ignore[no-untyped-def]
    """Up to 4 KiB of the body, read in small pieces so that the deadline holds for a trickle too."""
    data = b""
    while len(data) < BODY_LIMIT:
        if time.monotonic() > deadline:
            raise _Late()
        piece = response.read1(BODY_LIMIT - len(data)) if hasattr(response, "read1") else response.read(
            BODY_LIMIT - len(data))
        if not piece:
            break
        data += piece
    return data.decode("utf-8", "replace")
