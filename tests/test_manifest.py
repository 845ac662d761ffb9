"""The Slack app asks for exactly the scopes the code uses: each Web API method the code calls, and each event
it subscribes to, needs its scope in slack-manifest.yml, and the manifest asks for nothing more."""

from __future__ import annotations

import re
from pathlib import Path

from slack_sdk import WebClient

ROOT = Path(__file__).resolve().parent.parent

# What each Web API method and event the bot uses needs (Slack's method reference, "Required scopes").
SCOPES = {
    "auth.test": set(),
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "conversations.history": {"channels:history", "groups:history"},  # public and private launch channels
    "conversations.info": {"channels:read", "groups:read"},
    "files.getUploadURLExternal": {"files:write"},
    "files.completeUploadExternal": {"files:write"},
    "reactions.add": {"reactions:write"},
    "reactions.get": {"reactions:read"},
    "users.info": {"users:read"},
    "views.publish": set(),  # the Home tab; no scope beyond the bot token
    "event:reaction_added": {"reactions:read"},
    "event:reaction_removed": {"reactions:read"},
    "command:/cutover": {"commands"},
    "event:app_home_opened": set(),
}


def test_the_manifest_subscribes_to_every_event_the_app_listens_to_and_enables_what_it_needs():
    text = (ROOT / "slack-manifest.yml").read_text()
    events = set(re.findall(r"^\s+- ([a-z_]+)", text.split("bot_events:", 1)[1].split("interactivity:", 1)[0], re.M))
    listened = set(re.findall(r"@app\.event\(\"([a-z_]+)\"\)", (ROOT / "bot/slack/app.py").read_text()))
    assert events == listened, (events, listened)
    assert "home_tab_enabled: true" in text  # the Home tab
    assert re.search(r"interactivity:\n\s+is_enabled: true", text)  # the Done button


def manifest_scopes() -> set[str]:
    text = (ROOT / "slack-manifest.yml").read_text()
    block = text.split("scopes:", 1)[1].split("settings:", 1)[0]
    return set(re.findall(r"^\s+- ([a-z:.]+)", block.split("bot:", 1)[1], re.M))


def methods_called() -> set[str]:
    """Web API methods named in the code: ``client.chat_postMessage(`` or ``_call("chat_postMessage"``."""
    found = set()
    for path in [*ROOT.glob("bot/**/*.py"), *ROOT.glob("commands/*.py")]:
        if "standins" in path.parts:
            continue
        source = path.read_text()
        names = re.findall(r"\.([a-z]+_[A-Za-z]+)\(", source) + re.findall(r"_call\(\"([a-z]+_[A-Za-z]+)\"", source)
        found |= {name.replace("_", ".", 1) for name in names if callable(getattr(WebClient, name, None))}
    return found


def test_every_method_the_code_calls_is_known_here():
    called = methods_called()
    assert {"chat.postMessage", "users.info", "conversations.history"} <= called, called  # the scan finds calls
    assert called <= set(SCOPES), f"add the scopes of {sorted(called - set(SCOPES))} to SCOPES and the manifest"


def test_the_manifest_asks_for_exactly_what_the_code_uses():
    used = set(methods_called()) | {k for k in SCOPES if k.startswith(("event:", "command:"))}
    needed = set().union(*(SCOPES[m] for m in used))
    asked = manifest_scopes()
    assert asked == needed, f"unused: {sorted(asked - needed)}; missing: {sorted(needed - asked)}"
