"""A stand-in for the two servers' keepalived pair, where the real lab cannot run (no root, no namespaces).

It is labelled as a stand-in wherever it is used. The servers are real: an
sshd and a web server each, on 127.0.0.1, with the files ``cutover
keepalived`` generates for them. What stands in is keepalived and the network
it moves an address on: one process (``python -m
bot.standins.keepalived_pair CONFIG``) that, like keepalived on those files,

- runs each server's generated check script (it reads the health file) every
  ``interval`` seconds, with ``fall`` and ``rise``, and reads its track file
  every 50 ms (keepalived watches it with inotify);
- weighs them as the generated files do: on ``old`` a failed check and a
  flipped track file each lower its priority by ``step_down``, on ``new``
  (and on old when ``step_down`` is 0) either is FAULT;
- makes the server with the highest priority that is not in FAULT MASTER
  (``old`` while healthy, so a restored old server takes the address back, as
  keepalived's preemption does), the other BACKUP or FAULT, and tells each
  change to the server's generated notify script as keepalived does: the
  script records the state and, on MASTER, asks the DigitalOcean stand-in to
  assign the reserved IP to that server's droplet. A master that steps down
  by priority keeps the address until the new one takes it, after the new
  one's master-down interval (three adverts); one in FAULT lets it go at once
  and the other takes it an advert later;
- carries the VIP as a forwarder on 127.0.0.1 to the MASTER's web server.

The bot asks the servers what it asks real ones over SSH. Two tools on each
server's PATH answer from the stand-in: ``ip -o -4 addr show`` lists the VIP
on the server that holds it, ``pgrep -x keepalived`` finds the stand-in while
that server's keepalived is meant to run. Anything else goes to the real tool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.standins.digitalocean import DigitalOceanStandIn
from bot.standins.lab import (ADDRESSES, NAMES, PRIVATE_INTERFACE, PUBLIC, SERVER_PATH, TUNED, VIP, Edge,
                              KeepalivedTiming, Server, ServerPair)
from bot.standins.netns import Forwarder, pump
from bot.standins.sshd import LocalSshd, find_sshd
from bot.waiting import wait_until

ROLES = ("old", "new")


def pair_unavailable() -> str | None:
    """Why the stand-in pair can't run here, or None: it needs sshd, and curl for the generated notify script."""
    if find_sshd() is None:
        return "sshd is not installed (Debian package openssh-server)"
    if shutil.which("curl") is None:
        return "curl is not installed (Debian package curl): the generated notify script uses it"
    return None


