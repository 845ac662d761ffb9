"""The switch itself: who holds the VIP, flipping the old server's health file, and proving the move.

Flipping writes the unhealthy value to the old server's health file with a
temp file and a rename (over SFTP), after recording what was there so that a
rollback restores exactly that. Verification asks three independent
witnesses: the probe URL, keepalived's address on the interfaces, and
DigitalOcean's assignment of the floating IP.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from bot.cloud import Cloud, CloudError
from bot.probes import probe
from bot.ssh import SSHError, quote

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger("cutover.failover")


@dataclass
class Witness:
    name: str
    ok: bool
    detail: str
    at: datetime | None = None


@dataclass
class Verification:
    target: str
    witnesses: list[Witness] = field(default_factory=list)
    first_answer_at: datetime | None = None
    cloud_confirmed_at: datetime | None = None
    failed_probes: int = 0
    other_answers: int = 0
    cloud_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.witnesses) and all(w.ok for w in self.witnesses)

    @property
    def failed(self) -> list[Witness]:
        return [w for w in self.witnesses if not w.ok]


class Failover:
    def __init__(self, services: "Services", cloud: Cloud) -> None:
        self.services = services
        self.cloud = cloud
        assert services.plan.failover is not None
        self.config = services.plan.failover

    # -- reading the world ------------------------------------------------------------------

    def health(self, host: str) -> str | None:
        raw = self.services.ssh.read_file(host, self.services.plan.health_file(host))
        return None if raw is None else raw.decode("utf-8", "replace").strip()

    def vip_on(self, host: str) -> bool:
        dev = f" dev {quote(self.config.interface)}" if self.config.interface else ""
        out = self.services.ssh.check(host, f"ip -o -4 addr show{dev}", timeout=10)
        return any(f" {self.config.vip}/" in line for line in out.splitlines())

    def vip_holders(self) -> tuple[list[str], list[str]]:
        """(hosts with the VIP, errors) — errors name the host that could not be asked."""
        holders, errors = [], []
        for host in (self.config.old, self.config.new):
            try:
                if self.vip_on(host):
                    holders.append(host)
            except SSHError as exc:
                errors.append(str(exc))
        return holders, errors

    def droplet_of(self, host: str) -> int:
        do = self.services.plan.digitalocean
        assert do is not None
        return do.old_droplet if host == self.config.old else do.new_droplet

    # -- changing it -----------------------------------------------------------------------------

    def flip(self, request_id: int) -> None:
        """Record the old server's health file, then write the unhealthy value over it atomically."""
        host = self.config.old
        path = self.services.plan.health_file(host)
        previous = self.services.ssh.read_file(host, path)
        if previous is None:
            raise SSHError(f"`{path}` does not exist on `{host}`")
        with self.services.store.transaction() as db:
            db["health_backups"].insert({"request_id": request_id, "host": host, "path": path,
                                         "content": previous.decode("utf-8", "replace"),
                                         "saved_at": self.services.clock.now().isoformat()})
        self.services.ssh.write_file_atomic(host, path, (self.config.unhealthy + "\n").encode())
        if self.health(host) != self.config.unhealthy:
            raise SSHError(f"`{path}` on `{host}` does not read `{self.config.unhealthy}` after writing it")

    def backup(self) -> dict | None:
        rows = self.services.store.query("SELECT * FROM health_backups ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None

    def restore(self) -> dict:
        """Put back the health file content recorded before the last flip."""
        saved = self.backup()
        if saved is None:
            raise SSHError("no health file content was recorded before a flip, so there is nothing to restore")
        self.services.ssh.write_file_atomic(saved["host"], saved["path"], saved["content"].encode())
        return saved

    # -- proving it -----------------------------------------------------------------------------------

    def verify(self, target: str, timeout: float, report: Callable[[Witness], None]) -> Verification:
        """Wait, within ``timeout`` seconds, for all three witnesses to agree that ``target`` serves."""
        deadline = time.monotonic() + timeout
        result = Verification(target)
        marker = self.config.new_marker if target == self.config.new else self.config.old_marker
        other = self.config.old_marker if target == self.config.new else self.config.new_marker

        def shows_target(body: str) -> bool:
            if marker:
                return marker in body
            return other is not None and other not in body

        witness = Witness("probe", False, "")
        last = None
        while time.monotonic() < deadline:
            last = probe(self.config.probe_url, timeout=1.0)
            if last.status == 200 and shows_target(last.body):
                result.first_answer_at = self.services.clock.now()
                witness = Witness("probe", True, f"{self.config.probe_url} answers from `{target}`: "
                                  f"{last.describe()}", result.first_answer_at)
                break
            if last.answered:
                result.other_answers += 1
            else:
                result.failed_probes += 1
            time.sleep(0.1)
        if not witness.ok:
            witness.detail = (f"{self.config.probe_url} never answered from `{target}` within {timeout:.0f}s; "
                              f"last: {last.describe() if last else 'not probed'}")
        result.witnesses.append(witness)
        report(witness)

        witness = Witness("keepalived", False, "")
        holders: list[str] = []
        errors: list[str] = []
        while True:
            holders, errors = self.vip_holders()
            if holders == [target]:
                witness = Witness("keepalived", True, f"VIP {self.config.vip} is on `{target}` only",
                                  self.services.clock.now())
                break
            if time.monotonic() >= deadline:
                where = " and ".join(f"`{h}`" for h in holders) if holders else "neither server"
                witness.detail = f"VIP {self.config.vip} is on {where}, not on `{target}` alone" + (
                    f" ({'; '.join(errors)})" if errors else "")
                break
            time.sleep(0.3)
        result.witnesses.append(witness)
        report(witness)

        droplet = self.droplet_of(target)
        witness = Witness("digitalocean", False, "")
        holder: int | None = None
        answered = False
        delay = 0.5
        while True:
            try:
                holder = self.cloud.holder(self.config.floating_ip)
                answered = True
                if holder == droplet:
                    result.cloud_confirmed_at = self.services.clock.now()
                    witness = Witness("digitalocean", True, f"floating IP {self.config.floating_ip} is assigned "
                                      f"to droplet {droplet} (`{target}`)", result.cloud_confirmed_at)
                    break
                delay = 0.5
            except CloudError as exc:
                result.cloud_errors.append(str(exc))
                if not exc.retryable:
                    witness.detail = str(exc)
                    break
                delay = min(delay * 2, 4)
            if time.monotonic() + delay >= deadline:
                errors_seen = f"{len(result.cloud_errors)} error(s), the last: {result.cloud_errors[-1]}" \
                    if result.cloud_errors else ""
                if answered:
                    witness.detail = (f"floating IP {self.config.floating_ip} is assigned to "
                                      f"{'droplet ' + str(holder) if holder else 'no droplet'}, not {droplet} "
                                      f"(`{target}`), after {timeout:.0f}s" + (f"; {errors_seen}" if errors_seen else ""))
                else:
                    witness.detail = f"DigitalOcean gave no usable answer within {timeout:.0f}s: {errors_seen}"
                break
            time.sleep(delay)
        result.witnesses.append(witness)
        report(witness)
        return result
