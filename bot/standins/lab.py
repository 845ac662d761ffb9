"""The keepalived lab: two web servers and a client in network namespaces, on one bridge.

Each server runs a real keepalived on exactly the files ``cutover keepalived``
generates (unicast VRRP, a check script that reads the server's health file,
a notify script that records the VRRP state and asks the DigitalOcean
stand-in to assign the reserved IP to its droplet), a real sshd and an HTTP
server that answers with its own name on the VIP and on its own address. The bot stays on
the host's loopback and reaches the lab through forwarders; the lab uses only
addresses inside the namespaces it made.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Self

from bot.plan import parse_plan
from bot.standins.digitalocean import DigitalOceanStandIn
from bot.standins.metadata import MetadataStandIn
from bot.standins.netns import Forwarder, connect_in, ip, netns_available
from bot.standins.sshd import LocalSshd, find_sshd
from bot.standins.tls import CertificateAuthority
from bot.switch.keepalived import RECOMMENDED, TUTORIAL, KeepalivedTiming, Options, generate
from bot.waiting import wait_until

SERVER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

SUBNET = "10.213.7"
VIP = f"{SUBNET}.100"
FLOATING_IP = "203.0.113.10"
DROPLETS = {"old": 3164444, "new": 3164494}
ADDRESSES = {"old": f"{SUBNET}.2", "new": f"{SUBNET}.3", "cli": f"{SUBNET}.10"}  # private (VPC), on eth1
PUBLIC = {"old": "192.0.2.2", "new": "192.0.2.3", "cli": "192.0.2.10"}  # each droplet's own public address, on eth0
PRIVATE_INTERFACE = "eth1"  # as on a droplet: eth0 public, eth1 the VPC
NAMES = {"old": "web-old-01", "new": "web-new-01"}
METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 8169
SITES = ("example.test", "fr.example.test", "de.example.test")  # the multisite's hostnames, served over HTTPS
DEFAULT_SITE = "site=default"  # what a server answers for a hostname it has no site for
_counter = itertools.count(1)


TUNED = RECOMMENDED  # what `cutover keepalived` writes
# The tests' lab: the tuned check and flip, with adverts every 0.5 s. The new server takes the address ~1.5 s
# after a flip, not ~0.6 s, and a busy test machine has to hold back three adverts in a row, not one, before
# the backup decides the master is gone and the pair splits.
STEADY = KeepalivedTiming(interval=1, fall=1, rise=2, advert_int=0.5)


def lab_unavailable() -> str | None:
    """Why the lab can't run on this machine, or None."""
    why = netns_available()
    if why:
        return why
    if shutil.which("keepalived") is None and not os.access("/usr/sbin/keepalived", os.X_OK):
        return "keepalived is not installed (Debian package keepalived)"
    if find_sshd() is None:
        return "sshd is not installed (Debian package openssh-server)"
    return None


@dataclass
class Server:
    role: str
    netns: str | None  # None: on this machine's own network (the keepalived stand-in)
    dir: Path
    sshd: LocalSshd
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def health_file(self) -> Path:
        return self.dir / "health"

    def break_check(self) -> None:
        """The check still reads the health file, then fails whatever it holds (a broken dependency, say)."""
        (self.dir / "cutover-check.sh").write_text(f"#!/bin/sh\ncat {self.health_file} >/dev/null\nexit 1\n")


