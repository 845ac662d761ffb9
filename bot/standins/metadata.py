"""A droplet's metadata service, as DigitalOcean serves it to the droplet itself at 169.254.169.254.

It answers from the DigitalOcean stand-in's assignment, so the droplet that
holds the reserved IP says ``true`` at ``/metadata/v1/floating_ip/ipv4/active``
(and ``reserved_ip/ipv4/active``) and the other says ``false``; ``say`` makes
one droplet's service say something else, for the tests that need it to.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.standins.digitalocean import DigitalOceanStandIn


class MetadataStandIn:
    def __init__(self, do: DigitalOceanStandIn, droplet_id: int, ip: str) -> None:
        self.do = do
        self.droplet_id = droplet_id
        self.ip = ip
        self.override: str | None = None
        self._server: ThreadingHTTPServer | None = None

    def say(self, active: str | None) -> None:
        """Answer ``active`` whatever DigitalOcean holds (None: the truth again)."""
        self.override = active

    def active(self) -> str:
        if self.override is not None:
            return self.override
        return "true" if self.do.holder(self.ip) == self.droplet_id else "false"

    def start(self) -> "MetadataStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                answers = {"/metadata/v1/id": str(standin.droplet_id),
                           "/metadata/v1/floating_ip/ipv4/active": standin.active(),
                           "/metadata/v1/reserved_ip/ipv4/active": standin.active()}
                if standin.active() == "true":
                    answers["/metadata/v1/floating_ip/ipv4/ip_address"] = standin.ip
                    answers["/metadata/v1/reserved_ip/ipv4/ip_address"] = standin.ip
                body = answers.get(path)
                data = (body if body is not None else "not found").encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metadata", daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
