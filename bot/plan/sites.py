"""The ``[sites]`` table: every hostname of the site, and where the probes connect to reach it on each path."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from bot.plan.checker import MISSING, Checker, did_you_mean
from bot.plan.model import PATHS, FailoverPlan, Host, Site, SitesPlan

HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
HOSTNAME_EXPECTED = "a hostname such as fr.example.org (lowercase letters, digits, - and dots)"
ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.-]+)(:(?P<port>\d{1,5}))?$")


def is_hostname(value: str) -> bool:
    return HOSTNAME.match(value) is not None


def sites(c: Checker, data: dict, hosts: dict[str, Host], switch: FailoverPlan | None) -> SitesPlan:
    t = c.table(data, "sites", "sites", required=False)
    if t is None:
        return SitesPlan()
    c.only(t, "sites.", {"names", "list_command", "list_host", "scheme", "path", "ca_file", "cert_min_days",
                         "default_marker", "connect", "timeout"})
    scheme = c.string(t, "sites.scheme", "scheme", required=False, expected='"https" or "http"') or "https"
    if scheme not in ("https", "http"):
        c.error("sites.scheme", scheme, '"https" or "http"')
        scheme = "https"
    default_path = urlparse(switch.probe_url).path or "/" if switch else "/"
    path = c.string(t, "sites.path", "path", required=False, expected="a path starting with /") or default_path
    if not path.startswith("/"):
        c.error("sites.path", path, "a path starting with /")
    listed = _names(c, t, path)
    list_command = c.string(t, "sites.list_command", "list_command", required=False,
                            expected="a command that prints the site's hostnames, one per line")
    list_host = c.string(t, "sites.list_host", "list_host", required=False,
                         expected="the name of a [hosts.*] entry")
    if list_host is not None and list_host not in hosts:
        c.error("sites.list_host", list_host, "the name of a [hosts.*] entry" + did_you_mean(list_host, hosts)
                + ": " + ", ".join(sorted(hosts)))
    if list_command is not None and list_host is None:
        if switch is None:
            c.error("sites.list_host", MISSING, "the host the list command runs on (no [failover] to default to)")
        else:
            list_host = switch.new
    if not listed and list_command is None:
        c.error("sites.names", MISSING, "a list of the site's hostnames, or `list_command` that prints them")
    ca_file = c.string(t, "sites.ca_file", "ca_file", required=False,
                       expected="the path of a PEM file of the CA certificates that sign the site's certificates")
    min_days = c.integer(t, "sites.cert_min_days", "cert_min_days", required=False, default=7, low=0, high=365)
    default_marker = c.string(t, "sites.default_marker", "default_marker", required=False,
                              expected="text that only the default site's answer contains")
    timeout = c.duration(t, "sites.timeout", "timeout", required=False)
    port = 443 if scheme == "https" else 80
    connect = _connect(c, t, port)
    if switch is not None:
        for role, host in (("old", switch.old), ("new", switch.new)):
            if role not in connect and host in hosts:
                connect[role] = (hosts[host].address, port)
        connect.setdefault("reserved_ip", (switch.floating_ip, port))
    kwargs = {"timeout": timeout} if timeout else {}
    return SitesPlan(sites=listed, list_command=list_command, list_host=list_host, scheme=scheme, path=path,
                     ca_file=ca_file, cert_min_days=min_days if min_days is not None else 7,
                     default_marker=default_marker, connect=connect, **kwargs)


def _names(c: Checker, t: dict, path: str) -> tuple[Site, ...]:
    value = t.get("names", MISSING)
    if value is MISSING:
        return ()
    expected = f"a list of hostnames, or tables {{ name = …, path = …, marker = … }}; {HOSTNAME_EXPECTED}"
    if not isinstance(value, list):
        c.error("sites.names", value, expected)
        return ()
    out: list[Site] = []
    for i, item in enumerate(value):
        key = f"sites.names[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            c.error(key, item, expected)
            continue
        c.only(item, key + ".", {"name", "path", "marker"})
        name = c.string(item, f"{key}.name", "name", expected=HOSTNAME_EXPECTED)
        if name is not None and not is_hostname(name):
            c.error(f"{key}.name", name, HOSTNAME_EXPECTED)
            continue
        own = c.string(item, f"{key}.path", "path", required=False, expected="a path starting with /")
        if own is not None and not own.startswith("/"):
            c.error(f"{key}.path", own, "a path starting with /")
        marker = c.string(item, f"{key}.marker", "marker", required=False,
                          expected="text that this site's answer contains")
        if name is None:
            continue
        if any(s.name == name for s in out):
            c.error(key, name, "each hostname once")
            continue
        out.append(Site(name, own or path, marker))
    return tuple(out)


def _connect(c: Checker, t: dict, port: int) -> dict[str, tuple[str, int]]:
    table = c.table(t, "sites.connect", "connect", required=False)
    if table is None:
        return {}
    c.only(table, "sites.connect.", set(PATHS))
    out = {}
    for path, value in table.items():
        if path not in PATHS:
            continue
        match = ADDRESS.match(value) if isinstance(value, str) else None
        if match is None or (match["port"] and not 0 < int(match["port"]) < 65536):
            c.error(f"sites.connect.{path}", value, "ADDRESS or ADDRESS:PORT, where the probes of this path connect")
            continue
        out[path] = (match["host"], int(match["port"]) if match["port"] else port)
    return out
