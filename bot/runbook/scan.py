"""Reading a stage's output as it streams: the last lines, the latest progress, the notable lines.

Pure: bytes in, a ``Scan`` out, no I/O. It works on bytes and decodes only
what it shows, so a chunk of a megabyte costs a few searches, not a Python
loop over its lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOTABLE_WORDS = ("error", "fatal", "failed", "exception", "traceback", "panic")
DEFAULT_NOTABLE = re.compile(r"\b(?:" + "|".join(NOTABLE_WORDS) + r")\b", re.IGNORECASE)
NOTABLE_LIMIT = 30
LAST_LINES = 5
LINE_SHOWN = 200
NOTABLE_SHOWN = 300
PARTIAL_KEPT = 4096
PROGRESS_LOOKBACK = 50
_WORDS = tuple(w.encode() for w in NOTABLE_WORDS)


@dataclass(frozen=True)
class Scan:
    """What one chunk added: its last complete lines, the latest progress match, new notable lines."""

    last_lines: tuple[str, ...] = ()
    progress: dict[str, str | None] | None = None
    notable: tuple[str, ...] = ()
    overflow: bool = False


ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def shown(line: bytes, limit: int) -> str:
    """A line of output as Slack shows it: decoded, without terminal escape codes (colours, cursor moves), cut.

    The uploaded log keeps them: it is the host's bytes."""
    return ANSI.sub("", line[:limit * 4].decode("utf-8", "replace"))[:limit]



class OutputScanner:
    """Feed it chunks in order; it keeps the unfinished last line until its newline arrives."""

    def __init__(self, progress: re.Pattern[str] | None = None, notable: re.Pattern[str] | None = None,
                 limit: int = NOTABLE_LIMIT, already: int = 0, scan_notable: bool = True) -> None:
        self.progress = progress
        self.notable = notable or DEFAULT_NOTABLE
        self.scan_notable = scan_notable
        self.room = max(0, limit - already)
        self.overflowed = False
        self.partial = b""

    def feed(self, data: bytes) -> Scan:
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = (self.partial + data)[-PARTIAL_KEPT:]
            return Scan()
        complete = self.partial + data[:cut] if self.partial else data[:cut]
        self.partial = data[cut + 1:][-PARTIAL_KEPT:]
        tail = complete.rsplit(b"\n", PROGRESS_LOOKBACK)
        lines = tuple(shown(line, LINE_SHOWN) for line in tail[-LAST_LINES:])
        notable, overflow = self._notable(complete)
        return Scan(lines, self._progress(complete, tail), notable, overflow)

    def flush(self) -> str | None:
        """The last line if the output did not end with a newline."""
        if not self.partial:
            return None
        line, self.partial = self.partial, b""
        return shown(line, LINE_SHOWN)

    def _progress(self, complete: bytes, tail: list[bytes]) -> dict[str, str | None] | None:
        if self.progress is None:
            return None
        for line in reversed(tail):
            match = self.progress.search(line.decode("utf-8", "replace"))
            if match:
                return match.groupdict()
        if len(tail) <= PROGRESS_LOOKBACK:
            return None
        last = None
        for last in self.progress.finditer(complete.decode("utf-8", "replace")):
            pass
        return last.groupdict() if last else None

    def _notable(self, complete: bytes) -> tuple[tuple[str, ...], bool]:
        if not self.scan_notable or self.overflowed or not self._may_be_notable(complete):
            return (), False
        found: list[str] = []
        for line in complete.decode("utf-8", "replace").split("\n"):
            line = ANSI.sub("", line)
            if self.notable.search(line):
                if len(found) == self.room:
                    self.overflowed = True
                    break
                found.append(line[:NOTABLE_SHOWN])
        self.room -= len(found)
        return tuple(found), self.overflowed

    def _may_be_notable(self, chunk: bytes) -> bool:
        """A cheap first look: the default pattern's words as byte substrings (a regex scan costs ~30 ms/MB)."""
        if self.notable is DEFAULT_NOTABLE:
            low = chunk.lower()
            return any(word in low for word in _WORDS)
        return self.notable.search(chunk.decode("utf-8", "replace")) is not None
