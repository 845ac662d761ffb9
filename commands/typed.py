"""What a person typed in Slack: Slack's encoding undone, and the characters that would make it read other than
it acts found and named.

A right-to-left override before a stage name shows ``cnys`` and runs ``sync``;
a zero-width space makes two names that look alike differ. Command text
holding any such character is refused, saying which and where, and it is never
written raw into the audit or a message: ``visible`` spells them out.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Bidirectional controls (they reorder what is shown), and invisible characters that are not joiners.
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZERO_WIDTH = frozenset("\u200b\u2060\ufeff")
ALLOWED_CONTROLS = frozenset("\t\n")  # white space in a pasted command


@dataclass(frozen=True)
class Invisible:
    position: int  # 1-based, in the decoded text
    char: str

    @property
    def name(self) -> str:
        return f"U+{ord(self.char):04X} {unicodedata.name(self.char, 'CONTROL CHARACTER')}"


def from_slack(text: str) -> str:
    """What a person typed, from Slack's encoding of it (``&amp;``, ``&lt;``, ``&gt;``); escaped once again when
    posted."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _hidden(char: str) -> bool:
    if char in BIDI or char in ZERO_WIDTH:
        return True
    return unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS


def invisibles(text: str) -> list[Invisible]:
    return [Invisible(i + 1, c) for i, c in enumerate(text) if _hidden(c)]


def visible(text: str) -> str:
    """``text`` with each such character spelled out (``\\u202e``), fit for the audit and the log."""
    return "".join(f"\\u{ord(c):04x}" if _hidden(c) else c for c in text)


def refusal(text: str) -> str | None:
    """Why command text is refused, naming the first hidden character and where it is; None when it has none."""
    found = invisibles(text)
    if not found:
        return None
    first = found[0]
    after = text[first.position:].split()
    where = f"character {first.position}" + (f", before `{visible(after[0])[:30]}`" if after else "")
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"Your command holds an invisible character: {first.name} at {where}{more}. It can make a command "
            "read other than it runs; type it again without it.")
