"""HTTP mode's server: waitress in front of the Bolt app, with limits a public endpoint needs.

Waitress (Pylons) is a production WSGI server in pure Python: it reads
requests on one event loop and hands only complete ones to a pool of threads,
so half-sent requests cost a socket, not a thread; it refuses a body whose
declared length is over the limit before reading it, answers malformed HTTP
with 400 itself, and closes idle connections.

Here, before Bolt sees anything, a request to ``/slack/events`` must carry a
valid Slack signature (401 otherwise, the body unread beyond the limit and
never logged); a signed body that does not parse is a 400. ``/healthz`` says
the process answers; ``/readyz`` says whether it can do its job (see
``bot.ops.health``). No answer ever carries a traceback.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from typing import Any, Callable, Iterable

from slack_bolt import App, BoltRequest
from slack_sdk.signature import SignatureVerifier
from waitress.server import create_server

from bot.ops.health import Readiness

log = logging.getLogger("cutover.http")

BODY_LIMIT = 1024 * 1024  # Slack's requests are a few KB; a modal's submission stays well under this
HEADER_LIMIT = 16 * 1024
IDLE_TIMEOUT = 10  # seconds a connection may sit without sending (waitress counts whole seconds)
THREADS = 16
CONNECTIONS = 1000

StartResponse = Callable[..., Any]


class SlackFront:
    """The WSGI application: ``/slack/events`` (signed), ``/healthz``, ``/readyz``; everything else is 404."""

    def __init__(self, app: App, signing_secret: str, readiness: Readiness | None) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)
        self.readiness = readiness

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        try:
            if path == "/healthz":
                return _answer(start_response, 200, {"ok": True})
            if path == "/readyz":
                return self._ready(start_response)
            if path != "/slack/events":
                return _answer(start_response, 404, {"error": "not found"})
            if method != "POST":
                return _answer(start_response, 405, {"error": "POST only"}, [("Allow", "POST")])
            return self._slack(environ, start_response)
        except Exception as exc:  # a bug of ours: logged with its traceback, answered without one
            log.error("http: %s %s failed: %s", method, path, exc.__class__.__name__, exc_info=exc)
            return _answer(start_response, 500, {"error": "internal error"})

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        if self.readiness is None:
            return _answer(start_response, 503, {"ready": False, "checks": [], "note": "starting"})
        items = self.readiness.check()
        ready = all(item.ok for item in items)
        return _answer(start_response, 200 if ready else 503,
                       {"ready": ready, "checks": [{"name": i.name, "ok": i.ok, "detail": i.detail} for i in items]})

    def _slack(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _answer(start_response, 400, {"error": "bad Content-Length"})
        if length > BODY_LIMIT:  # waitress refuses these first; this holds whatever serves the app
            return _answer(start_response, 413, {"error": "body too large"})
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = _headers(environ)
        try:
            text = raw.decode("utf-8")  # Slack sends UTF-8; anything else is not from Slack
        except UnicodeDecodeError:
            log.warning("http: a request's body is not UTF-8 (%d bytes)", len(raw))
            return _answer(start_response, 400, {"error": "malformed body"})
        if not self.verifier.is_valid_request(text, headers):
            log.info("http: refused a request without a valid Slack signature from %s (%d bytes)",
                     environ.get("REMOTE_ADDR", "?"), len(raw))
            return _answer(start_response, 401, {"error": "invalid signature"})
        try:
            request = BoltRequest(body=text, query=environ.get("QUERY_STRING", ""), headers=headers)
        except ValueError as exc:
            log.warning("http: a signed request did not parse (%s, %d bytes)", exc.__class__.__name__, len(raw))
            return _answer(start_response, 400, {"error": "malformed body"})
        response = self.app.dispatch(request)
        status = response.status
        out = [(k, v) for k, values in response.headers.items() if k.lower() != "content-length" for v in values]
        body = (response.body or "").encode("utf-8")
        start_response(_status(status), [*out, ("Content-Length", str(len(body)))])
        return [body]


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Status"


def _headers(environ: dict) -> dict[str, str]:
    headers = {key[5:].lower().replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.lower().replace("_", "-")] = environ[key]
    return headers


def _answer(start_response: StartResponse, status: int, body: dict,
            extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(_status(status),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(extra or [])])
    return [data]


class HttpServer:
    """A running waitress server on its own thread."""

    def __init__(self, front: SlackFront, host: str, port: int) -> None:
        self.server = create_server(
            front, host=host, port=port, threads=THREADS, connection_limit=CONNECTIONS,
            channel_timeout=IDLE_TIMEOUT, cleanup_interval=2, max_request_body_size=BODY_LIMIT,
            max_request_header_size=HEADER_LIMIT,
            backlog=1024, ident="cutover", expose_tracebacks=False, asyncore_use_poll=True,
            clear_untrusted_proxy_headers=True)
        self.server_port = int(self.server.effective_port)  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.server.run, name="cutover-http", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        """Stop listening, close open connections, let running requests end (briefly)."""
        self.server.close()
        for channel in list(self.server._map.values()):  # type: ignore[union-attr]
            try:
                channel.close()
            except OSError:
                pass
        self.server.task_dispatcher.shutdown(timeout=2)  # type: ignore[union-attr]
        self.thread.join(2)
