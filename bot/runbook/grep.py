"""Notable lines found by ``grep`` reading the bot's local copy of the log, so that scanning costs the bot nothing.

The default notable words are searched case-insensitively by ``grep -a -i -E``
in C, in its own process, reading the file from the page cache; the lines it
finds are held to the in-process rule (the word as a word, terminal colour
codes aside), except a line too long to read whole, whose start is kept. The bot never copies a byte for it: once a second (and
once at the end) it runs grep over the part of the local copy not yet
scanned, up to the last complete line, and keeps the matches, each cut to
its first characters, up to the cap. A plan with its own ``notable`` pattern
(a Python regex) is scanned in-process instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bot.runbook.scan import DEFAULT_NOTABLE, NOTABLE_LIMIT, NOTABLE_SHOWN, NOTABLE_WORDS, shown

LINE_READ = 4096
GREP_TIMEOUT = 600.0


def grep_available() -> bool:
    return shutil.which("grep") is not None


class GrepNotable:
    def __init__(self, path: Path, start: int, limit: int = NOTABLE_LIMIT) -> None:
        self.path = path
        self.scanned = start  # every complete line before this offset has been looked at
        self.limit = limit
        self.lines: list[str] = []
        self.overflow = False

    def scan(self, upto: int) -> None:
        """Look at the lines between what was scanned and ``upto`` (the end of the last complete line)."""
        if self.overflow or upto <= self.scanned:
            return
        with self.path.open("rb") as f:
            f.seek(self.scanned)
            proc = subprocess.Popen(["grep", "-a", "-b", "-i", "-E", "|".join(NOTABLE_WORDS)], stdin=f,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={"LC_ALL": "C"})
            try:
                self._collect(proc, upto - self.scanned)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(GREP_TIMEOUT)
        self.scanned = upto

    def _collect(self, proc: subprocess.Popen, length: int) -> None:
        out = proc.stdout
        assert out is not None
        while True:
            line = out.readline(LINE_READ)
            if not line:
                return
            rest = line
            while not rest.endswith(b"\n"):  # a very long line: keep its start, drop the rest
                rest = out.readline(LINE_READ)
                if not rest:
                    break
            where, _, text = line.partition(b":")
            if not where.isdigit() or int(where) >= length:
                return  # past the last complete line: looked at again next time, whole
            whole = line.endswith(b"\n")
            line_text = shown(text.rstrip(b"\n"), LINE_READ)
            if whole and not DEFAULT_NOTABLE.search(line_text):
                continue  # grep finds the words anywhere; a notable line has one as a word, colour codes aside
            if len(self.lines) >= self.limit:
                self.overflow = True
                return
            self.lines.append(line_text[:NOTABLE_SHOWN])
