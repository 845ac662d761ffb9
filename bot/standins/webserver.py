"""The lab's web server: answers every GET with its own name and health, on every address it has.

Run inside a server's namespace: ``python -m bot.standins.webserver --name web-new-01 --health FILE``;
on a machine without namespaces, ``--host 127.0.0.1 --port 0 --port-file FILE`` says where it listens.
With ``--forward-flag FILE --forward-to HOST:PORT`` it is the old server's web tier that a plan's
``forward`` command can turn into a relay: while FILE exists, each new connection is passed, byte for byte,
to the other server (as an nginx upstream swap would), so the old application answers nothing.
"""

from __future__ import annotations

import argparse
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--health", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--port-file", help="write the port listened on here (by rename) once listening")
    parser.add_argument("--forward-flag", help="while this file exists, relay each connection to --forward-to")
    parser.add_argument("--forward-to", help="HOST:PORT of the server to forward to")
    args = parser.parse_args()
    health = Path(args.health)
    flag = Path(args.forward_flag) if args.forward_flag else None
    target = None
    if args.forward_to:
        host, _, port = args.forward_to.rpartition(":")
        target = (host, int(port))

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

        def finish_request(self, request: socket.socket, client_address: object) -> None:
            if flag is not None and target is not None and flag.exists():
                relay(request, target)
                return
            super().finish_request(request, client_address)

    server = Server((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(server.server_address[1]))
        tmp.rename(args.port_file)
    server.serve_forever()


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    """Pass one connection to ``target`` and back, until either side is done."""
    try:
        upstream = socket.create_connection(target, timeout=5)
    except OSError:
        return
    upstream.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join(30)
    upstream.close()


if __name__ == "__main__":
    main()
