"""The ``[failover]`` and ``[digitalocean]`` tables: the switch, its witnesses and the droplets."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

from bot.plan.checker import Checker, absolute, did_you_mean, ipv4, url
from bot.plan.model import DigitalOcean, FailoverPlan, Host

DEFAULT_VRRP_STATE_FILE = "/etc/keepalived/cutover-vrrp-state"  # where the generated notify script writes it


def failover(c: Checker, data: dict, hosts: dict[str, Host]) -> FailoverPlan | None:
    t = c.table(data, "failover", "failover", required=False)
    if t is None:
        return None
    c.only(t, "failover.", {"floating_ip", "vip", "old", "new", "health_file", "healthy", "unhealthy",
                            "probe_url", "new_probe_url", "old_probe_url", "new_marker", "old_marker",
                            "verify_timeout", "interface", "require_freezes", "rollback_approvals",
                            "vrrp_state_file", "keepalived_conf", "track_file"})
    ip = ipv4(c, t, "floating_ip", required=True)
    vip = ipv4(c, t, "vip", required=False)
    names = ", ".join(sorted(data.get("hosts") or {}))
    old = c.string(t, "failover.old", "old", expected="the name of a [hosts.*] entry")
    new = c.string(t, "failover.new", "new", expected="the name of a [hosts.*] entry")
    for k, v in (("old", old), ("new", new)):
        if v is not None and v not in (data.get("hosts") or {}):
            c.error(f"failover.{k}", v, "the name of a [hosts.*] entry"
                    + did_you_mean(v, data.get("hosts") or {}) + ": " + names)
    if old is not None and old == new:
        c.error("failover.new", new, "a different host from failover.old")
    health_file = c.string(t, "failover.health_file", "health_file", expected="an absolute path")
    if health_file is not None and not health_file.startswith("/"):
        c.error("failover.health_file", health_file, "an absolute path")
    healthy = c.string(t, "failover.healthy", "healthy", required=False)
    unhealthy = c.string(t, "failover.unhealthy", "unhealthy", required=False)
    if (healthy or "true") == (unhealthy or "false"):
        c.error("failover.unhealthy", unhealthy, "a value different from failover.healthy")
    probe = url(c, t, "probe_url", required=True)
    new_probe = url(c, t, "new_probe_url", required=False)
    old_probe = url(c, t, "old_probe_url", required=False)
    marker = c.string(t, "failover.new_marker", "new_marker",
                      expected="text that only the new server's probe answer contains")
    old_marker = c.string(t, "failover.old_marker", "old_marker", required=False)
    verify = c.duration(t, "failover.verify_timeout", "verify_timeout", required=False)
    interface = c.string(t, "failover.interface", "interface", required=False, expected="a network interface name")
    require = c.string_list(t, "failover.require_freezes", "require_freezes", required=False,
                            expected="a list of freeze kinds")
    rollback = c.integer(t, "failover.rollback_approvals", "rollback_approvals", required=False, default=1,
                         low=0, high=10)
    vrrp_state = absolute(c, t, "failover", "vrrp_state_file")
    keepalived_conf = absolute(c, t, "failover", "keepalived_conf")
    track_file = absolute(c, t, "failover", "track_file")
    if None in (ip, old, new, health_file, probe, marker) or old not in hosts or new not in hosts:
        return None
    return FailoverPlan(floating_ip=ip, old=old, new=new, health_file=health_file, healthy=healthy or "true",
                    unhealthy=unhealthy or "false", probe_url=probe, new_marker=marker,
                    verify_timeout=verify or timedelta(seconds=60), old_marker=old_marker,
                    interface=interface, require_freezes=require, rollback_approvals=rollback,
                    vip=vip, new_probe_url=new_probe or _on_host(probe, hosts[new].address),
                    old_probe_url=old_probe or _on_host(probe, hosts[old].address),
                    # Without a VIP, keepalived's move is seen in the state its notify script records (where the
                    # generated one writes it unless the plan says).
                    vrrp_state_file=vrrp_state or (None if vip else DEFAULT_VRRP_STATE_FILE),
                    keepalived_conf=keepalived_conf or FailoverPlan.keepalived_conf, track_file=track_file)


def _on_host(url: str, address: str) -> str:
    """The probe URL aimed at one server's own address instead of the floating IP."""
    parsed = urlparse(url)
    netloc = address + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


def digitalocean(c: Checker, data: dict) -> DigitalOcean | None:
    t = c.table(data, "digitalocean", "digitalocean", required=False)
    if t is None:
        return None
    c.only(t, "digitalocean.", {"old_droplet", "new_droplet", "metadata"})
    old = c.integer(t, "digitalocean.old_droplet", "old_droplet", low=1)
    new = c.integer(t, "digitalocean.new_droplet", "new_droplet", low=1)
    if old is not None and old == new:
        c.error("digitalocean.new_droplet", new, "a different droplet from digitalocean.old_droplet")
    metadata = t.get("metadata", True)
    if not isinstance(metadata, bool):
        c.error("digitalocean.metadata", metadata, "true (ask each droplet's metadata service over SSH) or false")
        metadata = True
    if old is None or new is None:
        return None
    return DigitalOcean(old_droplet=old, new_droplet=new, metadata=metadata)
