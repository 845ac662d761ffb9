"""How the Slack stand-in reaches the app: Socket Mode envelopes (acked, redelivered when not), signed HTTP requests, and the ``response_url`` the app answers commands on."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from aiohttp import WSMsgType, web

from bot.standins.slack.blockkit import InvalidBlocks, validate
from bot.standins.slack.wire import Envelope

log = logging.getLogger("cutover.standin.slack")


class Delivery:
    """Delivering envelopes and taking the app's answers."""

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

    async def _response_url(self, request: web.Request) -> web.Response:
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        try:  # held to the same block limits as a message
            validate(body.get("blocks"))
        except InvalidBlocks as exc:
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
