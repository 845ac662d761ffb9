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
import itertools
import logging
import threading
from typing import Any, Callable

from aiohttp import web

from bot.standins.slack.delivery import Delivery
from bot.standins.slack.files import Files
from bot.standins.slack.people import People
from bot.standins.slack.webapi import WebApi
from bot.standins.slack.wire import Channel, Envelope, Fault
from bot.waiting import wait_until

log = logging.getLogger("cutover.standin.slack")

CLOSE_WAIT = 1.0  # how long stop() waits for a Socket Mode client to answer the close frame
STOP_GRACE = 2.0  # how long stop() lets a request in flight finish
# The launch channel, and the editors' channel the example plan announces its content freeze in.
DEFAULT_CHANNELS = {"C0LAUNCH": "launch", "C0EDITORS": "editors"}


class SlackStandIn(WebApi, Files, Delivery, People):
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
