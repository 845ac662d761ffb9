"""A real OpenSSH server on 127.0.0.1, started for tests and the demo.

It gets its own host key, an authorized client key and a known_hosts file, so
the bot connects with its production code: key auth, RejectPolicy, nothing
auto-added.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bot.standins.netns import connect_in

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSshd:
    def __init__(self, workdir: Path, *, client_key: Path | None = None, log_level: str = "INFO",
                 extra_config: str = "", netns: str | None = None, listen: str = "127.0.0.1",
                 port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.netns = netns
        self.listen = listen
        self.port = port or free_port()
        self.address = ("127.0.0.1", self.port)
        self.user = getpass.getuser()
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = client_key or self.workdir / "client_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.log = self.workdir / "sshd.log"
        self.log_level = log_level
        self.extra_config = extra_config
        # A login shell's interactive setup (a user's .bashrc, which bash sources under sshd) is not part of
        # the servers this stands in for, and can stall when many sessions start at once: SHLVL above 1
        # tells bash not to source it. sshd takes only the first SetEnv line, so all go on one.
        self.env = {"SHLVL": "5", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "LocalSshd":
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("sshd is not installed (Debian package openssh-server)")
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        if not self.host_key.exists():
            subprocess.run([*keygen, "-f", str(self.host_key)], check=True)
        if not self.client_key.exists():
            subprocess.run([*keygen, "-f", str(self.client_key)], check=True)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        authorized.chmod(0o600)
        self.reachable_at("127.0.0.1", self.port)
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.listen}\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPidFile {self.workdir / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nMaxSessions 50\nMaxStartups 50\n"
            f"LogLevel {self.log_level}\n"  # and no SFTP subsystem: the bot needs none, and the tests show it
            f"SetEnv {' '.join(f'{k}={v}' for k, v in self.env.items())}\n{self.extra_config}")
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.process = subprocess.Popen([*prefix, sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-500:]}")
            try:
                connect_in(self.netns, ("127.0.0.1" if self.listen == "0.0.0.0" else self.listen, self.port)).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening within 10 s")

    def reachable_at(self, host: str, port: int) -> None:
        """Record where the bot reaches this server (a forwarded port, in the lab) in its known_hosts."""
        self.address = (host, port)
        host_pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[{host}]:{port} {host_pub[0]} {host_pub[1]}\n")

    def host_entry(self, **extra: object) -> dict:
        """The plan's [hosts.NAME] table for this server."""
        return {"address": self.address[0], "port": self.address[1], "user": self.user,
                "key_file": str(self.client_key), "known_hosts": str(self.known_hosts), **extra}

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener), to cut connections."""
        if self.process is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cut_connections(self) -> int:
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> "LocalSshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
