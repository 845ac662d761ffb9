"""Network namespaces for the keepalived lab, and TCP forwarding across them.

The lab's servers live in namespaces of their own; the bot stays on the host's
loopback and reaches them through forwarders, so it runs its production code
unchanged (SSH to 127.0.0.1:port, probe http://127.0.0.1:port/). A socket
belongs to the namespace of the thread that created it, so a socket inside a
namespace is made on a short-lived thread that has joined it with setns(2).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import threading

log = logging.getLogger("cutover.lab.netns")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class NetnsError(Exception):
    pass


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s sending side: one direction of a relay."""
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


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


def netns_available() -> str | None:
    """Why namespaces can't be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cutover-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def socket_in(netns: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket inside ``netns`` (None: the caller's own namespace)."""
    if netns is None:
        return socket.socket(family, kind)
    made: list[socket.socket] = []
    errors: list[str] = []

    def make() -> None:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                errors.append(os.strerror(ctypes.get_errno()))
                return
            made.append(socket.socket(family, kind))
        finally:
            os.close(fd)

    thread = threading.Thread(target=make, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if errors or not made:
        raise NetnsError(f"cannot open a socket in namespace {netns}: {errors[0] if errors else 'unknown'}")
    return made[0]


def connect_in(netns: str | None, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    sock = socket_in(netns)
    sock.settimeout(timeout)
    sock.connect(address)
    sock.settimeout(None)
    return sock


class Forwarder:
    """Listens on ``listen`` in one namespace and relays each connection to ``target`` in another."""

    def __init__(self, listen: tuple[str | None, str, int], target: tuple[str | None, str, int]) -> None:
        self.listen_ns, host, port = listen
        self.target = target
        self.server = socket_in(self.listen_ns)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, port))
        self.server.listen(128)
        self.port = self.server.getsockname()[1]
        self._closed = threading.Event()
        self._paused = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"forward-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def pause(self) -> None:
        """Act like a host that went away: cut every relayed connection and refuse new ones until resumed."""
        self._paused.set()
        self._cut_all()

    def resume(self) -> None:
        self._paused.clear()

    def _cut_all(self) -> None:
        with self._lock:
            for s in list(self._conns):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def pick_target(self) -> tuple[str | None, str, int] | None:
        """Where the next connection goes (None: nowhere, it is closed)."""
        return self.target

    def _relay(self, client: socket.socket) -> None:
        target = None if self._paused.is_set() else self.pick_target()
        if target is None:
            client.close()
            return
        ns, host, port = target
        try:
            upstream = connect_in(ns, (host, port))
        except OSError:
            client.close()
            return
        for s in (client, upstream):  # relay each write as it comes: a relay must not add Nagle's delays
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conns.update((client, upstream))
        a = threading.Thread(target=pump, args=(client, upstream), daemon=True)
        a.start()
        pump(upstream, client)
        a.join()
        for s in (client, upstream):
            s.close()
        with self._lock:
            self._conns.difference_update((client, upstream))

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        self._cut_all()
