"""The lab's web server: answers every GET with its own name and health, on every address it has.

Run inside a server's namespace: ``python -m bot.standins.webserver --name web-new-01 --health FILE``;
on a machine without namespaces, ``--host 127.0.0.1 --port 0 --port-file FILE`` says where it listens.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--health", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--port-file", help="write the port listened on here (by rename) once listening")
    args = parser.parse_args()
    health = Path(args.health)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            try:
                state = health.read_text().strip()
            except OSError:
                state = "missing"
            body = f"{args.name} {state}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        # socketserver's default backlog is 5: while this process waits for the CPU, a sixth connection's
        # handshake is dropped and its client waits a second to retry. A web server takes far more.
        request_queue_size = 1024

    server = Server((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(server.server_address[1]))
        tmp.rename(args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
