"""The witnesses of where the site is served from, each asked in one place.

The preflight asks each once; the verification asks the same functions
again until they agree or its deadline passes. A witness answers with a
``Reading``: whether it shows what was expected, and the detail a person
needs to act on it.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from bot.clock import Clock
from bot.plan import Plan
from bot.ssh import SSHError, SSHPool, quote
from bot.switch.cloud import Cloud, CloudError
from bot.switch.model import Reading
from bot.switch.probes import ProbeResult, probe

# keepalived processes whose network namespace is this shell's: on a server that is all of them; on a test host
# sharing a machine with others, only its own.
KEEPALIVED_PIDS = ('me=$(readlink /proc/self/ns/net); for p in $(pgrep -x keepalived); do '
                   '[ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && echo $p; done; exit 0')
log = logging.getLogger("cutover.witnesses")
CLOUD_RETRY_FIRST = 0.5
CLOUD_RETRY_MAX = 4.0


def interface_of(lines: list[str], address: str) -> str | None:
    """The interface holding ``address`` in ``ip -o -4 addr show`` lines (``2: eth1    inet 10.0.0.2/24 …``)."""
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet" and fields[3].split("/")[0] == address:
            return fields[1].split("@")[0]
    return None


def _mentions(text: str, path: str) -> bool:
    """``path`` appears in ``text`` as itself, not as the start of a longer name (``state`` in ``state.track``)."""
    return re.search(rf"(?<![\w./-]){re.escape(path)}(?![\w./-])", text) is not None


def _uncommented(raw: bytes, marks: str = "#") -> str:
    """A shell script (``#``) or keepalived configuration (``#!``) without its comments: a path that is only
    mentioned in a comment is not read."""
    pattern = re.compile(rf"(^|\s)[{marks}].*$")
    return "\n".join(pattern.sub("", line) for line in raw.decode("utf-8", "replace").splitlines())


@dataclass(frozen=True)
class Snapshot:
    """One server's small files and addresses, read by one SSH command: a confirmation in one round trip."""

    host: str
    files: dict[str, str | None]  # path -> content (stripped), None when the file does not exist
    addresses: tuple[str, ...]  # `ip -o -4 addr show` lines
    error: str = ""  # why the server could not be asked; then nothing else is known
    unreadable: tuple[str, ...] = ()  # files that exist but may not be read

    def read(self, path: str) -> str | None:
        """A file's content as ``read_file`` gives it; SSHError when the server or the file could not be read."""
        if self.error:
            raise SSHError(self.error)
        if path in self.unreadable:
            raise SSHError(f"`{path}` on `{self.host}` may not be read (permission denied)")
        return self.files.get(path)


@dataclass(frozen=True)
class VipHolders:
    hosts: tuple[str, ...]
    errors: tuple[str, ...]

    def where(self) -> str:
        return " and ".join(f"`{h}`" for h in self.hosts) if self.hosts else "neither server"


class Witnesses:
    def __init__(self, plan: Plan, ssh: SSHPool, cloud: Cloud, clock: Clock) -> None:
        assert plan.failover is not None and plan.digitalocean is not None
        self.plan = plan
        self.config = plan.failover
        self.droplets = plan.digitalocean
        self.ssh = ssh
        self.cloud_client = cloud
        self.clock = clock

    # -- the servers ----------------------------------------------------------------------------

    def snapshot(self, host: str, paths: list[str]) -> Snapshot:
        """``paths`` (small files: health, track, VRRP state) and the addresses on ``host``, in one SSH command."""
        script = ("for p in " + " ".join(quote(p) for p in paths) + "; do "
                  'if [ -r "$p" ]; then printf "=%s\\n" "$(head -c 4096 "$p" | base64 | tr -d "\\n")"; '
                  'elif [ -e "$p" ]; then echo "!"; else echo "-"; fi; done; '
                  "ip -o -4 addr show")
        try:
            lines = self.ssh.check(host, script, timeout=10).splitlines()
        except SSHError as exc:
            return Snapshot(host, {}, (), error=str(exc))
        files: dict[str, str | None] = {}
        unreadable = []
        for path, line in zip(paths, lines):
            if line.startswith("="):
                files[path] = base64.b64decode(line[1:]).decode("utf-8", "replace").strip()
            elif line == "!":
                unreadable.append(path)
            else:
                files[path] = None
        return Snapshot(host, files, tuple(lines[len(paths):]), unreadable=tuple(unreadable))

    def health(self, host: str, snap: Snapshot | None = None) -> str | None:
        """The health file's value on ``host``, or None when it does not exist (from ``snap`` when given)."""
        if snap is not None:
            return snap.read(self.plan.health_file(host))
        raw = self.ssh.read_file(host, self.plan.health_file(host))
        return None if raw is None else raw.decode("utf-8", "replace").strip()

    def vip_holders(self, snaps: dict[str, Snapshot] | None = None) -> VipHolders:
        """Which servers carry keepalived's address now; a server that could not be asked is an error."""
        holders, errors = [], []
        for host in (self.config.old, self.config.new):
            if snaps is not None and snaps[host].error:
                errors.append(snaps[host].error)
                continue
            try:
                lines = snaps[host].addresses if snaps is not None else \
                    self.ssh.check(host, "ip -o -4 addr show", timeout=10).splitlines()
            except SSHError as exc:
                errors.append(str(exc))
                continue
            if any(f" {self.config.vip}/" in line and line.split()[1:2] != ["lo"] for line in lines):
                holders.append(host)  # keepalived's address; a copy on lo (LVS-DR style) answers no ARP
        return VipHolders(tuple(holders), tuple(errors))

    def keepalived(self, host: str) -> Reading:
        """Whether keepalived runs on ``host``: a keepalived process in the network namespace SSH lands in."""
        try:
            out = self.ssh.check(host, KEEPALIVED_PIDS, timeout=10)
        except SSHError as exc:
            return Reading("keepalived", False, f"cannot tell whether keepalived runs on `{host}`: {exc}")
        pids = out.split()
        if pids:
            return Reading("keepalived", True, f"keepalived runs on `{host}` (pid {', '.join(pids[:3])})",
                           self.clock.now())
        return Reading("keepalived", False, f"keepalived is not running on `{host}`: without it the VIP cannot "
                                            f"move; start it there (`systemctl start keepalived`)")

    def wiring(self, host: str) -> Reading:
        """keepalived's configuration on ``host`` reads the plan's health file and has an executable notify script.

        The health file's path must appear in the configuration or in a check script it names (as in what
        `cutover keepalived` writes); every notify script it names must exist and be executable.
        """
        conf_path, health = self.plan.keepalived_conf(host), self.plan.health_file(host)
        regenerate = "generate it with `cutover keepalived` and install it"
        try:
            raw = self.ssh.read_file(host, conf_path)
            if raw is None:
                return Reading("wiring", False, f"`{conf_path}` is not on `{host}`: keepalived there is not "
                                                f"configured where the plan says (`keepalived_conf`); {regenerate}")
            conf = _uncommented(raw, "#!")
            scripts = re.findall(r'^\s*script\s+"?([^"\s]+)', conf, re.M)
            notifies = re.findall(r'^\s*notify(?:_master)?\s+"?([^"\s]+)', conf, re.M)
            read = conf + "".join(_uncommented(self.ssh.read_file(host, path) or b"")
                                  for path in scripts if path.startswith("/"))
            missing = [path for path in notifies
                       if self.ssh.run(host, f"test -x {quote(path)}", timeout=10).exit_code != 0]
            addresses = self.ssh.check(host, "ip -o -4 addr show", timeout=10).splitlines()
        except SSHError as exc:
            return Reading("wiring", False, f"cannot read keepalived's configuration on `{host}`: {exc}")
        problems = []
        spoken = re.search(r"^\s*interface\s+(\S+)", conf, re.M)
        private = self.plan.hosts[host].private_address
        if spoken and private:
            holding = interface_of(addresses, private)
            if holding is None:
                problems.append(f"`{host}` has no interface with its private address {private} (`private_address` "
                                "in the plan): keepalived's unicast adverts would come from nowhere")
            elif holding != spoken.group(1):
                problems.append(f"keepalived on `{host}` speaks VRRP on `{spoken.group(1)}`, but its private address "
                                f"{private} is on `{holding}`: the adverts would not reach the peer and both servers "
                                f"would become master; regenerate with `cutover keepalived --online` (or set "
                                f"`interface = \"{holding}\"` for `{host}` in the plan)")
        track = self.plan.track_file(host)
        if track is not None and not _mentions(conf, track):
            problems.append(f"keepalived on `{host}` does not watch the track file `{track}` the plan names, so "
                            f"the flip would wait for its check; {regenerate}")
        if not _mentions(read, health):
            checks = ", ".join(f"`{p}`" for p in scripts) or "no check script"
            problems.append(f"keepalived on `{host}` does not read the health file `{health}` (its checks: "
                            f"{checks}), so the flip would not move it; {regenerate}")
        if not notifies:
            problems.append(f"keepalived on `{host}` has no notify script in `{conf_path}`: nothing would ask "
                            f"DigitalOcean to move the reserved IP or record the VRRP state; {regenerate}")
        for path in missing:
            problems.append(f"keepalived's notify script `{path}` on `{host}` is missing or not executable "
                            f"(`chmod 0755` it, or {regenerate})")
        if problems:
            return Reading("wiring", False, "; ".join(problems))
        return Reading("wiring", True, f"keepalived on `{host}` reads `{health}` and notifies through "
                                       + ", ".join(f"`{p}`" for p in notifies), self.clock.now())

    def vrrp(self, master: str, backup: str, snaps: dict[str, Snapshot], backup_may_fault: bool = False) -> Reading:
        """keepalived's own VRRP states, as its notify script records them (and ``snaps`` read them): ``master``
        MASTER, ``backup`` BACKUP.

        Before a rollback the old server may be in FAULT (with wiring where a failed check puts it there, as
        DigitalOcean's tutorial has), so there ``backup_may_fault`` accepts FAULT as well: restoring its health
        file brings it back.
        """
        if self.plan.vrrp_state_file(master) is None or self.plan.vrrp_state_file(backup) is None:
            return Reading("vrrp", False, "VRRP states not read: the plan has no `[failover] vrrp_state_file` "
                                          "(a keepalived notify script writes MASTER, BACKUP or FAULT there)")
        states, problems = {}, []
        for host, wanted in ((master, ("MASTER",)), (backup, ("BACKUP", "FAULT") if backup_may_fault else ("BACKUP",))):
            path = self.plan.vrrp_state_file(host) or ""
            try:
                state = snaps[host].read(path)
            except SSHError as exc:
                problems.append(f"cannot read `{path}` on `{host}`: {exc}")
                continue
            states[host] = state
            if state not in wanted:
                shown = f"`{state[:20]}`" if state else "nothing (no state written yet)"
                problems.append(f"keepalived on `{host}` is {shown}, expected {' or '.join(wanted)}")
        if problems:
            return Reading("vrrp", False, "; ".join(problems))
        return Reading("vrrp", True, f"keepalived is MASTER on `{master}` and {states[backup]} on `{backup}`",
                       self.clock.now())

    def vip(self, expected: str, deadline: float | None = None, snaps: dict[str, Snapshot] | None = None) -> Reading:
        """keepalived's address on ``expected`` alone, waiting for it until ``deadline`` (monotonic) if given;
        as ``snaps`` show it when given (no waiting then). Without a VIP (DigitalOcean's own wiring), keepalived
        MASTER on ``expected`` alone, by the states its notify scripts record."""
        vip = self.config.vip
        if vip is None:
            return self._master(expected, deadline, snaps)
        if snaps is not None:
            deadline = None
        while True:
            holders = self.vip_holders(snaps)
            if holders.hosts == (expected,):
                return Reading("keepalived", True, f"keepalived holds VIP {vip} on `{expected}` only", self.clock.now())
            if deadline is None or time.monotonic() >= deadline:
                extra = f" ({'; '.join(holders.errors)})" if holders.errors else ""
                return Reading("keepalived", False, f"VIP {vip} is on {holders.where()}, expected `{expected}` "
                                                    f"alone{extra}")
            time.sleep(0.3)

    def _master(self, expected: str, deadline: float | None, snaps: dict[str, Snapshot] | None) -> Reading:
        other = self.config.old if expected == self.config.new else self.config.new
        while True:
            now = snaps or {h: self.snapshot(h, [p for p in [self.plan.vrrp_state_file(h)] if p])
                            for h in (expected, other)}
            states: dict[str, str] = {}
            for host in (expected, other):
                path = self.plan.vrrp_state_file(host)
                try:
                    states[host] = (now[host].read(path) if path else None) or "nothing recorded"
                except SSHError as exc:
                    states[host] = f"unknown ({exc})"
            if states[expected] == "MASTER" and states[other] != "MASTER":
                return Reading("keepalived", True, f"keepalived is MASTER on `{expected}` alone (`{other}`: "
                                                   f"{states[other]}); no VIP: it moves the reserved IP only",
                               self.clock.now())
            if snaps is not None or deadline is None or time.monotonic() >= deadline:
                return Reading("keepalived", False, f"keepalived is {states[expected]} on `{expected}` and "
                                                    f"{states[other]} on `{other}`, expected MASTER on `{expected}` "
                                                    "alone")
            time.sleep(0.3)

    # -- DigitalOcean ----------------------------------------------------------------------------

    def droplets_seen(self) -> Reading:
        """DigitalOcean's token sees both droplets (the reserved IP itself is the ``cloud`` reading)."""
        seen, problems = [], []
        for host in (self.config.old, self.config.new):
            droplet = self.droplet_of(host)
            try:
                seen.append(f"{droplet} `{self.cloud_client.droplet(droplet)}` (`{host}`)")
            except CloudError as exc:
                hint = (" — the token cannot see it: give it droplet:read, or check [digitalocean] "
                        f"{'old' if host == self.config.old else 'new'}_droplet") if exc.status == 404 else ""
                problems.append(f"droplet {droplet} (`{host}`): {exc}{hint}")
        if problems:
            return Reading("droplets", False, "; ".join(problems))
        return Reading("droplets", True, "DigitalOcean's token sees droplets " + " and ".join(seen), self.clock.now())

    def droplet_of(self, host: str) -> int:
        return self.droplets.old_droplet if host == self.config.old else self.droplets.new_droplet

    def cloud(self, expected: str, within: float, deadline: float | None = None,
              on_error: list[str] | None = None) -> Reading:
        """DigitalOcean's assignment of the floating IP to ``expected``'s droplet, asked for ``within`` seconds.

        ``deadline`` (monotonic) overrides the end when a caller shares one across witnesses. Errors worth
        retrying are retried with backoff; each is added to ``on_error`` when given.
        """
        deadline = deadline if deadline is not None else time.monotonic() + within
        ip = self.config.floating_ip
        droplet = self.droplet_of(expected)
        holder: int | None = None
        answered = False
        errors = on_error if on_error is not None else []
        delay = CLOUD_RETRY_FIRST
        while True:
            try:
                holder = self.cloud_client.holder(ip, timeout=max(0.5, min(self.cloud_client.timeout,
                                                                           deadline - time.monotonic())))
                answered = True
                if holder == droplet:
                    return Reading("digitalocean", True, f"DigitalOcean has {ip} on droplet {droplet} "
                                                         f"(`{expected}`)", self.clock.now())
                delay = CLOUD_RETRY_FIRST
            except CloudError as exc:
                errors.append(str(exc))
                if not exc.retryable:
                    return Reading("digitalocean", False, str(exc))
                delay = max(min(delay * 2, CLOUD_RETRY_MAX), exc.retry_after or 0)
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
        seen = f"{len(errors)} error(s), the last: {errors[-1]}" if errors else ""
        if answered:
            where = f"droplet {holder}" if holder else "no droplet"
            return Reading("digitalocean", False, f"DigitalOcean has {ip} on {where}, expected {droplet} "
                                                  f"(`{expected}`) after {within:.0f}s" + (f"; {seen}" if seen else ""))
        return Reading("digitalocean", False, f"DigitalOcean gave no usable answer within {within:.0f}s: {seen}")

    def metadata(self, expected: str, deadline: float | None = None) -> Reading:
        """Each droplet's own metadata service, asked from the droplet over SSH: the reserved IP is active on
        ``expected``'s droplet and not on the other's. Waits for it until ``deadline`` (monotonic) if given."""
        other = self.config.old if expected == self.config.new else self.config.new
        while True:
            said = {host: self._active(host) for host in (expected, other)}
            if said[expected] == "true" and said[other] == "false":
                return Reading("metadata", True, f"the metadata of `{expected}` says the reserved IP is active there, "
                                                 f"that of `{other}` says not", self.clock.now())
            if deadline is None or time.monotonic() >= deadline:
                return Reading("metadata", False, f"the droplets' metadata disagree with the switch: `{expected}` "
                                                  f"says {said[expected]}, `{other}` says {said[other]} (asked: "
                                                  "`floating_ip/ipv4/active`; expected true on "
                                                  f"`{expected}`, false on `{other}`)")
            time.sleep(0.3)

    def _active(self, host: str) -> str:
        """``true`` or ``false`` as the droplet's metadata says of its reserved IP, or why it could not be asked."""
        url = f"{self.plan.hosts[host].metadata_url}/floating_ip/ipv4/active"
        try:
            result = self.ssh.run(host, f"curl -fsS --max-time 3 {quote(url)}", timeout=10)
        except SSHError as exc:
            return f"nothing (SSH: {exc})"
        said = result.stdout.strip()
        if result.exit_code != 0:
            err = (result.stderr.strip().splitlines() or [""])[-1][:120]
            return f"nothing (curl exited {result.exit_code}{': ' + err if err else ''})"
        return said if said in ("true", "false") else f"`{said[:40]}`"

    def assign_action(self) -> tuple[datetime | None, datetime | None]:
        """DigitalOcean's newest assign action of the reserved IP: when it started and completed, by its record.
        (None, None) when it cannot be read: the times are a record, not a witness."""
        try:
            action = self.cloud_client.last_assign(self.config.floating_ip)
        except CloudError as exc:
            log.info("the reserved IP's actions could not be read: %s", exc)
            return None, None
        return (action.started_at, action.completed_at) if action else (None, None)

    def master_since(self, host: str) -> datetime | None:
        """When keepalived on ``host`` last recorded a state (MASTER after a switch), by the host's clock."""
        path = self.plan.vrrp_state_file(host)
        if path is None:
            return None
        try:
            stamp = self.ssh.check(host, f"date -r {quote(path)} +%s.%N", timeout=10).strip()
            return datetime.fromtimestamp(float(stamp), timezone.utc)
        except (SSHError, ValueError):
            return None

    # -- the site ---------------------------------------------------------------------------------

    def marker_of(self, host: str) -> str | None:
        return self.config.new_marker if host == self.config.new else self.config.old_marker

    def serves(self, answer: ProbeResult, target: str) -> bool | None:
        """Whether a probe answer came from ``target``: its marker, or the other server's marker absent.

        None when neither server has a marker, so an answer cannot tell them apart.
        """
        if answer.status != 200:
            return False
        marker = self.marker_of(target)
        if marker:
            return marker in answer.body
        other = self.marker_of(self.config.old if target == self.config.new else self.config.new)
        if other:
            return other not in answer.body
        return None

    def answers(self, url: str, target: str, deadline: float | None = None, timeout: float = 1.0,
                counts: dict[str, int] | None = None) -> Reading:
        """``url`` answering from ``target``, probed every 0.1 s until ``deadline`` (monotonic) if given.

        An answer that cannot be told apart (no markers) counts only when asked once, on the server's own
        address; ``counts`` collects the probes that failed and those answered by the other server.
        """
        last: ProbeResult | None = None
        while True:
            last = probe(url, timeout=timeout)
            shows = self.serves(last, target)
            if shows or (shows is None and deadline is None):
                return Reading("probe", True, f"{url} answers from `{target}`: {last.describe()}", self.clock.now())
            if counts is not None:
                key = "other_answers" if last.answered else "failed_probes"
                counts[key] = counts.get(key, 0) + 1
            if deadline is None or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        marker = self.marker_of(target)
        expected = f" with `{marker}`" if marker else ""
        return Reading("probe", False, f"{url} never answered from `{target}`{expected}; last: {last.describe()}")
