"""``cutover keepalived``: the keepalived wiring of the two servers, generated from the plan.

For each of the plan's ``old`` and ``new`` servers it writes:

- ``keepalived.conf``: one VRRP instance over unicast between the two
  servers' private addresses, both starting as BACKUP so priority alone
  decides (old above new, so a restored old server takes the address back);
  a check script run every ``interval`` seconds that reads the health file,
  and the track file keepalived watches for the bot's flip. On ``old`` a
  failed check or a flipped track file lowers its priority below new's
  (``step_down``): the new server takes the address while the old one still
  holds it, make-before-break. On ``new`` a failed check is FAULT, so a
  broken new server never takes the address; the old one keeps it;
- ``cutover-check.sh``: that check, reading the plan's health file;
- ``cutover-notify.sh``: keepalived's notify script. It records the VRRP
  state where the plan's ``vrrp_state_file`` says (the preflight reads it),
  and on MASTER asks the DigitalOcean API to assign the reserved IP to this
  droplet (``/v2/reserved_ips``, ``/v2/floating_ips`` where that is not
  found), retrying, with a log line per attempt, until the droplet's own
  metadata says the IP is here.

After a split (the adverts between the servers lost for a while, so that
both became master and the backup assigned the IP to itself), the real
master re-asserts the IP: a master that hears a lower-priority advert runs
the notify script again (``notify_master_rx_lower_pri``), and a master that
steps down for a higher-priority one sends one last advert first
(``higher_prio_send_advert``), so the real master always hears one.

With a private ``vip`` in the plan, keepalived also carries it (the VIP
form). Without one it binds no address at all: on DigitalOcean a reserved IP
is never bound on the droplet (its traffic arrives at the droplet's anchor
address), so VRRP on the private interface decides and the notify script
moves the IP, as DigitalOcean's own keepalived tutorial does.

VRRP runs on the interface holding each host's ``private_address``: the
plan's ``interface`` for the host, or read from the host over SSH
(``--online``); the preflight refuses a configuration whose interface does
not hold it.

The keepalived lab runs exactly these files, so what the tests and the
benchmark measure is what a user installs.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from bot.plan import Plan

INSTALL_DIR = "/etc/keepalived"
TOKEN_FILE = "/etc/keepalived/cutover-digitalocean-token"
NOTIFY_LOG = "/var/log/cutover-notify.log"
DIGITALOCEAN_API = "https://api.digitalocean.com/v2/"
FILES = ("keepalived.conf", "cutover-check.sh", "cutover-notify.sh")


@dataclass(frozen=True)
class KeepalivedTiming:
    """The knobs that decide how fast keepalived notices the flip and moves the VIP."""

    interval: int = 1  # keepalived 2.2 runs a check script every whole number of seconds
    fall: int = 1
    rise: int = 2
    advert_int: float = 0.2
    priorities: tuple[int, int] = (254, 253)  # old, new
    # On old, what a failed check and a flipped track file each take off its priority; 0: FAULT instead.
    step_down: int = 2

    def label(self) -> str:
        return (f"interval {self.interval}, fall {self.fall}, rise {self.rise}, advert_int {self.advert_int:g}, "
                f"priority {self.priorities[0]}/{self.priorities[1]}, "
                + (f"a flip lowers old by {self.step_down}" if self.step_down else "a flip puts old in FAULT"))

    def weight(self, role: str) -> int:
        """keepalived's weight for ``role``'s check and track file: 0 (FAULT) on new, minus ``step_down`` on old."""
        return -self.step_down if role == "old" else 0

    def priority(self, role: str) -> int:
        return self.priorities[0] if role == "old" else self.priorities[1]


# DigitalOcean's tutorial: a check every 2 s, two failures to act, adverts once a second, priorities 200/100, and
# a failed check is FAULT.
TUTORIAL = KeepalivedTiming(interval=2, fall=2, rise=2, advert_int=1, priorities=(200, 100), step_down=0)
# What `cutover keepalived` writes: one failed check is a deliberate flip, so act on it; two good checks before
# taking the address back. Old above new, so old holds the address while both are healthy and takes it back when
# restored. The flip lowers old's priority below new's instead of putting it in FAULT: old keeps the address and
# its connections until new, after its master-down interval (3 adverts and its skew: 0.4-0.6 s with adverts every
# 0.2 s, VRRPv3), takes the address and tells old, which lets it go. With FAULT, old drops the address at once
# and nobody holds it until new's skew time has passed and its gratuitous ARP has reached the clients (~30 ms
# measured); requests sent then are lost.
RECOMMENDED = KeepalivedTiming(interval=1, fall=1, rise=2, advert_int=0.2, priorities=(254, 253), step_down=2)
# What `cutover keepalived` wrote before: the same timing, a flip puts old in FAULT (break-before-make). Both
# priorities high: the backup takes over after its skew time, (256 - priority) / 256 of an advert interval: 2 ms
# at 253 with 0.2 s adverts, where 100 would wait 122 ms with nobody holding the VIP.
FAULT_ON_FLIP = KeepalivedTiming(interval=1, fall=1, rise=2, advert_int=0.2, priorities=(254, 253), step_down=0)


class WiringError(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class Options:
    install_dir: str = INSTALL_DIR
    timing: KeepalivedTiming = RECOMMENDED
    digitalocean_api: str = DIGITALOCEAN_API
    token_file: str = TOKEN_FILE
    notify_log: str = NOTIFY_LOG
    virtual_router_id: int = 51
    script_security: bool = True  # keepalived refuses scripts a non-root user could change
    interfaces: dict[str, str] | None = None  # host -> the interface holding its private address, read online
    reassert: bool = True  # a real master re-asserts the reserved IP after a split (see the module's notes)


def generate(plan: Plan, options: Options = Options()) -> dict[str, dict[str, str]]:
    """For ``old`` and ``new`` (the plan's roles): file name → content. WiringError names what the plan lacks."""
    failover, droplets = plan.failover, plan.digitalocean
    errors = []
    if failover is None or droplets is None:
        raise WiringError([f"{plan.path}: `cutover keepalived` needs the plan's [failover] and [digitalocean] tables"])
    hosts = {"old": failover.old, "new": failover.new}
    for role, host in hosts.items():
        if not plan.hosts[host].private_address:
            errors.append(f"{plan.path}: hosts.{host}.private_address: expected the address keepalived speaks VRRP "
                          f"on for `{host}` (on DigitalOcean, the droplet's VPC address)")
        elif not interface_for(plan, host, options):
            errors.append(f"{plan.path}: hosts.{host}.interface: missing; expected the network interface that holds "
                          f"`{host}`'s private address {plan.hosts[host].private_address} (on a droplet, the VPC "
                          "interface, usually eth1), or run `cutover keepalived --online` to read it from the host")
    if errors:
        raise WiringError(errors)
    out = {}
    for role, host in hosts.items():
        peer = hosts["new" if role == "old" else "old"]
        droplet = droplets.old_droplet if role == "old" else droplets.new_droplet
        d = options.install_dir.rstrip("/")
        state_file = plan.vrrp_state_file(host) or f"{d}/cutover-vrrp-state"
        out[role] = {
            "keepalived.conf": _conf(plan, role, host, peer, options),
            "cutover-check.sh": _check(plan, role, host),
            "cutover-notify.sh": _notify(role, host, state_file, failover.floating_ip, droplet,
                                         plan.hosts[host].metadata_url, options),
        }
    return out


def read_interfaces(plan: Plan) -> dict[str, str]:
    """Each server's interface holding its private address, read over SSH (``ip -o -4 addr show``); WiringError
    names each server that could not be asked or has no interface with it."""
    from bot.ssh import SSHError, SSHPool
    from bot.switch.witnesses import interface_of

    assert plan.failover is not None
    found, errors = {}, []
    pool = SSHPool(plan.hosts)
    try:
        for host in (plan.failover.old, plan.failover.new):
            private = plan.hosts[host].private_address
            if not private:
                continue  # generate() says what is missing
            try:
                lines = pool.check(host, "ip -o -4 addr show", timeout=15).splitlines()
            except SSHError as exc:
                errors.append(f"{plan.path}: hosts.{host}: cannot read its interfaces over SSH: {exc}")
                continue
            interface = interface_of(lines, private)
            if interface is None:
                errors.append(f"{plan.path}: hosts.{host}.private_address: {private} is on no interface of "
                              f"`{host}` (it has: {', '.join(sorted({ln.split()[1] for ln in lines if ln.split()}))})")
            else:
                found[host] = interface
    finally:
        pool.close()
    if errors:
        raise WiringError(errors)
    return found


def write(plan: Plan, out_dir: Path, options: Options = Options()) -> list[Path]:
    """The generated files under ``out_dir/old`` and ``out_dir/new``; the scripts executable."""
    written = []
    for role, files in generate(plan, options).items():
        (out_dir / role).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            path = out_dir / role / name
            path.write_text(content)
            path.chmod(0o755 if name.endswith(".sh") else 0o644)
            written.append(path)
    return written


def interface_for(plan: Plan, host: str, o: Options) -> str | None:
    """The interface keepalived speaks VRRP on for ``host``: read from the host (``--online``), else the plan's."""
    return (o.interfaces or {}).get(host) or plan.interface(host)


def _conf(plan: Plan, role: str, host: str, peer: str, o: Options) -> str:
    assert plan.failover is not None
    t = o.timing
    d = o.install_dir.rstrip("/")
    interface = interface_for(plan, host, o)
    advert = t.advert_int
    if plan.failover.vip is None:
        # VRRPv3 requires an address to carry; VRRPv2 does not, but advertises in whole seconds only. The new
        # server then takes over ~3 s after the flip instead of ~0.6 s: DigitalOcean's assignment takes longer.
        advert = max(1.0, float(math.ceil(advert)))
        version = "    version 2  # no address to carry: VRRPv3 would require one (adverts in whole seconds)\n"
    else:
        version = "    version 3  # sub-second adverts need VRRPv3\n" if advert < 1 else ""
    track = plan.track_file(host)
    flip = (f"anything but 0 lowers this server's priority by {-t.weight(role)}" if t.weight(role)
            else "anything but 0 is FAULT, at once")
    track_def = f"""
vrrp_track_file cutover_flip {{
    file "{track}"
    weight {t.weight(role)}  # {flip}; keepalived watches the file (inotify), no polling
    init_file 0  # created with 0 if missing; never overwritten at start, so a flip survives a restart
}}
""" if track else ""
    track_use = "    track_file {\n        cutover_flip\n    }\n" if track else ""
    security = "    enable_script_security\n" if o.script_security else ""
    check = ("failed, it lowers the priority below the peer's: the peer takes the address before this one lets "
             "it go" if t.weight(role) else "failed, it is FAULT: this server never holds the address")
    vip = plan.failover.vip
    addresses = (f"    virtual_ipaddress {{\n        {vip}/32 dev {interface}\n    }}\n" if vip else
                 "    # No address to carry: a reserved IP is never bound on a droplet; the notify script assigns it.\n")
    reassert = (f"""    # After a split (both servers master for a while), the real master takes the reserved IP back: a master
    # that hears a lower-priority advert runs the notify script again, and one that steps down sends a last advert.
    notify_master_rx_lower_pri "{d}/cutover-notify.sh INSTANCE cutover MASTER_RX_LOWER_PRI {t.priority(role)}"
    higher_prio_send_advert true
""" if o.reassert else "")
    return f"""# keepalived for `{host}` ({role}), generated by `cutover keepalived` from {plan.path}.
# Regenerate rather than edit: the bot's preflight checks that this wiring reads the plan's health file.
global_defs {{
    router_id cutover_{role}
    script_user root
{security}    vrrp_garp_master_delay 1  # a second round of gratuitous ARP 1 s after taking the address
    vrrp_garp_master_refresh 5
}}

vrrp_script cutover_health {{
    script "{d}/cutover-check.sh"  # reads {plan.health_file(host)}
    interval {t.interval}
    timeout 2
    weight {t.weight(role)}  # {check}
    fall {t.fall}  # a failed check is the bot's deliberate flip: act on the first
    rise {t.rise}  # a restored server takes the address back after this many good checks
}}
{track_def}
vrrp_instance cutover {{
{version}    state BACKUP  # both start as BACKUP: priority alone decides, so a restart never grabs the address
    interface {interface}
    virtual_router_id {o.virtual_router_id}
    priority {t.priority(role)}
    advert_int {advert:g}
    unicast_src_ip {plan.hosts[host].private_address}
    unicast_peer {{
        {plan.hosts[peer].private_address}
    }}
{addresses}    track_script {{
        cutover_health
    }}
{track_use}    notify "{d}/cutover-notify.sh"
{reassert}}}
"""


def _check(plan: Plan, role: str, host: str) -> str:
    assert plan.failover is not None
    path = plan.health_file(host)
    return f"""#!/bin/sh
# keepalived's check for `{host}` ({role}), generated by `cutover keepalived`: healthy while the health file the
# site's health page reads holds `{plan.failover.healthy}`. The bot flips by writing `{plan.failover.unhealthy}` there.
[ "$(cat {shlex.quote(path)} 2>/dev/null)" = {shlex.quote(plan.failover.healthy)} ]
"""


def _notify(role: str, host: str, state_file: str, ip: str, droplet: int, metadata: str, o: Options) -> str:
    api = o.digitalocean_api.rstrip("/")
    q = shlex.quote
    return f"""#!/bin/sh
# keepalived's notify script for `{host}` ({role}), generated by `cutover keepalived`.
# keepalived calls it as: cutover-notify.sh TYPE NAME STATE PRIORITY
# 1. It records the VRRP state in {state_file} (the bot's preflight reads it).
# 2. On MASTER it asks DigitalOcean to assign reserved IP {ip} to this droplet ({droplet}): public traffic follows
#    that assignment. It retries for a while, stops once this droplet's metadata says the IP is here or this
#    server is no longer MASTER, and logs each attempt to {o.notify_log} and syslog. The token is read from
#    {o.token_file} (root only, mode 0600).
# 3. As MASTER_RX_LOWER_PRI (keepalived's notify_master_rx_lower_pri: a master heard a lower-priority advert, so
#    the peer was master too, after a split) it does the same without recording a state: it takes the IP back.
STATE="$3"
STATE_FILE={q(state_file)}
LOG={q(o.notify_log)}
METADATA={q(metadata + "/floating_ip/ipv4/active")}
log() {{
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) cutover-notify {role}: $*" >> "$LOG"
    logger -t cutover-notify "$*" 2>/dev/null || true
}}
case "$STATE" in
    MASTER_RX_LOWER_PRI)
        log "a lower-priority advert while MASTER: the peer was master too; asserting {ip} here again"
        STATE=MASTER ;;
    *) printf '%s\\n' "$STATE" > "$STATE_FILE.tmp" && mv "$STATE_FILE.tmp" "$STATE_FILE" ;;
esac
[ "$STATE" = MASTER ] || exit 0

token=$(cat {q(o.token_file)} 2>/dev/null) || {{ log "cannot read the DigitalOcean token in {o.token_file}"; exit 1; }}
(
    attempt=0
    while [ "$attempt" -lt 30 ]; do
        attempt=$((attempt + 1))
        if [ "$(cat "$STATE_FILE" 2>/dev/null)" != MASTER ]; then
            log "no longer MASTER: not assigning {ip}"
            exit 0
        fi
        if [ "$(curl -fsS --max-time 2 "$METADATA" 2>/dev/null)" = true ]; then
            [ "$attempt" -gt 1 ] && log "{ip} is active on this droplet (its metadata says so)"
            exit 0
        fi
        for kind in reserved_ips floating_ips; do
            code=$(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST \\
                -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \\
                -d '{{"type": "assign", "droplet_id": {droplet}}}' "{api}/$kind/{ip}/actions" 2>/dev/null) || code=000
            [ "$code" = 404 ] && [ "$kind" = reserved_ips ] || break  # floating_ips: an API from before the rename
        done
        log "assign {ip} to droplet {droplet} ($kind): attempt $attempt: HTTP $code"
        case "$code" in
            2??) exit 0 ;;
            000|429|5??) sleep 1 ;;
            422) sleep 1 ;;  # the IP is locked by an action in progress (perhaps this very assignment): look again
            *) log "DigitalOcean refused the assignment (HTTP $code): not retrying"; exit 1 ;;
        esac
    done
    log "gave up assigning {ip} after $attempt attempts"
    exit 1
) </dev/null >/dev/null 2>&1 &
exit 0
"""


def install_steps(plan: Plan, out: Path, options: Options) -> str:
    """What to run on each server, as root, to install the wiring: the files the bot writes over SSH made first,
    owned by the host's user, and old started before new so that old is MASTER from the start."""
    quote = shlex.quote
    assert plan.failover is not None
    install_dir = options.install_dir
    lines = ["", "On each server, as root, from its folder (keepalived 2.2 or later, and curl). Old first: started "
                 "alone it becomes MASTER; new, started after, stays BACKUP."]
    for role, host in (("old", plan.failover.old), ("new", plan.failover.new)):
        user = plan.hosts[host].user
        health, track = plan.health_file(host), plan.track_file(host)
        state = plan.vrrp_state_file(host) or f"{install_dir.rstrip('/')}/cutover-vrrp-state"
        lines += ["", f"`{host}` ({role}), from {out / role}:",
                  "  install -m 0644 keepalived.conf /etc/keepalived/keepalived.conf",
                  f"  install -m 0755 cutover-check.sh cutover-notify.sh {install_dir.rstrip('/')}/",
                  f"  install -m 0600 /dev/stdin {options.token_file}   # paste a DigitalOcean token "
                  "that may assign reserved IPs",
                  f"  # the health file: replaced by the bot as `{user}` over SSH (a new file renamed over it, so "
                  "its folder too is that user's), read by the check script",
                  f"  install -d -m 0755 -o {quote(user)} {quote(str(Path(health).parent))} && "
                  f"echo {quote(plan.failover.healthy)} > {quote(health)} && chown {quote(user)} {quote(health)}"]
        if track:
            lines += [f"  # the track file: replaced by the bot as `{user}` the same way, watched by keepalived",
                      f"  install -d -m 0755 -o {quote(user)} {quote(str(Path(track).parent))} && "
                      f"echo 0 > {quote(track)} && chown {quote(user)} {quote(track)}"]
        lines += [f"  # the VRRP state: written by the notify script (root), read by the bot as `{user}`: its folder "
                  "must let that user in",
                  f"  install -d -m 0755 {quote(str(Path(state).parent))}",
                  "  systemctl enable keepalived && systemctl restart keepalived"
                  + ("   # and wait until it is MASTER" if role == "old" else "")]
    lines += ["", "Then `/cutover check` verifies the wiring over SSH on both servers; docs/keepalived.md explains "
                  "the files."]
    return "\n".join(lines)
