"""Block Kit primitives shared by every message builder: pure functions, no Slack I/O."""

from __future__ import annotations

from datetime import datetime

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
HOME_BLOCKS = 100


def slack_date(when: datetime, fmt: str = "{date_short_pretty} {time_secs}") -> str:
    """A time every reader sees in their own zone, with a UTC fallback for clients that can't."""
    fallback = when.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(when.timestamp())}^{fmt}|{fallback}>"


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def button(text: str, action_id: str, value: str, style: str | None = None) -> dict:
    """An actions block with one button; Slack allows 75 characters of label and 2,000 of value."""
    return actions(button_element(text, action_id, value, style))


def button_element(text: str, action_id: str, value: str, style: str | None = None,
                   confirm: dict | None = None) -> dict:
    """A button, with Slack's confirm dialog when ``confirm`` is given (``confirm_dialog``)."""
    element = {"type": "button", "text": {"type": "plain_text", "text": text[:75], "emoji": True},
               "action_id": action_id, "value": value[:2000]}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def confirm_dialog(title: str, text: str, ok: str, deny: str = "Cancel", style: str = "danger") -> dict:
    """Slack's "are you sure" dialog: a title of 100 characters, a text of 300, buttons of 30."""
    return {"title": {"type": "plain_text", "text": title[:100]},
            "text": {"type": "mrkdwn", "text": text if len(text) <= 300 else text[:299] + "…"},
            "confirm": {"type": "plain_text", "text": ok[:30]}, "deny": {"type": "plain_text", "text": deny[:30]},
            "style": style}


def actions(*elements: dict) -> dict:
    return {"type": "actions", "elements": list(elements)}


def divider() -> dict:
    return {"type": "divider"}


def code(text: str) -> str:
    """A preformatted block that never breaks out of its fence."""
    return "```" + escape(text).replace("```", "`\u200b``") + "```"


def sections(lines: list[str], budget: int = MAX_BLOCKS) -> list[dict]:
    """Pack lines into as few sections as fit Slack's limits, dropping the oldest if over budget."""
    blocks: list[dict] = []
    buf: list[str] = []
    size = 0
    for line in lines:
        line = line[:SECTION_LIMIT]
        if buf and size + len(line) + 1 > SECTION_LIMIT:
            blocks.append(section("\n".join(buf)))
            buf, size = [], 0
        buf.append(line)
        size += len(line) + 1
    if buf:
        blocks.append(section("\n".join(buf)))
    if len(blocks) > budget:
        blocks = blocks[-budget:]
    return blocks


def clamp(blocks: list[dict], limit: int = MAX_BLOCKS) -> list[dict]:
    """Keep a message within Slack's 50-block limit (a Home tab's: 100), saying so when something was cut."""
    if len(blocks) <= limit:
        return blocks
    return blocks[:limit - 1] + [context(f"… {len(blocks) - limit + 1} more blocks not shown")]


def sentence(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case paths and names after it)."""
    return text[:1].upper() + text[1:]