class ServerPair:
    """What the lab and the keepalived stand-in share: two servers, each with sshd, a web server and a health file,
    reached from 127.0.0.1 through forwarders, and the plan that points the bot at them."""

    servers: dict[str, Server]
    ports: dict[str, int]
    env: dict[str, dict[str, str]]
    forwarders: list[Forwarder]
    do: DigitalOceanStandIn
    workdir: Path
    track: bool = True  # the plan names a track file (what `cutover keepalived` recommends)
    reassert: bool = True  # the generated re-assert after a split (a test turns it off to see it matter)
    vip: bool = True  # the plan names a private VIP; without it keepalived moves only the reserved IP
    ca: CertificateAuthority | None = None
    metadata: dict[str, MetadataStandIn]  # each droplet's metadata service

    def start(self, timeout: float = 30.0) -> Self:
        """Both droplets and the reserved IP on old at DigitalOcean, then the servers and what moves the VIP
        between them (each kind brings up its own), until DigitalOcean has settled on the old droplet. A start
        that fails part way is undone."""
        try:
            self.ca = CertificateAuthority.create(self.workdir / "ca")
            for role in ("old", "new"):
                self._site_files(role)
            self.metadata = {role: MetadataStandIn(self.do, DROPLETS[role], FLOATING_IP).start()
                             for role in ("old", "new")}
            self.do.add_droplet(DROPLETS["old"], NAMES["old"])
            self.do.add_droplet(DROPLETS["new"], NAMES["new"])
            self.do.add_ip(FLOATING_IP, DROPLETS["old"])
            self._bring_up(timeout)
            self._wait(lambda: not self.do.busy(FLOATING_IP) and self.do.holder(FLOATING_IP) == DROPLETS["old"],
                       timeout, "DigitalOcean to settle on the old droplet")
        except BaseException:
            self.stop()
            raise
        return self

    def _bring_up(self, timeout: float) -> None:
        raise NotImplementedError

    def _wait(self, condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the sites: HTTPS, a certificate per hostname from the lab's CA --------------------------------

    def _site_files(self, role: str) -> None:
        d = self.workdir / role
        for name in SITES:
            self.issue(role, name)
        assert self.ca is not None
        self.ca.issue(["default.invalid"], d / "certs" / "default.pem")
        (d / "sites").write_text("\n".join(SITES) + "\n")

    def issue(self, role: str, name: str, names: list[str] | None = None, days: float = 90) -> None:
        """``role``'s certificate for hostname ``name``: covering ``names`` (the name itself by default), valid
        ``days``; the server uses it from its next handshake."""
        assert self.ca is not None
        self.ca.issue(names or [name], self.workdir / role / "certs" / f"{name}.pem", days)

    def take_site(self, role: str, name: str) -> None:
        """``role`` no longer has a site for ``name`` (a vhost missing): it answers with its default site."""
        path = self.workdir / role / "sites"
        path.write_text("".join(f"{n}\n" for n in path.read_text().splitlines() if n.split()[0] != name))

    def answer_as(self, role: str, name: str, other: str) -> None:
        """``role``'s site for ``name`` answers as the ``other`` server does (its vhost passes requests there)."""
        path = self.workdir / role / "sites"
        lines = [n for n in path.read_text().splitlines() if n.split()[0] != name]
        path.write_text("".join(f"{n}\n" for n in lines) + f"{name} {NAMES[other]}\n")

    def sites(self) -> dict:
        """The ``[sites]`` table for these servers: the lab's hostnames over HTTPS, verified against its CA."""
        assert self.ca is not None
        return {"names": list(SITES), "ca_file": str(self.ca.path), "default_marker": DEFAULT_SITE,
                "path": "/health.php", "connect": {path: f"127.0.0.1:{self.ports[f'tls-{path}']}"
                                                   for path in ("old", "new", "reserved_ip", "vip")
                                                   if f"tls-{path}" in self.ports}}

    def _web_args(self, role: str, forward_to: str, forward_tls_to: str) -> list[str]:
        """The web server's arguments beside its name and health: HTTPS for the sites, and on old the forwarding."""
        d = self.workdir / role
        args = ["--certs", str(d / "certs"), "--sites", str(d / "sites")]
        if role == "old":
            args += ["--forward-flag", str(d / "forward"), "--forward-to", forward_to, "--forward-tls-to",
                     forward_tls_to]
        return args

    def set_health(self, role: str, value: str) -> None:
        self.servers[role].health_file.write_text(value + "\n")

    def ssh_down(self, role: str) -> None:
        """The bot loses SSH to ``role`` (its connections are cut, new ones refused); the server keeps running."""
        self._ssh_forwarder(role).pause()

    def ssh_up(self, role: str) -> None:
        self._ssh_forwarder(role).resume()

    def _ssh_forwarder(self, role: str) -> Forwarder:
        port = self.servers[role].sshd.address[1]
        return next(f for f in self.forwarders if f.port == port)

    def _write_wiring(self, role: str, do: DigitalOceanStandIn, timing: KeepalivedTiming, api: str) -> None:
        """Exactly the files `cutover keepalived` generates for this plan, in ``role``'s directory."""
        d = self.servers[role].dir
        (d / "do-token").write_text(do.token + "\n")
        (d / "do-token").chmod(0o600)
        options = Options(install_dir=str(d), timing=timing, digitalocean_api=api, token_file=str(d / "do-token"),
                          notify_log=str(d / "notify.log"), reassert=self.reassert,
                          script_security=False)  # these files live under /tmp, which anyone may write to
        for name, content in generate(parse_plan(self.plan(_WIRING_BASE), "lab plan"), options)[role].items():
            (d / name).write_text(content)
            (d / name).chmod(0o755 if name.endswith(".sh") else 0o644)

    def _metadata_url(self, role: str) -> dict:
        """Where ``role`` reaches its metadata service: DigitalOcean's own address, on the lab's port."""
        return {"metadata_url": f"http://{METADATA_ADDRESS}:{METADATA_PORT}/metadata/v1"}

    def _stop_metadata(self) -> None:
        for service in getattr(self, "metadata", {}).values():
            service.stop()

    def forwarding(self) -> dict:
        """The ``[data]`` keys that make the old server's web tier forward to the new one, and undo it."""
        flag = self.servers["old"].dir / "forward"
        return {"forward": f"touch {flag}", "unforward": f"rm -f {flag}"}

    def plan(self, base: dict) -> dict:
        """``base`` (the [slack] table and any stages) completed with these servers and the failover."""
        plan = dict(base)
        plan["hosts"] = {role: {**self.servers[role].sshd.host_entry(), "health_file": str(s.health_file),
                                "vrrp_state_file": str(s.dir / "vrrp_state"),
                                "keepalived_conf": str(s.dir / "keepalived.conf"),
                                "private_address": ADDRESSES[role], "interface": PRIVATE_INTERFACE,
                                **({"track_file": str(s.dir / "health.track")} if self.track else {}),
                                **self._metadata_url(role)}
                         for role, s in self.servers.items()}
        plan["failover"] = {
            "floating_ip": FLOATING_IP, **({"vip": VIP} if self.vip else {}), "old": "old", "new": "new",
            "health_file": "/var/www/health/state", "healthy": "true", "unhealthy": "false",
            # the site through keepalived's VIP, or without one through the reserved IP
            "probe_url": f"http://127.0.0.1:{self.ports['vip' if self.vip else 'reserved_ip']}/health.php",
            "new_probe_url": f"http://127.0.0.1:{self.ports['web-new']}/health.php",
            "old_probe_url": f"http://127.0.0.1:{self.ports['web-old']}/health.php",
            "new_marker": NAMES["new"], "old_marker": NAMES["old"], "verify_timeout": "30s",
        }
        plan["digitalocean"] = {"old_droplet": DROPLETS["old"], "new_droplet": DROPLETS["new"]}
        return plan


class Edge(Forwarder):
    """DigitalOcean's edge for the reserved IP: each new connection goes to the droplet the DigitalOcean stand-in
    says holds the IP, which changes only when an assign action completes; ``to(role)`` is where that droplet
    answers."""

    def __init__(self, listen: tuple[str | None, str, int], do: DigitalOceanStandIn,
                 to: Callable[[str], tuple[str | None, str, int]]) -> None:
        self.do = do
        self.to = to
        self.holder: int | None = None
        super().__init__(listen, (None, "127.0.0.1", 0))
        threading.Thread(target=self._follow, name="edge", daemon=True).start()

    def _follow(self) -> None:
        """The assignment, read every 5 ms: a connection never waits on the stand-in's lock."""
        while not self._closed.is_set():
            self.holder = self.do.holder(FLOATING_IP)
            self._closed.wait(0.005)

    def pick_target(self) -> tuple[str | None, str, int] | None:
        role = next((r for r, d in DROPLETS.items() if d == self.holder), None)
        return None if role is None else self.to(role)


class KeepalivedLab(ServerPair):
    def __init__(self, workdir: Path, do: DigitalOceanStandIn, timing: KeepalivedTiming = TUTORIAL,
                 client_key: Path | None = None, track: bool = True,
                 env: dict[str, dict[str, str]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.env = env or {}  # per role: more of the environment its SSH commands get
        self.do = do
        self.timing = timing
        self.client_key = client_key
        self.track = track
        tag = f"co{os.getpid() % 100000}x{next(_counter)}"
        self.ns = {role: f"{tag}-{role}" for role in ("br", "old", "new", "cli")}
        self.servers: dict[str, Server] = {}
        self.forwarders: list[Forwarder] = []
        self.ports: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def _bring_up(self, timeout: float) -> None:
        self._network()
        for role in ("old", "new"):
            self._server(role)
        self._keepalived("old")
        self._wait(lambda: self._state("old") == "MASTER" and (not self.vip or self.vip_holder() == "old"), timeout,
                   "the old server to be MASTER" + (", with the VIP" if self.vip else ""))
        self._keepalived("new")
        self._wait(lambda: self._state("new") == "BACKUP", timeout, "keepalived on the new server to back up")

    def _network(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            ip("link", "set", "lo", "up", netns=ns)
        # Two networks, as droplets have: the private one (br0, each host's eth1: VRRP, the VIP, the forwarding)
        # and the public one (br1, eth0: where the reserved IP's traffic arrives, at each droplet's own address).
        for bridge in ("br0", "br1"):
            ip("link", "add", bridge, "type", "bridge", netns=self.ns["br"])
            ip("link", "set", bridge, "up", netns=self.ns["br"])
        for role in ("old", "new", "cli"):
            for port, bridge, dev, address in ((f"p-{role}", "br0", PRIVATE_INTERFACE, ADDRESSES[role]),
                                               (f"q-{role}", "br1", "eth0", PUBLIC[role])):
                ip("link", "add", port, "netns", self.ns["br"], "type", "veth", "peer", "name", dev,
                   "netns", self.ns[role])
                ip("link", "set", port, "master", bridge, "up", netns=self.ns["br"])
                ip("addr", "add", f"{address}/24", "dev", dev, netns=self.ns[role])
                ip("link", "set", dev, "up", netns=self.ns[role])
        # The reserved IP as the public sees it: an edge in the client's namespace routes it to its holder.
        ip("addr", "add", f"{FLOATING_IP}/32", "dev", "lo", netns=self.ns["cli"])
        cli = self.ns["cli"]
        for port in (80, 443):
            self.forwarders.append(Edge((cli, FLOATING_IP, port), self.do,
                                        lambda role, port=port: (cli, PUBLIC[role], port)))
        self.ports["tls-reserved_ip"] = self._forward(None, (cli, FLOATING_IP, 443))
        self.ports["reserved_ip"] = self._forward(None, (cli, FLOATING_IP, 80))

    def _server(self, role: str) -> None:
        d = self.workdir / role
        d.mkdir(parents=True, exist_ok=True)
        (d / "health").write_text("true\n")
        (d / "bin").mkdir(exist_ok=True)  # first on the PATH of commands run over SSH: tests put stand-ins there
        sshd = LocalSshd(d / "sshd", client_key=self.client_key, netns=self.ns[role], listen="0.0.0.0", port=22,
                         env={"PATH": f"{d / 'bin'}:{SERVER_PATH}", **self.env.get(role, {})})
        server = Server(role, self.ns[role], d, sshd)
        self.servers[role] = server
        sshd.start()
        fwd = self._forward(None, (self.ns[role], ADDRESSES[role], 22))
        sshd.reachable_at("127.0.0.1", fwd)
        self.ports[f"ssh-{role}"] = fwd
        log = open(d / "web.log", "ab")
        web = self._web_args(role, f"{ADDRESSES['new']}:80", f"{ADDRESSES['new']}:443")
        server.processes["web"] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[role], sys.executable, "-m", "bot.standins.webserver",
             "--name", NAMES[role], "--health", str(d / "health"), "--tls-port", "443", *web], stdout=log,
            stderr=log, cwd=Path(__file__).resolve().parents[2])
        for port in (80, 443):
            self._wait(lambda: self._answers(self.ns["cli"], ADDRESSES[role], port), 10, f"the {role} web server")
        self.ports[f"web-{role}"] = self._forward(None, (self.ns["cli"], ADDRESSES[role], 80))
        self.ports[f"tls-{role}"] = self._forward(None, (self.ns["cli"], ADDRESSES[role], 443))
        if "vip" not in self.ports and self.vip:
            self.ports["vip"] = self._forward(None, (self.ns["cli"], VIP, 80))
            self.ports["tls-vip"] = self._forward(None, (self.ns["cli"], VIP, 443))
        self._forward((self.ns[role], "127.0.0.1", 8080), (None, "127.0.0.1", self.do.port))
        # The droplet's metadata service at DigitalOcean's own address, inside the server's namespace (on a port
        # of its own: the web server holds port 80 on every address, the VIP's included).
        ip("addr", "add", f"{METADATA_ADDRESS}/32", "dev", "lo", netns=self.ns[role])
        self._forward((self.ns[role], METADATA_ADDRESS, METADATA_PORT), (None, "127.0.0.1", self.metadata[role].port))

    def _keepalived(self, role: str) -> None:
        """keepalived on ``role`` with exactly the files `cutover keepalived` generates for this lab's plan."""
        server = self.servers[role]
        d = server.dir
        # The server reaches the DigitalOcean stand-in at 127.0.0.1:8080 in its own namespace (a forwarder).
        self._write_wiring(role, self.do, self.timing, "http://127.0.0.1:8080/v2/")
        conf = d / "keepalived.conf"
        log = open(d / "keepalived.log", "ab")
        server.processes["keepalived"] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[role], "keepalived", "--dont-fork", "--log-console", "--log-detail",
             "--vrrp", "-f", str(conf), "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid")],
            stdout=log, stderr=log)

    def stop(self) -> None:
        for server in self.servers.values():
            for proc in server.processes.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in server.processes.values():
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            server.sshd.stop()
        for fwd in self.forwarders:
            fwd.close()
        self._stop_metadata()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # -- looking at it and breaking it ------------------------------------------------------------

    def vip_holder(self) -> str | None:
        holders = [role for role in ("old", "new")
                   if VIP in ip("-o", "-4", "addr", "show", "dev", PRIVATE_INTERFACE, netns=self.ns[role]).stdout]
        return holders[0] if len(holders) == 1 else ("both" if holders else None)

    def split(self, role: str = "new") -> None:
        """Cut ``role`` off the private network without taking its link down (its port leaves the bridge): the
        adverts between the servers are lost, so each takes itself for the only one and becomes master."""
        ip("link", "set", f"p-{role}", "nomaster", netns=self.ns["br"])

    def heal(self, role: str = "new") -> None:
        ip("link", "set", f"p-{role}", "master", "br0", netns=self.ns["br"])

    def _state(self, role: str) -> str | None:
        """The VRRP state keepalived last logged for ``role``."""
        log = (self.servers[role].dir / "keepalived.log").read_text(errors="replace")
        for line in reversed(log.splitlines()):
            for state in ("MASTER", "BACKUP", "FAULT"):
                if f"Entering {state} STATE" in line:
                    return state
        return None

    def stop_keepalived(self, role: str) -> None:
        proc = self.servers[role].processes["keepalived"]
        proc.terminate()
        proc.wait(10)

    def break_check(self, role: str) -> None:
        """Make ``role``'s keepalived health check fail whatever the health file says (a fault the health file
        and the wiring check do not show): its keepalived keeps running, in FAULT, and never takes the VIP."""
        self.servers[role].break_check()
        self._wait(lambda: self._state(role) == "FAULT", 15, f"keepalived on {role} to enter FAULT")

    def client_netns(self) -> str:
        return self.ns["cli"]

    # -- plumbing ----------------------------------------------------------------------------------

    def _forward(self, listen: tuple[str | None, str, int] | None, target: tuple[str | None, str, int]) -> int:
        fwd = Forwarder(listen or (None, "127.0.0.1", 0), target)
        self.forwarders.append(fwd)
        return fwd.port

    @staticmethod
    def _answers(netns: str, host: str, port: int) -> bool:
        try:
            connect_in(netns, (host, port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait(self, condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        try:
            wait_until(condition, timeout, what, interval=0.1)
            return
        except TimeoutError:
            pass
        logs = "; ".join(f"{r}: {(s.dir / 'keepalived.log').read_text()[-300:]!r}" for r, s in self.servers.items()
                         if (s.dir / "keepalived.log").exists())
        raise RuntimeError(f"the lab did not come up: timed out after {timeout:.0f}s waiting for {what}. {logs}")



# The least plan that `cutover keepalived` needs beside the lab's servers and failover.
_WIRING_BASE = {"slack": {"channel": "C0LAB", "operators": ["U0LAB"], "approvers": ["U0LAB2"],
                          "required_approvals": 1}}
