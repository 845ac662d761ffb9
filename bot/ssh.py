"""SSH to the plan's hosts with paramiko: known host keys only, jump hosts, one connection per host.

An unknown or changed host key is refused with a message that names the host
and says how to add the key after checking it; it is never added on its own.
Every remote call has a timeout. Commands are built by this module from the
plan and quoted with ``shlex.quote``; nothing typed in Slack is passed here.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import paramiko

from bot.plan import Host

log = logging.getLogger("cutover.ssh")
T = TypeVar("T")

STREAM_WINDOW = 16 << 20
STREAM_PACKET = 1 << 20
WAIT_STEP = 0.05  # the longest a command's reader sleeps between looks at its deadline
MISSING_EXIT = 44  # how the read command says the file does not exist


class SSHError(Exception):
    """A failure worded for the person on call: which host, what happened, what to try."""


class HostKeyError(SSHError):
    pass


class WriteRefused(SSHError):
    """The host answered that a write failed (a full disk, a read-only file system): nothing was replaced."""


@dataclass(frozen=True)
class Replaced:
    """A file as the host reads it back right after replacing it, and when the host says it was written."""

    content: bytes
    mtime: float


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


def known_hosts_path(host: Host) -> str:
    return os.path.expanduser(host.known_hosts or "~/.ssh/known_hosts")


def _host_spec(host: Host) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class SSHPool:
    """One live connection per host, reconnected on demand; safe to share between threads."""

    def __init__(self, hosts: dict[str, Host], *, connect_timeout: float = 10.0, command_timeout: float = 30.0,
                 keepalive: int = 15) -> None:
        self.hosts = hosts
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.keepalive = keepalive
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in hosts}
        self._count_lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # calls under way on each host's connection

    # -- connections ---------------------------------------------------------------

    def client(self, name: str) -> paramiko.SSHClient:
        if name not in self.hosts:
            raise SSHError(f"`{name}` is not a host in the plan")
        with self._locks[name]:
            client = self._clients.get(name)
            transport = client.get_transport() if client else None
            if transport is not None and transport.is_active():
                return client  # type: ignore[return-value]
            if client is not None:
                client.close()
            client = self._connect(self.hosts[name])
            self._clients[name] = client
            return client

    def _connect(self, host: Host) -> paramiko.SSHClient:
        """Connect directly or through the jump host (the plan rules out loops)."""
        sock = None
        if host.jump:
            jump = self.client(host.jump)
            try:
                sock = _transport(jump).open_channel(
                    "direct-tcpip", (host.address, host.port), ("127.0.0.1", 0), timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise SSHError(f"jump host `{host.jump}` could not reach `{host.name}` "
                               f"({host.address}:{host.port}): {exc}") from None
        client = paramiko.SSHClient()
        known = known_hosts_path(host)
        try:
            client.load_host_keys(known)
        except FileNotFoundError:
            pass
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"{known} (known_hosts of `{host.name}`) could not be read: {exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_file = os.path.expanduser(host.key_file) if host.key_file else None
        try:
            if sock is None:
                sock = socket.create_connection((host.address, host.port), timeout=self.connect_timeout)
                # paramiko sends a request as several small writes; with Nagle's algorithm each later one waits for
                # the server's delayed ACK (40 ms), which made every command take some 80 ms more than the network
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(host.address, port=host.port, username=host.user, key_filename=key_file,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout,
                           sock=sock, allow_agent=key_file is None, look_for_keys=key_file is None)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"the host key of `{host.name}` ({_host_spec(host)}) has CHANGED since it was recorded in "
                f"{known}: got {exc.key.get_name()} {exc.key.fingerprint}. Refusing to connect. If the server "
                f"was rebuilt, verify the new key out of band, remove the old line "
                f"(ssh-keygen -R '{_host_spec(host)}' -f {known}) and add the new one.") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"the host key of `{host.name}` ({_host_spec(host)}) is not in {known}; refusing to connect. "
                    f"Check its fingerprint with the server's owner, then add it: "
                    f"ssh-keyscan -p {host.port} {host.address} >> {known}") from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise SSHError(f"`{host.name}` refused the key for user {host.user}"
                               + (f" ({host.key_file})" if host.key_file else "")) from None
            raise SSHError(f"SSH to `{host.name}` ({host.address}:{host.port}) failed: {exc}") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise SSHError(f"`{host.name}` ({host.address}:{host.port}) did not answer within "
                           f"{self.connect_timeout:.0f}s") from None
        except OSError as exc:
            client.close()
            raise SSHError(f"cannot reach `{host.name}` ({host.address}:{host.port}): "
                           f"{exc.strerror or exc}") from None
        _transport(client).set_keepalive(self.keepalive)
        log.info("connected to %s (%s:%d)%s", host.name, host.address, host.port,
                 f" via {host.jump}" if host.jump else "")
        return client

    def _busy(self, name: str) -> bool:
        """Whether another call than the caller's is under way on the host's connection."""
        with self._count_lock:
            return self._in_flight.get(name, 0) > 1

    def _alive(self, name: str) -> bool:
        client = self._clients.get(name)
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def drop(self, name: str) -> None:
        with self._locks[name]:
            client = self._clients.pop(name, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for name in list(self._clients):
            self.drop(name)

    # -- remote calls -------------------------------------------------------------------

    def _with_client(self, name: str, what: str, fn: Callable[[paramiko.SSHClient], T], retry: bool) -> T:
        """Run ``fn`` on the host's connection; a connection found dead is reopened once if ``retry``."""
        for attempt in (1, 2):
            with self._count_lock:
                self._in_flight[name] = self._in_flight.get(name, 0) + 1
            try:
                return fn(self.client(name))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                if isinstance(exc, paramiko.ChannelException) and self._alive(name) and attempt == 1:
                    time.sleep(0.2)  # the server refused one more session: the command never started, ask again
                    continue
                if isinstance(exc, (socket.timeout, TimeoutError)) and self._alive(name) and self._busy(name):
                    # This call timed out while others (a flip among them) are under way on the same connection:
                    # closing it would cut them too. If the link is gone, they time out as well, and the last drops it.
                    raise SSHError(f"{what} on `{name}` failed: no answer within its timeout") from None
                self.drop(name)
                if not retry or attempt == 2 or isinstance(exc, (socket.timeout, TimeoutError)):
                    raise SSHError(f"{what} on `{name}` failed: lost the SSH connection "
                                   f"({str(exc) or exc.__class__.__name__})") from None
                log.info("connection to %s was dead; reconnecting once", name)
            finally:
                with self._count_lock:
                    self._in_flight[name] -= 1
        raise AssertionError("unreachable")

    def run(self, name: str, command: str, *, timeout: float | None = None, stdin: bytes | None = None,
            retry: bool = True) -> Result:
        """Run a command built by this program (never chat text) and wait for it, within ``timeout``.

        ``retry`` reopens a dead connection once; pass False for commands that must not run twice.
        """
        code, out, err = self._exec(name, command, timeout=timeout, stdin=stdin, retry=retry)
        return Result(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _exec(self, name: str, command: str, *, timeout: float | None = None, stdin: bytes | None = None,
              retry: bool = True) -> tuple[int, bytes, bytes]:
        """``run``, with the output as the bytes the host sent."""
        timeout = timeout or self.command_timeout

        def call(client: paramiko.SSHClient) -> tuple[int, bytes, bytes]:
            channel = _transport(client).open_session(timeout=self.connect_timeout)
            channel.settimeout(timeout)
            if stdin is None:
                channel.exec_command(_no_stdin(command))
            else:
                channel.exec_command(command)
                channel.sendall(stdin)
                channel.shutdown_write()  # the command is reading: it cannot have ended before this EOF
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                # sshd may send the exit status before the last of the output: done is the end of the output
                # (EOF) and the status both, never the status alone.
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif channel.closed or (channel.eof_received and channel.exit_status_ready()):
                    break
                elif time.monotonic() > deadline:
                    channel.close()
                    raise SSHError(f"a command on `{name}` did not finish within {timeout:.0f}s")
                elif channel.eof_received:  # the output is all here; the exit status is on its way
                    channel.status_event.wait(WAIT_STEP)
                else:  # woken by output on either stream, or EOF, as it arrives: no polling delay
                    select.select([channel], [], [], WAIT_STEP)
            code = channel.recv_exit_status()
            channel.close()
            if code == -1:  # the session ended without an exit status
                if client.get_transport() is not None and client.get_transport().is_active():
                    raise SSHError(f"a command on `{name}` ended without an exit status (killed by a signal?)")
                self.drop(name)  # the connection went mid-command
                raise SSHError(f"a command on `{name}` did not finish: lost the SSH connection")
            return code, bytes(out), bytes(err)

        return self._with_client(name, "a command", call, retry)

    def check(self, name: str, command: str, *, timeout: float | None = None, stdin: bytes | None = None,
              retry: bool = True) -> str:
        result = self.run(name, command, timeout=timeout, stdin=stdin, retry=retry)
        if result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise SSHError(f"`{command.split()[0]}` on `{name}` exited {result.exit_code}"
                           + (f": {detail[-1][:200]}" if detail else ""))
        return result.stdout

    def open_stream(self, name: str, command: str) -> paramiko.Channel:
        """Start a long-running command whose stdout the caller reads as it comes.

        The channel asks for large packets and a large window: paramiko's cost is per packet, and with
        OpenSSH's default 32 KiB packets it, not the network, would set the pace of a big log.
        """
        def call(client: paramiko.SSHClient) -> paramiko.Channel:
            channel = _transport(client).open_session(
                timeout=self.connect_timeout, window_size=STREAM_WINDOW, max_packet_size=STREAM_PACKET)
            channel.exec_command(_no_stdin(command))
            return channel

        return self._with_client(name, "following output", call, retry=True)

    def read_file(self, name: str, path: str) -> bytes | None:
        """The file's content, or None if it does not exist. One command on the host (no SFTP: a server need
        not offer that subsystem); a file that exists but may not be read is an SSHError saying so."""
        code, out, err = self._exec(name, f"p={quote(path)}; [ -e \"$p\" ] || exit {MISSING_EXIT}; "
                                          'exec cat -- "$p"')
        if code == MISSING_EXIT:
            return None
        if code != 0:
            said = _host_error(err, code)
            if "No such file" in said:
                return None  # removed between the test and the read
            raise SSHError(f"reading `{path}` on `{name}` failed: {said}")
        return out

    def write_file_atomic(self, name: str, path: str, content: bytes, mode: int = 0o644) -> None:
        """Write a temp file beside ``path`` and rename it over, so readers never see half a file; one command
        on the host, its input the content."""
        command = (f'p={quote(path)}; t="$p.cutover-$$.tmp"; '
                   f'if cat > "$t" && chmod {mode:o} "$t" && mv -f "$t" "$p"; then exit 0; '
                   'else rc=$?; rm -f "$t"; exit $rc; fi')
        code, _, err = self._exec(name, command, stdin=content)
        if code != 0:
            said = _host_error(err, code)
            if "No such file" in said:
                raise SSHError(f"writing `{path}` on `{name}` failed: its directory does not exist")
            raise SSHError(f"writing `{path}` on `{name}` failed: {said}")

    def replace_file(self, name: str, path: str, content: bytes, mode: int = 0o644) -> Replaced:
        """Replace ``path`` atomically (a temp file beside it, renamed over) and read it back, in one command.

        Run by the host's shell so that a failure is reported as the host's own error ("No space left on
        device", "Read-only file system"), the temp file is removed, and nothing is retried: WriteRefused
        means the file was not replaced; any other SSHError means the bot cannot know whether it was.
        """
        p = quote(path)
        command = (f'p={p}; t="$p.cutover-$$.tmp"; '
                   f'if cat > "$t" && chmod {mode:o} "$t" && mv -f "$t" "$p"; then '
                   'cat "$p" && printf "\\n%s\\n" "$(date -r "$p" +%s.%N)"; '
                   'else rc=$?; rm -f "$t"; exit $rc; fi')
        result = self.run(name, command, stdin=content, retry=False)
        if result.exit_code != 0:
            raise WriteRefused(f"`{path}` on `{name}` could not be written: "
                               f"{_host_error(result.stderr.encode(), result.exit_code)}")
        out = result.stdout.rstrip("\n")
        body, _, stamp = out.rpartition("\n")
        try:
            mtime = float(stamp)
        except ValueError:
            raise SSHError(f"`{path}` on `{name}` was written but could not be read back") from None
        return Replaced(body.encode(), mtime)

    def ensure_connected(self, name: str) -> None:
        """Connect now if needed, so that a later failure can only be of the call itself."""
        self.client(name)


def _transport(client: paramiko.SSHClient) -> paramiko.Transport:
    transport = client.get_transport()
    if transport is None:
        raise paramiko.SSHException("the connection is closed")
    return transport


def _host_error(err: bytes, code: int) -> str:
    """The host's own last word on a failed command, without the shell's prefix (``sh: 1: ``)."""
    reason = (err.decode("utf-8", "replace").strip().splitlines() or [f"exit {code}"])[-1]
    return re.sub(r"^(?:sh|bash|dash|cat|mv|chmod)(?:: \d+)?: ", "", reason)[:200]


def _no_stdin(command: str) -> str:
    """The command with its input from /dev/null instead of the channel.

    Sending EOF to close a command's input races a quick command: if the channel has closed meanwhile, the
    EOF names a channel sshd has already freed, and sshd drops the whole connection, with every other
    command on it. A command that needs no input is never sent an EOF.
    """
    return f"exec </dev/null; {command}"


def quote(value: str) -> str:
    return shlex.quote(value)
