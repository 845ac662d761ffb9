"""Show Slack messages in a terminal the way a person in the channel would read them."""

from __future__ import annotations

import re
from datetime import datetime, timezone

_DATE = re.compile(r"<!date\^(\d+)\^[^|>]*\|([^>]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def plain(text: str, names: dict[str, str] | None = None) -> str:
    names = names or {}
    text = _DATE.sub(lambda m: datetime.fromtimestamp(int(m.group(1)), timezone.utc).strftime("%H:%M:%S UTC"),
                     text)
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
    return plain("\n".join(out), names)
