"""Slack's Block Kit limits, checked as Slack checks them: the stand-in refuses what Slack would, and tests hold
the bot's builders to the same rules (``validate``).

Each error reads as Slack's does: ``invalid_blocks`` with a reason and a JSON pointer.
"""

from __future__ import annotations

import json
from typing import Any

BLOCKS_LIMIT = 50  # a message
HOME_BLOCKS_LIMIT = 100  # a Home tab
SECTION_TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_LIMIT = 10
HEADER_LIMIT = 150
CONTEXT_ELEMENTS_LIMIT = 10
ACTIONS_ELEMENTS_LIMIT = 25
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ACTION_ID_LIMIT = 255
CONFIRM_LIMITS = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
BLOCK_TYPES = ("section", "header", "context", "divider", "actions")


class InvalidBlocks(Exception):
    """What Slack answers ``invalid_blocks`` (or ``invalid_blocks_format``) for, in its words."""

    def __init__(self, error: str, reason: str = "") -> None:
        super().__init__(f"{error}: {reason}" if reason else error)
        self.error = error
        self.errors = [reason] if reason else []


def validate(blocks: Any, limit: int = BLOCKS_LIMIT) -> list | None:
    """The blocks as Slack would take them (a JSON string or a list); InvalidBlocks where Slack would refuse."""
    if blocks is None or blocks == "":
        return None
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except json.JSONDecodeError:
            raise InvalidBlocks("invalid_blocks_format") from None
    if not isinstance(blocks, list):
        raise InvalidBlocks("invalid_blocks_format")
    if len(blocks) > limit:
        raise InvalidBlocks("invalid_blocks", f"no more than {limit} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        _block(block, f"/blocks/{i}")
    return blocks


def _block(block: Any, at: str) -> None:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        kind = block.get("type") if isinstance(block, dict) else type(block).__name__
        raise InvalidBlocks("invalid_blocks", f"unsupported type: {kind} [json-pointer:{at}/type]")
    kind = block["type"]
    if kind == "header":
        _text(block.get("text"), f"{at}/text", HEADER_LIMIT, plain=True)
    elif kind == "section":
        if block.get("text") is None and not block.get("fields"):
            raise InvalidBlocks("invalid_blocks", f"must provide text or fields [json-pointer:{at}]")
        if block.get("text") is not None:
            _text(block["text"], f"{at}/text", SECTION_TEXT_LIMIT)
        fields = block.get("fields") or []
        if len(fields) > FIELDS_LIMIT:
            raise InvalidBlocks("invalid_blocks", f"no more than {FIELDS_LIMIT} items allowed [json-pointer:{at}/fields]")
        for j, f in enumerate(fields):
            _text(f, f"{at}/fields/{j}", FIELD_LIMIT)
    elif kind == "context":
        elements = block.get("elements") or []
        if not elements or len(elements) > CONTEXT_ELEMENTS_LIMIT:
            raise InvalidBlocks("invalid_blocks", f"must have 1 to {CONTEXT_ELEMENTS_LIMIT} elements "
                                                  f"[json-pointer:{at}/elements]")
        for j, e in enumerate(elements):
            _text(e, f"{at}/elements/{j}", SECTION_TEXT_LIMIT)
    elif kind == "actions":
        elements = block.get("elements") or []
        if not elements or len(elements) > ACTIONS_ELEMENTS_LIMIT:
            raise InvalidBlocks("invalid_blocks", f"must have 1 to {ACTIONS_ELEMENTS_LIMIT} elements "
                                                  f"[json-pointer:{at}/elements]")
        for j, e in enumerate(elements):
            _button(e, f"{at}/elements/{j}")


def _text(obj: Any, at: str, limit: int, plain: bool = False) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        raise InvalidBlocks("invalid_blocks", f"must be a {'plain_text' if plain else 'text'} object "
                                              f"[json-pointer:{at}/type]")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise InvalidBlocks("invalid_blocks", f"must be at least 1 character [json-pointer:{at}/text]")
    if len(text) > limit:
        raise InvalidBlocks("invalid_blocks", f"must be less than {limit + 1} characters [json-pointer:{at}/text]")


def _button(element: Any, at: str) -> None:
    if not isinstance(element, dict) or element.get("type") != "button":
        raise InvalidBlocks("invalid_blocks", f"unsupported element [json-pointer:{at}/type]")
    _text(element.get("text"), f"{at}/text", BUTTON_TEXT_LIMIT, plain=True)
    action_id = element.get("action_id")
    if not isinstance(action_id, str) or not 0 < len(action_id) <= ACTION_ID_LIMIT:
        raise InvalidBlocks("invalid_blocks", f"must be 1 to {ACTION_ID_LIMIT} characters [json-pointer:{at}/action_id]")
    value = element.get("value", "")
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_LIMIT:
        raise InvalidBlocks("invalid_blocks", f"must be less than {BUTTON_VALUE_LIMIT + 1} characters "
                                              f"[json-pointer:{at}/value]")
    if element.get("style") not in (None, "primary", "danger"):
        raise InvalidBlocks("invalid_blocks", f"must be primary or danger [json-pointer:{at}/style]")
    confirm = element.get("confirm")
    if confirm is not None:
        if not isinstance(confirm, dict):
            raise InvalidBlocks("invalid_blocks", f"must be a confirmation dialog [json-pointer:{at}/confirm]")
        for key, limit in CONFIRM_LIMITS.items():
            _text(confirm.get(key), f"{at}/confirm/{key}", limit, plain=key != "text")
        if confirm.get("style") not in (None, "primary", "danger"):
            raise InvalidBlocks("invalid_blocks", f"must be primary or danger [json-pointer:{at}/confirm/style]")


def blocks_text(blocks: list[dict] | None) -> str:
    """All the visible text of some blocks, for tests and the terminal view."""
    out: list[str] = []
    for block in blocks or []:
        if isinstance(block.get("text"), dict):
            out.append(block["text"].get("text", ""))
        for f in block.get("fields") or []:
            out.append(f.get("text", ""))
        for el in block.get("elements") or []:
            if isinstance(el, dict) and "text" in el:
                out.append(el["text"] if isinstance(el["text"], str) else el["text"].get("text", ""))
    return "\n".join(out)
