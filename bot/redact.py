"""Secrets never reach Slack: token values and the plan's patterns become ``[redacted]``.

Text is redacted as text; logs are redacted as the bytes the host wrote (an
invalid UTF-8 byte stays what it was), and a log of any size is redacted as
a stream in bounded memory.
"""

from __future__ import annotations

import re
import shutil
from typing import Any, BinaryIO, Iterable

MARK = "[redacted]"
MARK_BYTES = MARK.encode()
CHUNK = 1 << 20
LONG_LINE = 4 << 20
KEEP = 64 << 10  # bytes held back from a cut inside a long line: the longest secret a cut can never split


class Redactor:
    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[re.Pattern[str]] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        patterns = list(patterns)
        parts = [re.escape(v) for v in values] + [p.pattern for p in patterns]
        self._re = re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None
        flags = 0
        for p in patterns:
            flags |= p.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE)
        self._bytes_re = re.compile("|".join(f"(?:{p})" for p in parts).encode(), flags) if parts else None

    def text(self, value: str) -> str:
        if self._re is None or not value:
            return value
        return self._re.sub(MARK, value)

    def bytes(self, value: bytes) -> bytes:
        if self._bytes_re is None:
            return value
        return self._bytes_re.sub(MARK_BYTES, value)

    def deep(self, value: Any) -> Any:
        """Redact every string inside a Block Kit structure."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        return value

    def copy(self, src: BinaryIO, dst: BinaryIO) -> None:
        """Redact ``src`` into ``dst`` a chunk at a time: memory stays bounded whatever the size or line length.

        Complete lines are redacted whole. A line longer than LONG_LINE is cut, but never inside a match, and
        the last KEEP bytes before the cut wait for the next chunk so that a secret is never split.
        """
        if self._bytes_re is None:
            shutil.copyfileobj(src, dst, CHUNK)
            return
        pending = b""
        while True:
            data = src.read(CHUNK)
            if not data:
                break
            buf = pending + data if pending else data
            cut = buf.rfind(b"\n")
            if cut >= 0:
                dst.write(self._bytes_re.sub(MARK_BYTES, buf[:cut + 1]))
                pending = buf[cut + 1:]
            elif len(buf) > LONG_LINE:
                done, upto = self._prefix(buf, len(buf) - KEEP)
                dst.write(done)
                pending = buf[upto:]
            else:
                pending = buf
        if pending:
            dst.write(self._bytes_re.sub(MARK_BYTES, pending))

    def _prefix(self, buf: bytes, upto: int) -> tuple[bytes, int]:
        """``buf[:upto]`` redacted, with ``upto`` moved back to the start of a match that crosses it."""
        assert self._bytes_re is not None
        out, pos = [], 0
        for match in self._bytes_re.finditer(buf):
            if match.start() >= upto:
                break
            if match.end() > upto:
                upto = match.start()
                break
            out += [buf[pos:match.start()], MARK_BYTES]
            pos = match.end()
        out.append(buf[pos:upto])
        return b"".join(out), upto
