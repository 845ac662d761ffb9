"""A Slack stand-in on 127.0.0.1 that speaks Slack's real wire protocols.

It serves the Web API (``POST /api/<method>``, form or JSON bodies, bearer
tokens, Slack's ``ok: false`` error shapes, 429 with ``Retry-After``), the v2
file upload URL, ``response_url`` endpoints, and a Socket Mode WebSocket that
sends ``hello``, delivers envelopes, records acks and redelivers events that
were not acked. It can also deliver the same payloads as signed HTTP requests.

Helpers let a test (or the demo, or the console) act as a person: run a slash
command, add or remove a reaction. The production client code (slack_sdk,
Bolt) runs unchanged against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

from bot.waiting import wait_until

log = logging.getLogger("cutover.standin.slack")

SECTION_TEXT_LIMIT = 3000
BLOCKS_LIMIT = 50
HOME_BLOCKS_LIMIT = 100
CLOSE_WAIT = 1.0  # how long stop() waits for a Socket Mode client to answer the close frame
STOP_GRACE = 2.0  # how long stop() lets a request in flight finish
# The launch channel, and the editors' channel the example plan announces its content freeze in.
DEFAULT_CHANNELS = {"C0LAUNCH": "launch", "C0EDITORS": "editors"}


@dataclass
class Envelope:
    envelope_id: str
    type: str
    payload: dict
    key: str
    transport: str
    delivered_at: float = 0.0
    acked_at: float | None = None
    ack_payload: dict | None = None
    retry_attempt: int = 0
    http_status: int | None = None

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.delivered_at


@dataclass
class Fault:
    method: str
    status: int = 429
    error: str = "ratelimited"
    retry_after: int = 1
    remaining: int = 1
    html: bool = False  # answer with an HTML error page, as a proxy in front of Slack would


@dataclass
class Channel:
    id: str
    name: str
    messages: list[dict] = field(default_factory=list)
    bot_is_member: bool = True
    archived: bool = False


class SlackError(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


class SlackStandIn:
    """One workspace, one app, one bot user, a few channels and people."""

    def __init__(self, *, bot_token: str = "xoxb-standin-bot-token", app_token: str = "xapp-standin-app-token",
                 signing_secret: str = "standin-signing-secret", team_id: str = "T0CUTOVER",
                 app_id: str = "A0CUTOVER", bot_user_id: str = "U0CUTBOT", bot_id: str = "B0CUTBOT",
                 channels: dict[str, str] | None = None, redeliver_after: float | None = 3.0,
                 max_redeliveries: int = 3, upload_dir: str | None = None) -> None:
        self.upload_dir = upload_dir  # when set, uploaded files are kept there (by path), not in memory
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.app_id = app_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.redeliver_after = redeliver_after
        self.max_redeliveries = max_redeliveries
        self.channels: dict[str, Channel] = {
            cid: Channel(cid, name) for cid, name in (channels or DEFAULT_CHANNELS).items()}
        self.ephemerals: list[dict] = []
        self.users: dict[str, dict] = {}
        self.unknown_users: set[str] = set()  # IDs users.info says no such user for
        self.responses: list[dict] = []
        self.files: dict[str, dict] = {}
        self.home_views: dict[str, dict] = {}  # user -> the Home tab the app last published for them
        self.calls: list[dict] = []
        self.envelopes: list[Envelope] = []
        self.scopes_missing: dict[str, str] = {}
        self.http_target: str | None = None
        self.response_delay = 0.0
        self.method_delay: dict[str, float] = {}
        self._holds: dict[str, list[float]] = {}
        self._holding = 0
        self._faults: list[Fault] = []
        self._omissions: list[list] = []  # [method, field, times]
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._lock = threading.RLock()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[str, dict], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._redeliver_task: asyncio.Task | None = None
        self._in_flight: dict[object, str] = {}
        self.port = 0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> "SlackStandIn":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_server())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="slack-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Slack stand-in did not start within 10 s")
        return self

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024, middlewares=[self._track])
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/link", self._socket_mode)
        # A handler still running when the stand-in stops is given STOP_GRACE, not aiohttp's minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.redeliver_after is not None:
            self._redeliver_task = asyncio.get_running_loop().create_task(self._redeliver_loop())

    def stop(self) -> None:
        """Stop serving, within a few seconds whatever the clients do.

        A Socket Mode client that stops reading without closing its socket (the bot's, closing on a thread of
        its own) is given CLOSE_WAIT to answer the close frame, then dropped: aiohttp's default is to wait 10 s
        for it. A stop that still cannot finish says which step and which requests held it.
        """
        if self._loop is None:
            return
        phase = ["cancelling redelivery"]

        async def shutdown() -> None:
            if self._redeliver_task is not None:
                self._redeliver_task.cancel()
            phase[0] = "closing Socket Mode connections"
            for ws in list(self._sockets):
                try:
                    await asyncio.wait_for(ws.close(), CLOSE_WAIT)
                except (asyncio.TimeoutError, ConnectionError):
                    pass  # the transport is closed by the timeout
            phase[0] = "finishing the requests in flight"
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(STOP_GRACE * 3 + CLOSE_WAIT * 2)
        except TimeoutError:
            with self._lock:
                busy = sorted(self._in_flight.values())
            raise RuntimeError(f"the Slack stand-in did not stop: stuck {phase[0]}; requests in flight: "
                               f"{', '.join(busy) or 'none'}") from None
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = None

    @web.middleware
    async def _track(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """Which requests are being handled now, so that a stop that waits on one can name it."""
        key = object()
        with self._lock:
            self._in_flight[key] = f"{request.method} {request.path}"
        try:
            return await handler(request)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def __enter__(self) -> "SlackStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # -- controls -----------------------------------------------------------------

    def fail_next(self, method: str, *, status: int = 429, error: str = "ratelimited",
                  retry_after: int = 1, times: int = 1, html: bool = False) -> None:
        """Make the next ``times`` calls of ``method`` fail (429 with Retry-After by default).

        ``method`` "upload" is the file transfer to the upload URL, the second step of an upload.
        """
        with self._lock:
            self._faults.append(Fault(method, status, error, retry_after, times, html))

    def answer_without(self, method: str, field: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``ok: true`` but without ``field``: an answer of a
        shape the bot did not expect (an API change, a proxy's rewrite)."""
        with self._lock:
            self._omissions.append([method, field, times])

    def hold_next(self, method: str, seconds: float) -> None:
        """Answer (and apply) the next call of ``method`` only after ``seconds``: a response held up on the way,
        which lets later calls overtake it."""
        with self._lock:
            self._holds.setdefault(method, []).append(seconds)

    def held(self) -> int:
        """How many held calls are still waiting to be answered."""
        with self._lock:
            return self._holding

    def _take_hold(self, method: str) -> float | None:
        with self._lock:
            holds = self._holds.get(method)
            if not holds:
                return None
            self._holding += 1
            return holds.pop(0)

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.method == method and f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
            return fault

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.html:
            return web.Response(status=fault.status, content_type="text/html",
                                text=f"<html><body><h1>{fault.status} Server Error</h1></body></html>")
        headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
        return web.json_response({"ok": False, "error": fault.error}, status=fault.status, headers=headers)

    def add_channel(self, cid: str, name: str, *, bot_is_member: bool = True, archived: bool = False) -> None:
        with self._lock:
            self.channels[cid] = Channel(cid, name, bot_is_member=bot_is_member, archived=archived)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def on_post(self, listener: Callable[[str, dict], None]) -> None:
        """Call ``listener(kind, record)`` for each message posted, updated or answered."""
        self._listeners.append(listener)

    def use_http(self, url: str | None) -> None:
        """Deliver commands and events as signed HTTP requests to ``url`` instead of Socket Mode."""
        self.http_target = url

    # -- reading state ----------------------------------------------------------------

    def messages(self, channel: str = "C0LAUNCH", thread_ts: str | None = None) -> list[dict]:
        with self._lock:
            msgs = self.channels[channel].messages
            if thread_ts is None:
                return [dict(m) for m in msgs if m.get("thread_ts") in (None, m["ts"])]
            return [dict(m) for m in msgs if m.get("thread_ts") == thread_ts]

    def all_messages(self, channel: str = "C0LAUNCH") -> list[dict]:
        with self._lock:
            return [dict(m) for m in self.channels[channel].messages]

    def message(self, channel: str, ts: str) -> dict:
        with self._lock:
            return dict(self._find(channel, ts))

    def calls_of(self, method: str) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["method"] == method]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        return wait_until(predicate, timeout, what)

    def wait_connected(self, timeout: float = 10.0) -> None:
        self.wait_for(lambda: any(not ws.closed for ws in self._sockets), timeout, "a Socket Mode connection")

    # -- acting as people -----------------------------------------------------------

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

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, kind: str, payload: dict, key: str, retry_attempt: int = 0,
                 reason: str = "") -> Envelope:
        env = Envelope(envelope_id=secrets.token_hex(8) + "-" + secrets.token_hex(4), type=kind,
                       payload=payload, key=key, transport="http" if self.http_target else "socket",
                       retry_attempt=retry_attempt)
        with self._lock:
            self.envelopes.append(env)
        if self.http_target:
            self._deliver_http(env, reason)
            return env
        message: dict[str, Any] = {"envelope_id": env.envelope_id, "type": kind, "payload": payload,
                                   "accepts_response_payload": kind == "slash_commands"}
        if kind == "events_api":
            message.update(retry_attempt=retry_attempt, retry_reason=reason)
        sockets = [ws for ws in self._sockets if not ws.closed]
        if not sockets:
            raise RuntimeError("no Socket Mode client is connected to the Slack stand-in")
        env.delivered_at = time.monotonic()
        self._run(sockets[-1].send_str(json.dumps(message)))
        return env

    def signed_headers(self, body: str, timestamp: int | None = None,
                       secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = f"v0:{ts}:{body}".encode()
        sig = "v0=" + hmac.new((secret or self.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}

    def post_http(self, body: str, content_type: str, headers: dict[str, str],
                  extra: dict[str, str] | None = None) -> tuple[int, str]:
        assert self.http_target
        req = urllib.request.Request(self.http_target, data=body.encode(), method="POST",
                                     headers={"Content-Type": content_type, **headers, **(extra or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def _deliver_http(self, env: Envelope, reason: str) -> None:
        if env.type == "slash_commands":
            body = urllib.parse.urlencode(env.payload)
            ctype = "application/x-www-form-urlencoded"
        elif env.type == "interactive":  # Slack posts interactions as a form with one field, payload=<json>
            body = urllib.parse.urlencode({"payload": json.dumps(env.payload)})
            ctype = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(env.payload)
            ctype = "application/json"
        extra = {}
        if env.retry_attempt:
            extra = {"X-Slack-Retry-Num": str(env.retry_attempt), "X-Slack-Retry-Reason": reason or "timeout"}
        env.delivered_at = time.monotonic()
        status, text = self.post_http(body, ctype, self.signed_headers(body), extra)
        env.acked_at = time.monotonic()
        env.http_status = status
        try:
            env.ack_payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            env.ack_payload = {"text": text}

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _redeliver_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                due = [e for e in self.envelopes
                       if e.transport == "socket" and e.type == "events_api" and e.acked_at is None
                       and e.delivered_at and now - e.delivered_at > self.redeliver_after  # type: ignore[operator]
                       and e.retry_attempt < self.max_redeliveries
                       and not any(o.key == e.key and o.retry_attempt > e.retry_attempt for o in self.envelopes)]
            for env in due:
                sockets = [ws for ws in self._sockets if not ws.closed]
                if not sockets:
                    continue
                again = Envelope(envelope_id=secrets.token_hex(8) + "-" + secrets.token_hex(4), type=env.type,
                                 payload=env.payload, key=env.key, transport="socket",
                                 retry_attempt=env.retry_attempt + 1, delivered_at=time.monotonic())
                with self._lock:
                    self.envelopes.append(again)
                await sockets[-1].send_str(json.dumps({
                    "envelope_id": again.envelope_id, "type": again.type, "payload": again.payload,
                    "accepts_response_payload": False, "retry_attempt": again.retry_attempt,
                    "retry_reason": "timeout"}))

    # -- Socket Mode ----------------------------------------------------------------------

    async def _socket_mode(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            valid = ticket in self._tickets
            self._tickets.discard(ticket)
        if not valid:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": len([s for s in self._sockets if not s.closed]),
            "debug_info": {"host": "standin", "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                log.warning("socket mode client sent non-JSON text")
                continue
            envelope_id = data.get("envelope_id")
            with self._lock:
                env = next((e for e in self.envelopes if e.envelope_id == envelope_id), None)
                if env is not None and env.acked_at is None:
                    env.acked_at = time.monotonic()
                    env.ack_payload = data.get("payload") or {}
            if env is not None and env.ack_payload and env.type == "slash_commands":
                self._record_response(env.payload.get("response_url", ""), env.ack_payload, via="ack")
        self._sockets.remove(ws)
        return ws

    # -- Web API ------------------------------------------------------------------------------

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
        blocks = params.get("blocks")
        if blocks is None or blocks == "":
            return None
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                raise SlackError("invalid_blocks_format") from None
        if not isinstance(blocks, list):
            raise SlackError("invalid_blocks_format")
        if len(blocks) > limit:
            raise SlackError("invalid_blocks", errors=[f"no more than {limit} items allowed [json-pointer:/blocks]"])
        for i, block in enumerate(blocks):
            texts = []
            if isinstance(block.get("text"), dict):
                texts.append(block["text"].get("text", ""))
            for f in block.get("fields") or []:
                texts.append(f.get("text", ""))
            for t in texts:
                if block.get("type") == "section" and len(t) > SECTION_TEXT_LIMIT:
                    raise SlackError("invalid_blocks", errors=[
                        f"must be less than {SECTION_TEXT_LIMIT + 1} characters [json-pointer:/blocks/{i}/text/text]"])
                if block.get("type") == "header" and len(t) > 150:
                    raise SlackError("invalid_blocks", errors=[
                        f"must be less than 151 characters [json-pointer:/blocks/{i}/text/text]"])
        return blocks

    def _notify(self, kind: str, record: dict) -> None:
        for listener in self._listeners:
            try:
                listener(kind, dict(record))
            except Exception:  # a listener is a display aid; it must not break the API
                log.exception("stand-in listener failed")

    def _m_views_publish(self, params: dict) -> dict:
        """A user's Home tab: a view of type home, at most 100 blocks, each held to the message limits."""
        user = params.get("user_id")
        view = _json_param(params, "view")
        if not user or not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        if view.get("type") != "home":
            raise SlackError("invalid_arguments", errors=["view type must be home [json-pointer:/view/type]"])
        blocks = self._blocks({"blocks": view.get("blocks")}, HOME_BLOCKS_LIMIT) or []
        record = {"id": f"V{next(self._ids):08d}", "type": "home", "blocks": blocks, "user": user}
        with self._lock:
            self.home_views[user] = record
        return {"view": record}

    def open_home(self, user: str) -> Envelope:
        """``user`` opens the app's Home tab: ``app_home_opened``, as Slack sends it."""
        event = {"type": "app_home_opened", "user": user, "channel": "D0" + user[2:], "tab": "home",
                 "event_ts": f"{time.time():.6f}"}
        if user in self.home_views:
            event["view"] = self.home_views[user]
        return self.deliver_event(event)

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
        return {"channel": channel.id, "ts": msg["ts"], "message": _without_metadata(msg)}

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
        shown = [m if with_metadata else _without_metadata(m) for m in reversed(top)]
        return {"messages": shown[:limit], "has_more": len(top) > limit}

    def _m_conversations_replies(self, params: dict) -> dict:
        channel = self._channel(params)
        parent = self._find(channel.id, params.get("ts", ""))
        replies = [m for m in channel.messages if m.get("thread_ts") == parent["ts"] and m is not parent]
        return {"messages": [parent, *replies], "has_more": False}

    def _m_files_getUploadURLExternal(self, params: dict) -> dict:
        filename = params.get("filename")
        length = params.get("length")
        if not filename:
            raise SlackError("invalid_arguments")
        try:
            length = int(length)
        except (TypeError, ValueError):
            raise SlackError("invalid_arguments") from None
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {"id": file_id, "name": filename, "length": length, "content": None,
                               "completed": False}
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        with self._lock:
            if file_id not in self.files:
                return web.Response(status=404, text="file not found")
        fault = self._take_fault("upload")
        if fault is not None:
            await request.read()
            return self._fault_response(fault)
        if self.upload_dir is None:
            data = await request.read()
            size = len(data)
        else:
            path = f"{self.upload_dir}/{file_id}"
            size = 0
            with open(path, "wb") as out:
                async for block in request.content.iter_chunked(1 << 20):
                    out.write(block)
                    size += len(block)
            data = b""
        with self._lock:
            f = self.files[file_id]
            f["content"] = data
            f["size"] = size
            if self.upload_dir is not None:
                f["path"] = path
        return web.Response(text=f"OK - {size}")

    def _m_files_completeUploadExternal(self, params: dict) -> dict:
        files = _json_param(params, "files")
        if not files:
            raise SlackError("invalid_arguments")
        done = []
        for item in files:
            f = self.files.get(item.get("id", ""))
            if f is None or f["content"] is None:
                raise SlackError("file_not_found")
            f["title"] = item.get("title") or f["name"]
            f["completed"] = True
            done.append({"id": f["id"], "name": f["name"], "title": f["title"], "size": f["size"]})
        channel_id = params.get("channel_id")
        if channel_id:
            channel = self._channel(params, "channel_id")
            thread_ts = params.get("thread_ts") or None
            if thread_ts:
                self._find(channel.id, thread_ts)
            msg = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id,
                   "text": params.get("initial_comment") or "", "ts": self._next_ts(), "channel": channel.id,
                   "files": done}
            if thread_ts:
                msg["thread_ts"] = thread_ts
            for f in done:
                self.files[f["id"]].update(channel=channel.id, thread_ts=thread_ts)
            channel.messages.append(msg)
            self._notify("file", msg)
        return {"files": done}

    # -- response_url ----------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        try:  # held to the same block limits as a message
            self._blocks({"blocks": body.get("blocks")})
        except SlackError as exc:
            return web.Response(status=400, text=exc.error)
        self._record_response(str(request.url), body, via="response_url")
        return web.Response(text="ok")

    def _record_response(self, url: str, body: dict, via: str) -> None:
        record = {"url": url.split("?")[0], "via": via, "at": time.monotonic(),
                  "response_type": body.get("response_type", "ephemeral"), "text": body.get("text", ""),
                  "blocks": body.get("blocks")}
        with self._lock:
            self.responses.append(record)
        self._notify("response", record)

    def responses_for(self, envelope: Envelope) -> list[dict]:
        url = envelope.payload.get("response_url", "")
        with self._lock:
            return [r for r in self.responses if r["url"] == url]


def _json_param(params: dict, key: str) -> Any:
    """A parameter Slack takes as JSON: as sent in a form (a string) or in a JSON body (already parsed)."""
    value = params.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise SlackError("invalid_arguments") from None
    return value


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


def _without_metadata(msg: dict) -> dict:
    """Slack returns a message's metadata only to those who ask for it (``include_all_metadata``)."""
    return {k: v for k, v in msg.items() if k != "metadata"}
