"""The ``[hosts.*]`` tables: where each server is and how to reach it."""

from __future__ import annotations

import re

from bot.plan.checker import NAME, Checker, absolute, did_you_mean, ipv4
from bot.plan.model import Host


INTERFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _metadata(c: Checker, h: dict, key: str) -> dict:
    value = c.string(h, f"{key}.metadata_url", "metadata_url", required=False,
                     expected="the droplet metadata service's http:// URL as the host reaches it")
    if value is None:
        return {}
    if not value.startswith("http://") or any(ch in value for ch in " '\"$`;&|<>"):
        c.error(f"{key}.metadata_url", value, "the droplet metadata service's http:// URL as the host reaches it")
        return {}
    return {"metadata_url": value.rstrip("/")}


DEFAULT_KEEP_RUNS = 10


def ssh_table(c: Checker, data: dict) -> tuple[dict[str, str | int], int]:
    """``[ssh]``: what every host gets unless its own table says otherwise (user, port, key_file, known_hosts),
    and how many finished runs of each stage to keep on a host (``keep_runs``)."""
    t = c.table(data, "ssh", "ssh", required=False)
    if t is None:
        return {}, DEFAULT_KEEP_RUNS
    c.only(t, "ssh.", {"user", "port", "key_file", "known_hosts", "keep_runs"})
    defaults: dict[str, str | int] = {}
    for name, expected in (("user", "a login name"), ("key_file", "a path to a private key"),
                           ("known_hosts", "a path to a known_hosts file")):
        value = c.string(t, f"ssh.{name}", name, required=False, expected=expected)
        if value is not None:
            defaults[name] = value
    port = c.integer(t, "ssh.port", "port", required=False, low=1, high=65535)
    if port is not None:
        defaults["port"] = port
    keep = c.integer(t, "ssh.keep_runs", "keep_runs", required=False, default=DEFAULT_KEEP_RUNS, low=1, high=1000)
    return defaults, keep or DEFAULT_KEEP_RUNS


def hosts(c: Checker, data: dict, defaults: dict[str, str | int] | None = None) -> dict[str, Host]:
    t = c.table(data, "hosts", "hosts")
    if t is None:
        return {}
    defaults = defaults or {}
    hosts: dict[str, Host] = {}
    for name, h in t.items():
        key = f"hosts.{name}"
        if not NAME.match(name):
            c.error(key, name, "a host name of lowercase letters, digits, - or _")
            continue
        if not isinstance(h, dict):
            c.error(key, h, "a table")
            continue
        c.only(h, key + ".", {"address", "user", "port", "key_file", "known_hosts", "jump", "health_file",
                              "vrrp_state_file", "keepalived_conf", "private_address", "track_file", "interface",
                              "metadata_url"})
        h = {**defaults, **h}  # [ssh] fills in what the host's own table leaves out
        address = c.string(h, f"{key}.address", "address", expected="a host name or IP address")
        user = c.string(h, f"{key}.user", "user", expected="a login name (here or in [ssh])")
        port = c.integer(h, f"{key}.port", "port", required=False, default=22, low=1, high=65535)
        key_file = c.string(h, f"{key}.key_file", "key_file", required=False, expected="a path to a private key")
        known = c.string(h, f"{key}.known_hosts", "known_hosts", required=False,
                         expected="a path to a known_hosts file")
        jump = c.string(h, f"{key}.jump", "jump", required=False, expected="the name of another [hosts.*] entry")
        health = c.string(h, f"{key}.health_file", "health_file", required=False, expected="an absolute path")
        if health is not None and not health.startswith("/"):
            c.error(f"{key}.health_file", health, "an absolute path")
        if address and user:
            hosts[name] = Host(name=name, address=address, user=user, port=port or 22,
                               key_file=key_file, known_hosts=known, jump=jump, health_file=health,
                               vrrp_state_file=absolute(c, h, key, "vrrp_state_file"),
                               keepalived_conf=absolute(c, h, key, "keepalived_conf"),
                               track_file=absolute(c, h, key, "track_file"),
                               private_address=ipv4(c, h, "private_address", required=False, table=key),
                               interface=c.string(h, f"{key}.interface", "interface", required=False,
                                                  pattern=INTERFACE, expected="a network interface name (eth1)"),
                               **_metadata(c, h, key))
    for name, h in hosts.items():
        if h.jump is not None and h.jump not in t:
            c.error(f"hosts.{name}.jump", h.jump, "the name of another [hosts.*] entry"
                    + did_you_mean(h.jump, t) + ": " + ", ".join(sorted(t)))
        seen, cur = {name}, h
        while cur.jump is not None and cur.jump in hosts:
            if cur.jump in seen:
                c.error(f"hosts.{name}.jump", h.jump, "a chain of jump hosts without a loop")
                break
            seen.add(cur.jump)
            cur = hosts[cur.jump]
    return hosts
