"""A DigitalOcean API stand-in on 127.0.0.1: floating / reserved IPs and their actions.

Speaks the v2 shapes python-digitalocean reads: ``{"floating_ip": {...}}``,
actions that go ``in-progress`` → ``completed`` (or ``errored``), and
DigitalOcean's error bodies ``{"id": ..., "message": ...}`` with 401, 404,
422, 429 (with ratelimit headers) and 5xx on demand.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERRORS = {  # the bodies of DigitalOcean's published API spec
    401: ("unauthorized", "Unable to authenticate you."),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", "The resource you were accessing could not be found."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("too_many_requests", "API Rate limit exceeded."),
    500: ("server_error", "Unexpected server-side error"),
}
DEFAULT_ERROR = ("example_error", "some error message")  # the spec's generic default (502, 503, 504, …)
HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
            b"</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")
FAULTS = ("html", "reset", "hang", "slow", "garbage")
HANG_LIMIT = 120.0  # a hung answer ends by itself, at the latest when the stand-in stops


@dataclass
class Action:
    id: int
    type: str
    ip: str
    droplet_id: int | None
    started: float
    started_at: str
    outcome: str = "completed"
    status: str = "in-progress"
    completed_at: str | None = None  # when it settled: its start plus the action's delay
    started_wall: float = 0.0


class DigitalOceanStandIn:
    def __init__(self, token: str = "do-standin-token", action_delay: float = 1.0,
                 region: str = "fra1") -> None:
        self.token = token
        self.action_delay = action_delay
        self.region = region
        self.droplets: dict[int, str] = {}
        self.hidden_droplets: set[int] = set()  # answered 404, as to a token whose scopes do not reach them
        self.ips: dict[str, int | None] = {}
        self.actions: dict[int, Action] = {}
        self.requests: list[dict] = []
        self._faults: list[list[Any]] = []
        self._ids = itertools.count(36804000)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.next_outcome = "completed"
        self.serves_reserved_ips = True  # False: an API from before floating IPs were renamed reserved IPs
        self._stopped = threading.Event()

    # -- setup and control -----------------------------------------------------------

    def add_droplet(self, droplet_id: int, name: str) -> None:
        self.droplets[droplet_id] = name

    def add_ip(self, ip: str, droplet_id: int | None) -> None:
        self.ips[ip] = droplet_id

    def fail_next(self, status: int | str, times: int = 1, path: str = "", method: str = "",
                  delay: float = 0.0) -> None:
        """The next ``times`` requests whose path contains ``path`` (and of ``method``, if given) fail.

        ``status`` is an HTTP status (answered with the spec's JSON error body) or one of FAULTS: ``html``
        (a gateway's 502 page), ``reset`` (the connection is reset), ``hang`` (accepted, never answered),
        ``slow`` (answered correctly after ``delay`` seconds), ``garbage`` (200 with a body that is not JSON).
        """
        assert isinstance(status, int) or status in FAULTS, status
        with self._lock:
            self._faults.append([status, times, path, method, delay])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def busy(self, ip: str) -> bool:
        """An action on ``ip`` is still in progress."""
        self._settle()
        with self._lock:
            return any(a.ip == ip and a.status == "in-progress" for a in self.actions.values())

    def holder(self, ip: str) -> int | None:
        self._settle()
        with self._lock:
            return self.ips.get(ip)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "DigitalOceanStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="do-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "DigitalOceanStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def end_point(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/"

    # -- the API ------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Actions complete after ``action_delay``; an assignment takes effect when it completes."""
        now = time.monotonic()
        with self._lock:
            for action in self.actions.values():
                if action.status == "in-progress" and now - action.started >= self.action_delay:
                    action.status = action.outcome
                    action.completed_at = _iso(action.started_wall + self.action_delay)
                    if action.outcome == "completed":
                        self.ips[action.ip] = action.droplet_id if action.type == "assign_ip" else None

    def _ip_body(self, ip: str) -> dict:
        droplet_id = self.ips[ip]
        droplet = None if droplet_id is None else {
            "id": droplet_id, "name": self.droplets.get(droplet_id, f"droplet-{droplet_id}"), "status": "active",
            "region": {"slug": self.region}}
        return {"ip": ip, "droplet": droplet, "region": {"slug": self.region, "name": self.region},
                "locked": any(a.ip == ip and a.status == "in-progress" for a in self.actions.values()),
                "project_id": "standin-project"}

    def _action_body(self, action: Action) -> dict:
        return {"id": action.id, "status": action.status, "type": action.type, "started_at": action.started_at,
                "completed_at": action.completed_at,
                "resource_id": _ip_int(action.ip), "resource_type": "floating_ip", "region_slug": self.region}

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = req.path.split("?")[0].rstrip("/")
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append({"method": method, "path": path, "at": time.monotonic(),
                                  "body": raw.decode("utf-8", "replace")})
            fault = next((f for f in self._faults if f[1] > 0 and f[2] in path and f[3] in ("", method)), None)
            if fault is not None:
                fault[1] -= 1
        if fault is not None and not (fault[0] == "slow" and self._slow(fault[4])):
            return self._fault(req, fault[0])
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(req, 401)
        self._settle()
        parts = path.strip("/").split("/")
        if len(parts) > 1 and parts[1] == "reserved_ips" and not self.serves_reserved_ips:
            return self._error(req, 404)
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return self._error(req, 422, "The request body is not valid JSON.")
        with self._lock:
            if parts == ["v2", "account"] and method == "GET":
                return self._json(req, 200, {"account": {"uuid": "0c0ffee0-standin", "email": "ops@example.com",
                                                         "status": "active", "droplet_limit": 25}})
            if len(parts) == 3 and parts[:2] in (["v2", "floating_ips"], ["v2", "reserved_ips"]) and method == "GET":
                if parts[2] not in self.ips:
                    return self._error(req, 404)
                key = "floating_ip" if parts[1] == "floating_ips" else "reserved_ip"
                return self._json(req, 200, {key: self._ip_body(parts[2])})
            if len(parts) == 3 and parts[1] == "droplets" and method == "GET":
                droplet_id = int(parts[2]) if parts[2].isdigit() else None
                if droplet_id not in self.droplets or droplet_id in self.hidden_droplets:
                    return self._error(req, 404)
                return self._json(req, 200, {"droplet": {
                    "id": droplet_id, "name": self.droplets[droplet_id], "status": "active", "features": [],
                    "region": {"slug": self.region}, "networks": {"v4": [], "v6": []}, "tags": []}})
            if len(parts) == 4 and parts[1] in ("floating_ips", "reserved_ips") and parts[3] == "actions" \
                    and method == "POST":
                return self._new_action(req, parts[2], body)
            if len(parts) == 4 and parts[1] in ("floating_ips", "reserved_ips") and parts[3] == "actions" \
                    and method == "GET":
                if parts[2] not in self.ips:
                    return self._error(req, 404)
                mine = sorted((a for a in self.actions.values() if a.ip == parts[2]), key=lambda a: a.id,
                              reverse=True)  # newest first, as DigitalOcean lists them
                return self._json(req, 200, {"actions": [self._action_body(a) for a in mine], "links": {},
                                             "meta": {"total": len(mine)}})
            if len(parts) == 3 and parts[1] == "actions" and method == "GET" or \
                    len(parts) == 5 and parts[3] == "actions" and method == "GET":
                action = self.actions.get(int(parts[-1])) if parts[-1].isdigit() else None
                if action is None:
                    return self._error(req, 404)
                return self._json(req, 200, {"action": self._action_body(action)})
        return self._error(req, 404)

    def _new_action(self, req: BaseHTTPRequestHandler, ip: str, body: dict) -> None:
        if ip not in self.ips:
            return self._error(req, 404)
        kind = body.get("type")
        if kind == "assign":
            droplet = body.get("droplet_id")
            if droplet not in self.droplets:
                return self._error(req, 422, "Droplet not found.")
            action_type = "assign_ip"
        elif kind == "unassign":
            droplet, action_type = None, "unassign_ip"
        else:
            return self._error(req, 422, "Action type is not valid.")
        if any(a.ip == ip and a.status == "in-progress" for a in self.actions.values()):
            return self._error(req, 422, "The floating IP is locked by another action in progress.")
        action = Action(id=next(self._ids), type=action_type, ip=ip, droplet_id=droplet, started=time.monotonic(),
                        started_at=_now(), outcome=self.next_outcome, started_wall=time.time())
        self.actions[action.id] = action
        self._json(req, 201, {"action": self._action_body(action)})

    def _json(self, req: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("ratelimit-limit", "5000")
        req.send_header("ratelimit-remaining", "0" if status == 429 else "4999")
        req.send_header("ratelimit-reset", str(int(time.time()) + 60))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(data)

    def _error(self, req: BaseHTTPRequestHandler, status: int, message: str | None = None) -> None:
        error_id, default = ERRORS.get(status, DEFAULT_ERROR)
        headers = {"Retry-After": "1"} if status == 429 else None
        body = {"id": error_id, "message": message or default}
        if status >= 500:
            body["request_id"] = f"{next(self._ids):08x}-standin"
        self._json(req, status, body, headers)

    def _slow(self, delay: float) -> bool:
        """Hold the answer ``delay`` seconds, then let the request be served as usual."""
        time.sleep(delay)
        return True

    def _fault(self, req: BaseHTTPRequestHandler, fault: int | str) -> None:
        if isinstance(fault, int):
            return self._error(req, fault)
        if fault == "html":
            req.send_response(502)
            req.send_header("Content-Type", "text/html")
            req.send_header("Content-Length", str(len(HTML_502)))
            req.end_headers()
            req.wfile.write(HTML_502)
        elif fault == "garbage":
            req.send_response(200)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", "9")
            req.end_headers()
            req.wfile.write(b"<ok>true<")
        elif fault == "reset":
            req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            req.connection.close()
            req.close_connection = True
        elif fault == "hang":
            self._stopped.wait(HANG_LIMIT)
            req.close_connection = True


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(epoch: float) -> str:
    """DigitalOcean's time format: UTC, whole seconds."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ip_int(ip: str) -> int:
    a, b, c, d = (int(x) for x in ip.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d
