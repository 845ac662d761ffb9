"""Secrets never reach Slack: token values and the plan's patterns become ``[redacted]``."""

from __future__ import annotations

import re
from typing import Any, Iterable

MARK = "[redacted]"


class Redactor:
    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[re.Pattern[str]] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        parts = [re.escape(v) for v in values] + [p.pattern for p in patterns]
        self._re = re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None

    def text(self, value: str) -> str:
        if self._re is None or not value:
            return value
        return self._re.sub(MARK, value)

    def bytes(self, value: bytes) -> bytes:
        if self._re is None:
            return value
        return self.text(value.decode("utf-8", "replace")).encode()

    def deep(self, value: Any) -> Any:
        """Redact every string inside a Block Kit structure."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        return value
