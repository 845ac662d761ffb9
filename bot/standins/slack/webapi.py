"""The Slack stand-in's Web API: ``POST /api/<method>`` with Slack's answers and error shapes, for the methods the bot calls."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time

from aiohttp import web

from bot.standins.slack.blockkit import BLOCKS_LIMIT, HOME_BLOCKS_LIMIT, InvalidBlocks, validate
from bot.standins.slack.wire import Channel, SlackError, json_param, without_metadata

log = logging.getLogger("cutover.standin.slack")


class WebApi:
    """The Web API methods; the stand-in's state is the ``SlackStandIn``'s."""

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        record = {"method": method, "at": time.monotonic(), "params": params}
        hold = self._take_hold(method)
        delay = self.method_delay.get(method, 0.0) + (hold or 0.0)
        if delay:
            await asyncio.sleep(delay)
        if hold is not None:
            with self._lock:
                self._holding -= 1
        with self._lock:
            self.calls.append(record)
        fault = self._take_fault(method)
        if fault is not None:
            record["status"] = fault.status
            return self._fault_response(fault)
        try:
            self._check_token(method, token)
            if method in self.scopes_missing:
                raise SlackError("missing_scope", needed=self.scopes_missing[method], provided="chat:write")
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            with self._lock:
                body = handler(params)
                omission = next((o for o in self._omissions if o[0] == method and o[2] > 0), None)
                if omission is not None:
                    omission[2] -= 1
                    body = {k: v for k, v in body.items() if k != omission[1]}
            record["status"] = 200
            return web.json_response({"ok": True, **body})
        except SlackError as exc:
            record["status"] = exc.status
            record["error"] = exc.error
            return web.json_response({"ok": False, "error": exc.error, **exc.extra}, status=exc.status)

    async def _params(self, request: web.Request) -> dict:
        ctype = request.content_type
        if ctype == "application/json":
            data = await request.json()
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            data = dict(await request.post())
        else:
            data = {}
        data.update({k: v for k, v in request.query.items() if k not in data})
        return data

    def _check_token(self, method: str, token: str) -> None:
        if not token:
            raise SlackError("not_authed")
        if method == "apps.connections.open":
            if token == self.bot_token:
                raise SlackError("not_allowed_token_type")
            if token != self.app_token:
                raise SlackError("invalid_auth")
        elif token != self.bot_token:
            raise SlackError("invalid_auth")

    def _channel(self, params: dict, key: str = "channel") -> Channel:
        cid = params.get(key) or ""
        if cid in self.channels:
            return self.channels[cid]
        by_name = next((c for c in self.channels.values() if c.name == cid.lstrip("#")), None)
        if by_name is None:
            raise SlackError("channel_not_found")
        return by_name

    def _find(self, channel: str, ts: str) -> dict:
        if channel not in self.channels:
            raise SlackError("channel_not_found")
        for m in self.channels[channel].messages:
            if m["ts"] == ts:
                return m
        raise SlackError("message_not_found")

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    @staticmethod
    def _blocks(params: dict, limit: int = BLOCKS_LIMIT) -> list | None:
        """The message's blocks as Slack would take them; Slack's error where it would not."""
        try:
            return validate(params.get("blocks"), limit)
        except InvalidBlocks as exc:
            raise SlackError(exc.error, **({"errors": exc.errors} if exc.errors else {})) from None

    def _notify(self, kind: str, record: dict) -> None:
        for listener in self._listeners:
            try:
                listener(kind, dict(record))
            except Exception:  # a listener is a display aid; it must not break the API
                log.exception("stand-in listener failed")

    def _m_views_publish(self, params: dict) -> dict:
        """A user's Home tab: a view of type home, at most 100 blocks, each held to the message limits."""
        user = params.get("user_id")
        view = json_param(params, "view")
        if not user or not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        if view.get("type") != "home":
            raise SlackError("invalid_arguments", errors=["view type must be home [json-pointer:/view/type]"])
        blocks = self._blocks({"blocks": view.get("blocks")}, HOME_BLOCKS_LIMIT) or []
        record = {"id": f"V{next(self._ids):08d}", "type": "home", "blocks": blocks, "user": user}
        with self._lock:
            self.home_views[user] = record
        return {"view": record}

    def _m_auth_test(self, params: dict) -> dict:
        return {"url": "https://cutover.slack.com/", "team": "cutover", "user": "cutover",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _m_apps_connections_open(self, params: dict) -> dict:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/link?ticket={ticket}"}

    def _m_chat_postMessage(self, params: dict) -> dict:
        channel = self._channel(params)
        if channel.archived:
            raise SlackError("is_archived")
        if not channel.bot_is_member:
            raise SlackError("not_in_channel")
        blocks = self._blocks(params)
        text = params.get("text") or ""
        if not text and not blocks:
            raise SlackError("no_text")
        thread_ts = params.get("thread_ts") or None
        if thread_ts:
            self._find(channel.id, thread_ts)
        msg = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id, "text": text,
               "ts": self._next_ts(), "channel": channel.id}
        if blocks is not None:
            msg["blocks"] = blocks
        if thread_ts:
            msg["thread_ts"] = thread_ts
        metadata = params.get("metadata")
        if metadata:
            if isinstance(metadata, str):
                try:
                    metadata = json.loads(metadata)
                except json.JSONDecodeError:
                    raise SlackError("invalid_metadata_format") from None
            if not isinstance(metadata, dict) or not metadata.get("event_type") \
                    or not isinstance(metadata.get("event_payload"), dict):
                raise SlackError("invalid_metadata_format")
            msg["metadata"] = {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}
        channel.messages.append(msg)
        self._notify("post", msg)
        return {"channel": channel.id, "ts": msg["ts"], "message": without_metadata(msg)}

    def _m_chat_update(self, params: dict) -> dict:
        channel = self._channel(params)
        msg = self._find(channel.id, params.get("ts", ""))
        if msg.get("user") != self.bot_user_id:
            raise SlackError("cant_update_message")
        blocks = self._blocks(params)
        if "text" in params:
            msg["text"] = params["text"]
        if blocks is not None:
            msg["blocks"] = blocks
        msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._notify("update", msg)
        return {"channel": channel.id, "ts": msg["ts"], "text": msg["text"], "message": msg}

    def _m_chat_postEphemeral(self, params: dict) -> dict:
        channel = self._channel(params)
        if not params.get("user"):
            raise SlackError("user_not_in_channel")
        blocks = self._blocks(params)
        record = {"channel": channel.id, "user": params["user"], "text": params.get("text") or "",
                  "blocks": blocks, "ts": self._next_ts()}
        self.ephemerals.append(record)
        self._notify("ephemeral", record)
        return {"message_ts": record["ts"]}

    def _reaction_entry(self, msg: dict, name: str) -> dict:
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        return entry

    def _reaction_event(self, kind: str, user: str, name: str, channel: str, msg: dict) -> dict:
        return {"type": kind, "user": user, "reaction": name, "item_user": msg.get("user"),
                "item": {"type": "message", "channel": channel, "ts": msg["ts"]},
                "event_ts": f"{time.time():.6f}"}

    def _m_reactions_add(self, params: dict) -> dict:
        channel = self._channel(params)
        msg = self._find(channel.id, params.get("timestamp", ""))
        name = params.get("name", "").strip(":")
        if not name:
            raise SlackError("invalid_name")
        entry = self._reaction_entry(msg, name)
        if self.bot_user_id in entry["users"]:
            raise SlackError("already_reacted")
        entry["users"].append(self.bot_user_id)
        entry["count"] = len(entry["users"])
        threading.Thread(target=self._deliver_bot_reaction, args=(name, channel.id, dict(msg)),
                         daemon=True).start()
        return {}

    def _deliver_bot_reaction(self, name: str, channel: str, msg: dict) -> None:
        """Slack tells apps about their own reactions too; the bot must ignore them."""
        try:
            self.deliver_event(self._reaction_event("reaction_added", self.bot_user_id, name, channel, msg))
        except Exception:
            log.debug("no client to deliver the bot's own reaction to")

    def _m_reactions_remove(self, params: dict) -> dict:
        channel = self._channel(params)
        msg = self._find(channel.id, params.get("timestamp", ""))
        name = params.get("name", "").strip(":")
        entry = self._reaction_entry(msg, name)
        if self.bot_user_id not in entry["users"]:
            raise SlackError("no_reaction")
        entry["users"].remove(self.bot_user_id)
        entry["count"] = len(entry["users"])
        msg["reactions"] = [r for r in msg["reactions"] if r["users"]]
        return {}

    def _m_reactions_get(self, params: dict) -> dict:
        channel = self._channel(params)
        msg = self._find(channel.id, params.get("timestamp", ""))
        return {"type": "message", "channel": channel.id, "message": msg}

    def add_user(self, user_id: str, name: str, *, is_bot: bool = False) -> None:
        with self._lock:
            self.users[user_id] = {"id": user_id, "name": name, "real_name": name.capitalize(), "is_bot": is_bot,
                                   "deleted": False, "team_id": self.team_id}

    def _m_users_info(self, params: dict) -> dict:
        user = params.get("user", "")
        if user == self.bot_user_id:
            return {"user": {"id": user, "name": "cutover", "is_bot": True, "deleted": False, "team_id": self.team_id}}
        if user in self.users:
            return {"user": self.users[user]}
        if not user.startswith(("U", "W")) or user in self.unknown_users:
            raise SlackError("user_not_found")
        return {"user": {"id": user, "name": user.lower(), "is_bot": False, "deleted": False, "team_id": self.team_id}}

    def _m_conversations_info(self, params: dict) -> dict:
        channel = self._channel(params)
        return {"channel": {"id": channel.id, "name": channel.name, "is_channel": True,
                            "is_member": channel.bot_is_member, "is_archived": channel.archived}}

    def _m_conversations_history(self, params: dict) -> dict:
        channel = self._channel(params)
        limit = int(params.get("limit") or 100)
        oldest = float(params.get("oldest") or 0)
        top = [m for m in channel.messages if m.get("thread_ts") in (None, m["ts"]) and float(m["ts"]) > oldest]
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        shown = [m if with_metadata else without_metadata(m) for m in reversed(top)]
        return {"messages": shown[:limit], "has_more": len(top) > limit}

    def _m_conversations_replies(self, params: dict) -> dict:
        channel = self._channel(params)
        parent = self._find(channel.id, params.get("ts", ""))
        replies = [m for m in channel.messages if m.get("thread_ts") == parent["ts"] and m is not parent]
        return {"messages": [parent, *replies], "has_more": False}