class KeepalivedPairStandIn(ServerPair):
    """The two servers on 127.0.0.1 and the stand-in for their keepalived; the lab's interface."""

    label = ("one process on this machine runs each server's health check\nand moves a forwarded address, "
             "as keepalived would move the VIP")

    def __init__(self, workdir: Path, do: DigitalOceanStandIn, timing: KeepalivedTiming = TUNED,
                 client_key: Path | None = None, env: dict[str, dict[str, str]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.env = env or {}  # per role: more of the environment its SSH commands get
        self.do = do
        self.timing = timing
        self.client_key = client_key
        self.servers: dict[str, Server] = {}
        self.forwarders: list[Forwarder] = []
        self.ports: dict[str, int] = {}
        self.pair: subprocess.Popen | None = None
        self.vip_sockets: dict[str, socket.socket] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def _bring_up(self, timeout: float) -> None:
        for role in reversed(ROLES):  # new first: the old server's web tier forwards to it when asked
            self._server(role)
        # The VIP's sockets (HTTP and HTTPS) are made here and handed to the stand-in, so the plan knows their
        # ports up front.
        self.vip_sockets = {}
        for kind in ("vip", "tls-vip"):
            sock = self.vip_sockets[kind] = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.ports[kind] = sock.getsockname()[1]
        # The reserved IP as the public sees it: an edge that follows DigitalOcean's assignment.
        edge = Edge((None, "127.0.0.1", 0), self.do, lambda role: (None, "127.0.0.1", self.ports[f"tls-{role}"]))
        self.forwarders.append(edge)
        self.ports["tls-reserved_ip"] = edge.port
        for role in ROLES:
            self._write_wiring(role, self.do, self.timing, self.do.end_point)
            track = self.servers[role].dir / "health.track"
            if self.track and not track.exists():
                track.write_text("0\n")  # as keepalived's init_file does
        self._pair()
        self._wait(lambda: self.state("old") == "MASTER" and self.state("new") == "BACKUP", timeout,
                   "the stand-in to make old MASTER and new BACKUP")

    def _server(self, role: str) -> None:
        d = self.workdir / role
        (d / "bin").mkdir(parents=True, exist_ok=True)  # first on the PATH of commands run over SSH: tests' tools
        (d / "tools").mkdir(exist_ok=True)  # then the stand-in's `ip` and `pgrep`
        (d / "health").write_text("true\n")
        self._tools(role, d)
        sshd = LocalSshd(d / "sshd", client_key=self.client_key,
                         env={"PATH": f"{d / 'bin'}:{d / 'tools'}:{SERVER_PATH}", **self.env.get(role, {})})
        server = Server(role, None, d, sshd)
        self.servers[role] = server
        sshd.start()
        fwd = Forwarder((None, "127.0.0.1", 0), (None, "127.0.0.1", sshd.port))
        self.forwarders.append(fwd)
        sshd.reachable_at("127.0.0.1", fwd.port)
        port_file, tls_file = d / "web.port", d / "tls.port"
        log = open(d / "web.log", "ab")
        web = self._web_args(role, f"127.0.0.1:{self.ports.get('web-new')}", f"127.0.0.1:{self.ports.get('tls-new')}")
        server.processes["web"] = subprocess.Popen(
            [sys.executable, "-m", "bot.standins.webserver", "--name", NAMES[role], "--health", str(d / "health"),
             "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), "--tls-port", "0",
             "--tls-port-file", str(tls_file), *web], stdout=log, stderr=log,
            cwd=Path(__file__).resolve().parents[2])
        self._wait(lambda: port_file.exists() and tls_file.exists(), 10, f"the {role} web server")
        self.ports[f"web-{role}"] = int(port_file.read_text())
        self.ports[f"tls-{role}"] = int(tls_file.read_text())

    def _tools(self, role: str, d: Path) -> None:
        real_ip, real_pgrep = shutil.which("ip", path=SERVER_PATH), shutil.which("pgrep", path=SERVER_PATH)
        dev = PRIVATE_INTERFACE
        here = f"{ADDRESSES[role]}/24 brd {ADDRESSES[role].rsplit('.', 1)[0]}.255 scope global {dev}"
        public = f"{PUBLIC[role]}/24 brd {PUBLIC[role].rsplit('.', 1)[0]}.255 scope global eth0"
        (d / "tools" / "ip").write_text(
            "#!/bin/sh\n# keepalived pair stand-in: the addresses this server would have; the VIP while it holds it.\n"
            'if [ "$1" = -o ] && [ "$2" = -4 ] && [ "$3" = addr ] && [ "$4" = show ]; then\n'
            f"  echo '2: eth0    inet {public}\\       valid_lft forever preferred_lft forever'\n"
            f"  echo '3: {dev}    inet {here}\\       valid_lft forever preferred_lft forever'\n"
            f"  if [ \"$(cat {self.workdir / 'vip_holder'} 2>/dev/null)\" = {role} ]; then\n"
            f"    echo '3: {dev}    inet {VIP}/24 scope global secondary {dev}\\       valid_lft forever preferred_lft forever'\n"
            "  fi\n  exit 0\nfi\n"
            + (f'exec {real_ip} "$@"\n' if real_ip else 'echo "ip: not installed" >&2; exit 127\n'))
        (d / "tools" / "pgrep").write_text(
            "#!/bin/sh\n# keepalived pair stand-in: its process, while this server's keepalived is meant to run.\n"
            'if [ $# -eq 2 ] && [ "$1" = -x ] && [ "$2" = keepalived ]; then\n'
            f"  cat {d / 'keepalived.pid'} 2>/dev/null || exit 1\n  exit 0\nfi\n"
            + (f'exec {real_pgrep} "$@"\n' if real_pgrep else 'echo "pgrep: not installed" >&2; exit 127\n'))
        for tool in ("ip", "pgrep"):
            (d / "tools" / tool).chmod(0o755)

    def _pair(self) -> None:
        t = self.timing
        config = {"dir": str(self.workdir), "interval": t.interval, "fall": t.fall, "rise": t.rise,
                  "advert_int": t.advert_int, "priorities": {role: t.priority(role) for role in ROLES},
                  "weights": {role: t.weight(role) for role in ROLES},
                  "web": {role: self.ports[f"web-{role}"] for role in ROLES},
                  "tls": {role: self.ports[f"tls-{role}"] for role in ROLES},
                  "vip_fd": self.vip_sockets["vip"].fileno(), "tls_vip_fd": self.vip_sockets["tls-vip"].fileno()}
        path = self.workdir / "pair.json"
        path.write_text(json.dumps(config))
        log = open(self.workdir / "pair.log", "ab")
        self.pair = subprocess.Popen([sys.executable, "-m", "bot.standins.keepalived_pair", str(path)],
                                     stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[2],
                                     pass_fds=[sock.fileno() for sock in self.vip_sockets.values()])
        for sock in self.vip_sockets.values():
            sock.close()  # the stand-in has them now

    def stop(self) -> None:
        processes = [p for s in self.servers.values() for p in s.processes.values()]
        processes += [self.pair] if self.pair is not None else []
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for server in self.servers.values():
            server.sshd.stop()
        for fwd in self.forwarders:
            fwd.close()
        self._stop_metadata()

    def _metadata_url(self, role: str) -> dict:
        return {"metadata_url": f"http://127.0.0.1:{self.metadata[role].port}/metadata/v1"}

    # -- looking at it and breaking it ------------------------------------------------------------

    def vip_holder(self) -> str | None:
        try:
            holder = (self.workdir / "vip_holder").read_text().strip()
        except FileNotFoundError:
            return None
        return holder or None

    def state(self, role: str) -> str | None:
        try:
            return (self.servers[role].dir / "vrrp_state").read_text().strip() or None
        except FileNotFoundError:
            return None

    def stop_keepalived(self, role: str) -> None:
        (self.servers[role].dir / "keepalived.stopped").touch()
        self._wait(lambda: not (self.servers[role].dir / "keepalived.pid").exists(), 10,
                   f"the stand-in to stop {role}'s keepalived")

    def break_check(self, role: str) -> None:
        """Make ``role``'s health check fail whatever the health file says: it stays in FAULT."""
        self.servers[role].break_check()
        self._wait(lambda: self.state(role) == "FAULT", 15, f"the stand-in to put {role} in FAULT")

    def _wait(self, condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        try:
            wait_until(condition, timeout, what, interval=0.05)
        except TimeoutError:
            log = self.workdir / "pair.log"
            tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
            raise RuntimeError(f"the keepalived stand-in did not come up: timed out after {timeout:.0f}s waiting "
                               f"for {what}. {tail!r}") from None


# -- the stand-in process ---------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class _Node:
    """One server's keepalived: its check's run of results and its VRRP state."""

    def __init__(self, role: str, dir: Path, fall: int, rise: int, priority: int, weight: int) -> None:
        self.role = role
        self.dir = dir
        self.fall, self.rise = fall, rise
        self.base, self.weight = priority, weight
        self.running = True
        self.healthy = True  # as keepalived takes a check without init_fail: good until it fails
        self.tracked = False  # the track file holds something other than 0
        self.streak = 0  # consecutive results that disagree with ``healthy``
        self.state: str | None = None

    def checked(self, ok: bool) -> None:
        if ok == self.healthy:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.healthy, self.streak = ok, 0
            _say(f"{self.role}: check {'succeeded' if ok else 'failed'}; {'healthy' if ok else 'unhealthy'}")

    @property
    def ok(self) -> bool:
        return self.healthy and not self.tracked

    @property
    def fault(self) -> bool:
        """A failed check or a flipped track file with weight 0 is FAULT, as in keepalived."""
        return not self.ok and self.weight == 0

    @property
    def priority(self) -> int:
        """The base priority plus the weight of each failed check and flipped track file (weights are <= 0)."""
        return self.base + self.weight * ((not self.healthy) + self.tracked)

    def watch(self) -> None:
        """The track file, read as often as the loop turns, as keepalived's inotify watch would see it."""
        try:
            value = (self.dir / "health.track").read_text().strip()
        except FileNotFoundError:
            value = "0"
        tracked = value not in ("0", "")
        if tracked != self.tracked:
            self.tracked = tracked
            _say(f"{self.role}: track file holds {value!r}")

    def check(self) -> bool:
        """The generated check script, as keepalived's vrrp_script runs it."""
        try:
            return subprocess.run([str(self.dir / "cutover-check.sh")], timeout=2,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def enter(self, state: str) -> None:
        """A new VRRP state, told to the generated notify script as keepalived tells it (TYPE NAME STATE PRIO):
        it records the state and, on MASTER, asks DigitalOcean to assign the reserved IP."""
        if state == self.state:
            return
        _say(f"{self.role}: Entering {state} STATE")
        self.state = state
        try:
            done = subprocess.run([str(self.dir / "cutover-notify.sh"), "INSTANCE", "cutover", state,
                                   str(self.priority)], timeout=5, capture_output=True, text=True)
            if done.returncode != 0:
                _say(f"{self.role}: notify exited {done.returncode}: {done.stderr.strip()[-200:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            _say(f"{self.role}: notify failed: {exc}")


class _Pair:
    def __init__(self, config: dict) -> None:
        self.dir = Path(config["dir"])
        self.interval = float(config["interval"])
        self.advert_int = float(config["advert_int"])
        self.web = config["web"]
        self.nodes = {role: _Node(role, self.dir / role, int(config["fall"]), int(config["rise"]),
                                  int(config["priorities"][role]), int(config["weights"][role])) for role in ROLES}
        self.master: str | None = None
        self.takeover_at: float | None = None  # when a backup of higher priority takes over from a live master
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listeners = {"web": socket.socket(fileno=int(config["vip_fd"])),
                          "tls": socket.socket(fileno=int(config["tls_vip_fd"]))}
        self.ports = {"web": config["web"], "tls": config["tls"]}

    def run(self) -> None:
        for node in self.nodes.values():
            _write(node.dir / "keepalived.pid", f"{os.getpid()}\n")
        for kind in self.listeners:
            threading.Thread(target=self._accept, args=(kind,), name=f"vip-{kind}", daemon=True).start()
        next_check = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            for node in self.nodes.values():
                if node.running and (node.dir / "keepalived.stopped").exists():
                    node.running = False
                    (node.dir / "keepalived.pid").unlink(missing_ok=True)
                    node.enter("STOP")
            for node in self.nodes.values():
                node.watch()
            if now >= next_check:
                for node in self.nodes.values():
                    if node.running:
                        node.checked(node.check())
                next_check = now + self.interval
            self._elect()
            self.stopping.wait(0.05)
        for node in self.nodes.values():
            (node.dir / "keepalived.pid").unlink(missing_ok=True)

    def _elect(self) -> None:
        candidates = [r for r in ROLES if self.nodes[r].running and not self.nodes[r].fault]
        wanted = max(candidates, key=lambda r: self.nodes[r].priority) if candidates else None
        for node in self.nodes.values():
            if node.running and node.fault:
                node.enter("FAULT")
        if wanted == self.master:
            self.takeover_at = None
            for role in candidates:
                self.nodes[role].enter("MASTER" if role == wanted else "BACKUP")
            return
        if self.master is not None and self.master in candidates:
            # Stepped down by priority: it keeps the address until the other, after its master-down interval,
            # takes it (make-before-break).
            if self.takeover_at is None:
                self.takeover_at = time.monotonic() + 3 * self.advert_int
            if time.monotonic() < self.takeover_at:
                return
            self.takeover_at = None
            _say(f"{self.master}: lower priority ({self.nodes[self.master].priority}); {wanted} takes the VIP")
            stepped_down = self.master
            self._hold(wanted)
            self.nodes[wanted].enter("MASTER")  # as in keepalived: new takes over, then old hears it and lets go
            self.nodes[stepped_down].enter("BACKUP")
            return
        self.takeover_at = None
        if self.master is not None:
            _say(f"{self.master}: releasing the VIP")
            self._hold(None)
        if wanted is not None:
            self.stopping.wait(self.advert_int)  # the backup takes over after an advert's time
            self._hold(wanted)
            self.nodes[wanted].enter("MASTER")

    def _hold(self, role: str | None) -> None:
        with self.lock:
            self.master = role
        _write(self.dir / "vip_holder", (role or "") + "\n")
        _say(f"VIP {VIP} on {role or 'neither server'}")

    def _accept(self, kind: str) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listeners[kind].accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client, kind), daemon=True).start()

    def _relay(self, client: socket.socket, kind: str) -> None:
        with self.lock:
            holder = self.master
        if holder is None:
            client.close()  # nobody holds the address: the connection goes nowhere
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.ports[kind][holder]), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=pump, args=(client, upstream), daemon=True)
        back.start()
        pump(upstream, client)
        back.join()
        client.close()
        upstream.close()


def main(argv: list[str]) -> int:
    pair = _Pair(json.loads(Path(argv[0]).read_text()))
    signal.signal(signal.SIGTERM, lambda *_: pair.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: pair.stopping.set())
    _say(f"keepalived pair stand-in: VIP {VIP} on 127.0.0.1:{pair.listeners['web'].getsockname()[1]}")
    pair.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
