"""Show Slack messages in a terminal the way a person in the channel would read them."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timezone
from typing import Callable, TextIO

_DATE = re.compile(r"<!date\^(\d+)\^[^|>]*\|([^>]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def _when(timestamp: int) -> str:
    """A time as a reader needs it: the time alone for today, with its date for any other day."""
    when = datetime.fromtimestamp(timestamp, timezone.utc)
    if when.date() == datetime.now(timezone.utc).date():
        return when.strftime("%H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M UTC")


def plain(text: str, names: dict[str, str] | None = None) -> str:
    names = names or {}
    text = _DATE.sub(lambda m: _when(int(m.group(1))), text)
    text = _USER.sub(lambda m: "@" + names.get(m.group(1), m.group(1)), text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict] | None, fallback: str = "", names: dict[str, str] | None = None) -> str:
    if not blocks:
        return plain(fallback, names)
    out: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            out.append("== " + block["text"]["text"] + " ==")
        elif kind == "section":
            if block.get("text"):
                out.append(block["text"]["text"])
            for f in block.get("fields") or []:
                out.append(f.get("text", ""))
        elif kind == "context":
            out.append("  " + " ".join(e.get("text", "") for e in block.get("elements", []) if isinstance(e, dict)))
        elif kind == "divider":
            out.append("-" * 40)
        elif kind == "actions":
            out.append("  ".join(f"[ {e['text']['text']} ]" for e in block.get("elements", [])
                                 if isinstance(e, dict) and e.get("type") == "button"))
    return plain("\n".join(out), names)


class ChannelView:
    """Prints what a person in the channel sees, as the stand-in receives it."""

    def __init__(self, out: TextIO, started: float, names: dict[str, str],
                 keep_file: Callable[[dict], str | None] | None = None) -> None:
        self.out = out
        self.keep_file = keep_file  # saves an uploaded file, saying where it went (or why not)
        self.names = names
        self.started = started
        self.lock = threading.Lock()
        self.shown: dict[str, list[str]] = {}
        self.updates: list[str] = []

    def line(self, text: str) -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def __call__(self, kind: str, record: dict) -> None:
        stamp = f"[{time.monotonic() - self.started:5.1f}s]"
        text = render_blocks(record.get("blocks"), record.get("text", ""), self.names).strip()
        if kind == "post" and record.get("thread_ts") and record["thread_ts"] != record["ts"]:
            self.line(indent(f"{stamp}   ↳ in thread: ", text))
        elif kind == "post":
            self.shown[record["ts"]] = text.splitlines()
            self.line(indent(f"\n{stamp} cutover: ", text))
        elif kind == "update":
            before = self.shown.get(record["ts"], [])
            fresh = [ln for ln in text.splitlines() if ln.strip() and ln not in before and not ln.startswith("```")]
            self.shown[record["ts"]] = text.splitlines()
            if fresh:
                self.updates.append(" · ".join(fresh))
                self.line(indent(f"{stamp}   ✎ updated: ", "\n".join(fresh[:8])))
        elif kind == "ephemeral":
            self.line(indent(f"{stamp}   (only @{self.names.get(record['user'], record['user'])} sees) ", text))
        elif kind == "file":
            where = "to the thread" if record.get("thread_ts") else "in the channel"
            for f in record.get("files", []):
                kept = self.keep_file(f) if self.keep_file is not None else None
                self.line(f"{stamp}   {'↳ ' if record.get('thread_ts') else ''}📎 {f['name']} ({f['size']:,} "
                          f"bytes) uploaded {where}" + (f", {kept}" if kept else ""))
        elif kind == "response":
            self.line(indent(f"{stamp}   → reply: ", text))


def indent(prefix: str, text: str) -> str:
    lines = text.splitlines() or [""]
    pad = " " * len(prefix.lstrip("\n"))
    return prefix + lines[0] + "".join("\n" + pad + ln for ln in lines[1:])
