"""Slack's answers, checked in one place: a field the bot reads and does not find is a named problem, never a
traceback.

Every Web API answer the bot reads a field of passes through ``checked``
with the method's name; ``NEEDS`` says which fields each method's answer
must carry, and of what kind.
"""

from __future__ import annotations

from typing import Any

NEEDS: dict[str, dict[str, type]] = {
    "auth.test": {"user_id": str},
    "chat.postMessage": {"ts": str},
    "conversations.info": {"channel": dict},
    "conversations.history": {"messages": list},
    "users.info": {"user": dict},
    "reactions.get": {"message": dict},
    "files.getUploadURLExternal": {"file_id": str, "upload_url": str},
}
_KINDS = {str: "a string", dict: "an object", list: "a list"}


class SlackAnswerError(Exception):
    """Slack said ``ok`` but left out (or mangled) something the bot needs."""

    def __init__(self, method: str, problem: str) -> None:
        super().__init__(f"Slack's {method} answer {problem}")
        self.method = method
        self.short = problem  # "had no `channel`": what a reply quotes as Slack's error


def dotted(method: str) -> str:
    """slack_sdk's method name as Slack spells it: ``chat_postMessage`` → ``chat.postMessage``."""
    return method.replace("_", ".")


def checked(method: str, answer: Any) -> dict:
    """The answer's data, once it has every field ``method``'s answer must carry; SlackAnswerError otherwise."""
    data = getattr(answer, "data", answer)
    if not isinstance(data, dict):
        raise SlackAnswerError(method, "was not a JSON object")
    for field, kind in NEEDS.get(method, {}).items():
        value = data.get(field)
        if value is None:
            raise SlackAnswerError(method, f"had no `{field}`")
        if not isinstance(value, kind):
            raise SlackAnswerError(method, f"had a `{field}` that is not {_KINDS[kind]}")
    return data
