"""The lab's web server: answers every GET with its own name and health, on every address it has.

Run inside a server's namespace: ``python -m bot.standins.webserver --name web-new-01 --health FILE``;
on a machine without namespaces, ``--host 127.0.0.1 --port 0 --port-file FILE`` says where it listens.
With ``--forward-flag FILE --forward-to HOST:PORT`` it is the old server's web tier that a plan's
``forward`` command can turn into a relay: while FILE exists, each new connection is passed, byte for byte,
to the other server (as an nginx upstream swap would), so the old application answers nothing.

With ``--tls-port`` it also serves HTTPS as a multisite does: ``--sites FILE`` lists the hostnames it has a
site for (one per line, read at each request; ``HOSTNAME NAME`` answers as server NAME, a vhost that passes
its requests to another server), ``--certs DIR`` holds ``HOSTNAME.pem`` (certificate and key)
for each name and ``default.pem`` for any other, chosen by the client's server name (SNI) at each handshake.
A listed hostname answers ``NAME HEALTH site=HOSTNAME``; any other, as a web server's default site does,
``NAME HEALTH site=default``. Tests change the files to take a site or a certificate away.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bot.standins.netns import pump


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--health", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--port-file", help="write the port listened on here (by rename) once listening")
    parser.add_argument("--forward-flag", help="while this file exists, relay each connection to --forward-to")
    parser.add_argument("--forward-to", help="HOST:PORT of the server to forward to")
    parser.add_argument("--tls-port", type=int, help="also serve HTTPS here (0: any free port)")
    parser.add_argument("--tls-port-file", help="write the HTTPS port here (by rename) once listening")
    parser.add_argument("--forward-tls-to", help="HOST:PORT of the server to forward HTTPS connections to")
    parser.add_argument("--certs", help="directory of HOSTNAME.pem and default.pem")
    parser.add_argument("--sites", help="file of the hostnames served, one per line")
    args = parser.parse_args()
    health = Path(args.health)
    flag = Path(args.forward_flag) if args.forward_flag else None
    target = _address(args.forward_to)
    tls_target = _address(args.forward_tls_to)
    sites = Path(args.sites) if args.sites else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            try:
                state = health.read_text().strip()
            except OSError:
                state = "missing"
            body = f"{self._name()} {state}{self._site()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _site(self) -> str:
            """`` site=HOSTNAME`` for a hostname this server has a site for, `` site=default`` for another on
            HTTPS; nothing for another on plain HTTP (the servers' own health page, by address)."""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            try:
                served = dict((line.split() + [""])[:2] for line in sites.read_text().lower().splitlines()
                              if line.strip()) if sites else {}
            except OSError:
                served = {}
            if host in served:
                return f" site={host}"
            return " site=default" if isinstance(self.connection, ssl.SSLSocket) else ""

        def _name(self) -> str:
            """The server's name, or the one its sites file gives a hostname (``HOSTNAME NAME``: a vhost that
            passes its requests to another server)."""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            try:
                for line in sites.read_text().splitlines() if sites else ():
                    parts = line.split()
                    if len(parts) == 2 and parts[0].lower() == host:
                        return parts[1]
            except OSError:
                pass
            return args.name

    class Server(ThreadingHTTPServer):
        # socketserver's default backlog is 5: while this process waits for the CPU, a sixth connection's
        # handshake is dropped and its client waits a second to retry. A web server takes far more.
        request_queue_size = 1024

        def finish_request(self, request: socket.socket, client_address: object) -> None:
            if flag is not None and target is not None and flag.exists():
                relay(request, target)
                return
            super().finish_request(request, client_address)

    class TLSServer(Server):
        def finish_request(self, request: socket.socket, client_address: object) -> None:
            if flag is not None and tls_target is not None and flag.exists():
                relay(request, tls_target)
                return
            request.settimeout(5)
            try:
                wrapped = _tls(Path(args.certs)).wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused the certificate, or went away: as a web server, say nothing
            wrapped.settimeout(None)
            try:
                Handler(wrapped, client_address, self)
            except OSError:
                pass  # the client went away mid-answer
            finally:
                wrapped.close()

    server = Server((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.tls_port is not None:
        tls = TLSServer((args.host, args.tls_port), Handler)
        tls.daemon_threads = True
        threading.Thread(target=tls.serve_forever, name="tls", daemon=True).start()
        if args.tls_port_file:
            _say_port(args.tls_port_file, tls.server_address[1])
    if args.port_file:
        _say_port(args.port_file, server.server_address[1])
    server.serve_forever()


def _say_port(path: str, port: int) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(str(port))
    tmp.rename(path)


def _address(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    return host, int(port)


def _tls(certs: Path) -> ssl.SSLContext:
    """The server's TLS: ``default.pem``, and at the handshake the certificate of the name the client asks for,
    read from the directory then (a test may have replaced it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "default.pem")

    def by_name(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        pem = certs / f"{(name or '').lower()}.pem"
        if name and pem.exists():
            own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            own.load_cert_chain(pem)
            sock.context = own

    context.sni_callback = by_name
    return context


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    """Pass one connection to ``target`` and back, until either side is done."""
    try:
        upstream = socket.create_connection(target, timeout=5)
    except OSError:
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join(30)
    upstream.close()


if __name__ == "__main__":
    main()
