"""What a go-live (or a rollback) would find right now, each item with ✅/❌ and its detail."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from bot.cloud import CloudError
from bot.probes import probe
from bot.ssh import SSHError

if TYPE_CHECKING:
    from bot.failover import Failover
    from bot.services import Services


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    blocking: bool = True


@dataclass
class Preflight:
    purpose: str
    at: datetime
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.blocking)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.blocking and not c.ok]

    def to_json(self) -> dict:
        return {"purpose": self.purpose, "at": self.at.isoformat(), "checks": [asdict(c) for c in self.checks]}


def run_preflight(services: "Services", failover: "Failover", purpose: str = "golive",
                  ignore_request: int | None = None) -> Preflight:
    """Ask the servers, the probe URLs and DigitalOcean; in parallel, each with its own timeout."""
    cfg = failover.config
    current, target = (cfg.old, cfg.new) if purpose == "golive" else (cfg.new, cfg.old)
    checks: list[Callable[[], Check]] = [
        lambda: _ssh(services, cfg.old), lambda: _ssh(services, cfg.new),
    ]
    if purpose == "golive":
        checks += [lambda: _health(services, failover, cfg.old), lambda: _health(services, failover, cfg.new),
                   lambda: _answers(cfg.new_probe_url, cfg.new, cfg.new_marker)]
    else:
        checks += [lambda: _backup(failover),
                   lambda: _answers(cfg.old_probe_url, cfg.old, cfg.old_marker, blocking=False)]
    checks += [lambda: _vip(failover, current, blocking=purpose == "golive"),
               lambda: _cloud(services, failover, current, blocking=purpose == "golive")]
    if purpose == "golive":
        checks += [lambda: _stages(services), lambda: _freezes(services)]
    checks.append(lambda: _no_other_request(services, ignore_request))
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="preflight") as pool:
        results = list(pool.map(lambda fn: fn(), checks))
    return Preflight(purpose, services.clock.now(), results)


def _ssh(services: "Services", host: str) -> Check:
    try:
        name = services.ssh.check(host, "hostname", timeout=10).strip()
        return Check(f"ssh {host}", True, f"SSH to `{host}` works (hostname `{name}`)")
    except SSHError as exc:
        return Check(f"ssh {host}", False, str(exc))


def _health(services: "Services", failover: "Failover", host: str) -> Check:
    cfg = failover.config
    path = services.plan.health_file(host)
    try:
        value = failover.health(host)
    except SSHError as exc:
        return Check(f"health {host}", False, f"cannot read `{path}` on `{host}`: {exc}")
    if value == cfg.healthy:
        return Check(f"health {host}", True, f"`{path}` on `{host}` holds `{cfg.healthy}`")
    shown = "is missing" if value is None else f"holds `{value[:40]}`"
    return Check(f"health {host}", False, f"`{path}` on `{host}` {shown}, expected `{cfg.healthy}`")


def _answers(url: str, host: str, marker: str | None, blocking: bool = True) -> Check:
    result = probe(url, timeout=3.0)
    ok = result.status == 200 and (marker is None or marker in result.body)
    expected = f" with `{marker}`" if marker else ""
    detail = f"`{host}` answers on its own address ({url}): {result.describe()}"
    if not ok:
        detail = f"`{host}` does not answer healthy{expected} on its own address ({url}): {result.describe()}"
    return Check(f"answers {host}", ok, detail, blocking)


def _vip(failover: "Failover", expected: str, blocking: bool) -> Check:
    holders, errors = failover.vip_holders()
    vip = failover.config.vip
    if holders == [expected]:
        return Check("vip", True, f"keepalived holds VIP {vip} on `{expected}`", blocking)
    where = " and ".join(f"`{h}`" for h in holders) if holders else "neither server"
    extra = f" ({'; '.join(errors)})" if errors else ""
    return Check("vip", False, f"VIP {vip} is on {where}, expected `{expected}`{extra}", blocking)


def _cloud(services: "Services", failover: "Failover", expected: str, blocking: bool) -> Check:
    ip = failover.config.floating_ip
    droplet = failover.droplet_of(expected)
    for delay in (0.5, 1.0, None):
        try:
            holder = failover.cloud.holder(ip)
            break
        except CloudError as exc:
            if not exc.retryable or delay is None:
                return Check("digitalocean", False, str(exc), blocking)
            time.sleep(delay)
    if holder == droplet:
        return Check("digitalocean", True, f"DigitalOcean has {ip} on droplet {droplet} (`{expected}`)", blocking)
    return Check("digitalocean", False, f"DigitalOcean has {ip} on {'droplet ' + str(holder) if holder else 'no droplet'}"
                 f", expected {droplet} (`{expected}`)", blocking)


def _stages(services: "Services") -> Check:
    runs = services.store.latest_runs()
    missing = [s.name for s in services.plan.stages if s.required and (runs.get(s.name) or {}).get("state") != "succeeded"]
    if not missing:
        return Check("stages", True, "every required stage has succeeded")
    return Check("stages", False, "not yet succeeded: " + ", ".join(f"`{m}`" for m in missing))


def _freezes(services: "Services") -> Check:
    required = services.plan.failover.require_freezes if services.plan.failover else ()
    if not required:
        return Check("freezes", True, "the plan requires no freeze")
    active = {f["kind"] for f in services.store.current_freezes() if f["state"] == "active"}
    missing = [k for k in required if k not in active]
    if not missing:
        return Check("freezes", True, "in effect: " + ", ".join(f"`{k}`" for k in required))
    return Check("freezes", False, "not in effect: " + ", ".join(f"`{k}`" for k in missing))


def _backup(failover: "Failover") -> Check:
    saved = failover.backup()
    if saved is None:
        return Check("backup", False, "no health file content was recorded by a go-live; nothing to restore")
    return Check("backup", True, f"will restore `{saved['path']}` on `{saved['host']}` to "
                                 f"`{saved['content'].strip()[:40]}`")


def _no_other_request(services: "Services", ignore: int | None) -> Check:
    others = [r for r in services.store.open_requests() if r["id"] != ignore]
    if not others:
        return Check("requests", True, "no other request is open")
    r = others[0]
    return Check("requests", False, f"{r['kind']} request #{r['id']} by <@{r['requested_by']}> is still open")
