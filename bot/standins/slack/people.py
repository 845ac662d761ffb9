"""Acting as the people in the workspace: a slash command, a button press, a reaction added or taken back, the Home tab opened."""

from __future__ import annotations

import json
import secrets
import time

from bot.standins.slack.wire import Envelope


class People:
    """What a person does in Slack, delivered to the app as Slack delivers it."""

    def command(self, user: str, text: str, *, channel: str = "C0LAUNCH", command: str = "/cutover",
                user_name: str | None = None) -> Envelope:
        rid = secrets.token_hex(8)
        trigger = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(8)}"
        payload = {
            "token": "standin-verification-token", "team_id": self.team_id, "team_domain": "cutover",
            "channel_id": channel, "channel_name": self.channels[channel].name if channel in self.channels
            else "unknown", "user_id": user, "user_name": user_name or user.lower(), "command": command,
            "text": text, "api_app_id": self.app_id, "is_enterprise_install": "false",
            "response_url": f"{self.url}/response/{rid}", "trigger_id": trigger,
        }
        return self._deliver("slash_commands", payload, key=trigger)

    def click(self, user: str, channel: str, ts: str, action_id: str) -> Envelope:
        """Press the button ``action_id`` on a message, as ``user``: a ``block_actions`` interaction."""
        with self._lock:
            msg = self._find(channel, ts)
            element = next((e for b in msg.get("blocks") or [] if b.get("type") == "actions"
                            for e in b.get("elements") or [] if e.get("action_id") == action_id), None)
        if element is None:
            raise AssertionError(f"no button {action_id!r} on message {ts}")
        trigger = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(8)}"
        payload = {
            "type": "block_actions", "token": "standin-verification-token", "api_app_id": self.app_id,
            "team": {"id": self.team_id, "domain": "cutover"}, "user": {"id": user, "team_id": self.team_id},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "channel": {"id": channel}, "message": {"ts": ts, "text": msg.get("text", "")},
            "trigger_id": trigger, "response_url": f"{self.url}/response/{secrets.token_hex(8)}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": element["value"],
                         "text": element["text"], "action_ts": f"{time.time():.6f}"}],
        }
        return self._deliver("interactive", payload, key=trigger)

    def react(self, user: str, name: str, channel: str, ts: str, *, deliver: bool = True) -> Envelope | None:
        """Add a reaction as ``user``; delivers ``reaction_added`` like Slack does (unless ``deliver`` is
        False: the event a bot that was down, or killed before storing it, never saw)."""
        with self._lock:
            msg = self._find(channel, ts)
            entry = self._reaction_entry(msg, name)
            if user in entry["users"]:
                return None
            entry["users"].append(user)
            entry["count"] = len(entry["users"])
        if not deliver:
            return None
        return self.deliver_event(self._reaction_event("reaction_added", user, name, channel, msg))

    def unreact(self, user: str, name: str, channel: str, ts: str) -> Envelope | None:
        with self._lock:
            msg = self._find(channel, ts)
            entry = self._reaction_entry(msg, name)
            if user not in entry["users"]:
                return None
            entry["users"].remove(user)
            entry["count"] = len(entry["users"])
            msg["reactions"] = [r for r in msg["reactions"] if r["users"]]
        return self.deliver_event(self._reaction_event("reaction_removed", user, name, channel, msg))

    def open_home(self, user: str) -> Envelope:
        """``user`` opens the app's Home tab: ``app_home_opened``, as Slack sends it."""
        event = {"type": "app_home_opened", "user": user, "channel": "D0" + user[2:], "tab": "home",
                 "event_ts": f"{time.time():.6f}"}
        if user in self.home_views:
            event["view"] = self.home_views[user]
        return self.deliver_event(event)

    def deliver_event(self, event: dict, event_id: str | None = None) -> Envelope:
        event_id = event_id or f"Ev{next(self._ids):08d}{secrets.token_hex(3).upper()}"
        payload = {
            "token": "standin-verification-token", "team_id": self.team_id, "api_app_id": self.app_id,
            "event": event, "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }
        return self._deliver("events_api", payload, key=event_id)

    def redeliver(self, envelope: Envelope, reason: str = "timeout") -> Envelope:
        """Deliver the same payload again, as Slack does when it did not see an ack."""
        return self._deliver(envelope.type, envelope.payload, key=envelope.key,
                             retry_attempt=envelope.retry_attempt + 1, reason=reason)

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every connected client to reconnect, as Slack does every few hours."""
        message = json.dumps({"type": "disconnect", "reason": reason,
                              "debug_info": {"host": "standin"}})
        for ws in list(self._sockets):
            if not ws.closed:
                self._run(ws.send_str(message))

    def wait_ack(self, envelope: Envelope, timeout: float = 10.0) -> Envelope:
        self.wait_for(lambda: envelope.acked_at is not None, timeout, f"ack of {envelope.envelope_id}")
        return envelope
