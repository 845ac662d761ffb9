"""The switch itself: flipping the old server's health file, restoring it, and proving the move.

Flipping writes the unhealthy value to the old server's health file with a
temp file and a rename, after recording what was there so that a rollback
restores exactly that; the server guards both (``guard``): a go-live swaps
only the healthy value and records its request beside the file, a rollback
undoes only the go-live recorded there. Verification asks the three witnesses in
turn — the probe URL, keepalived's address, DigitalOcean's assignment —
until each agrees or the deadline passes.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

from bot.clock import Clock
from bot.plan import Plan
from bot.ssh import SSHError, SSHPool, quote
from bot.plan.model import PATH_WORDS
from bot.switch.guard import (CLAIM_SUFFIX, CLAIMED, NO_CLAIM, UNEXPECTED, Claim, golive_command, parse_claim,
                              request_key, rollback_command)
from bot.switch.model import Forwarding, Grid, Reading, Verification
from bot.switch.requests import Backup, Requests
from bot.switch.sites import SiteProbes
from bot.switch.witnesses import Witnesses

log = logging.getLogger("cutover.failover")


class FlipNotMade(Exception):
    """The health file was not changed; the reason says why."""


class FlipRefused(FlipNotMade):
    """The server's record says another request made (or undid) the switch; nothing was changed."""

    def __init__(self, message: str, claim: Claim | None = None) -> None:
        super().__init__(message)
        self.claim = claim


class FlipUnknown(Exception):
    """The write was sent, but whether it landed cannot be told now; the reason says what broke."""


class Failover:
    def __init__(self, plan: Plan, ssh: SSHPool, requests: Requests, audit: Callable[..., object], clock: Clock,
                 witnesses: Witnesses, sites: SiteProbes | None = None) -> None:
        assert plan.failover is not None
        self.plan = plan
        self.config = plan.failover
        self.ssh = ssh
        self.requests = requests
        self.audit = audit
        self.clock = clock
        self.witnesses = witnesses
        self.sites = sites if sites is not None and sites.watching else None

    # -- changing it -----------------------------------------------------------------------------

    def flip(self, request_id: int) -> datetime:
        """Record the old server's health file, then write the unhealthy value over it atomically.

        Returns when the host says the file was written. FlipNotMade: the file is as it was. FlipUnknown:
        the bot cannot tell (the connection went during the write or its read-back).
        """
        host = self.config.old
        path = self.plan.health_file(host)
        try:
            previous = self.ssh.read_file(host, path)
            self.ssh.ensure_connected(host)
        except SSHError as exc:
            raise FlipNotMade(str(exc)) from None
        if previous is None:
            raise FlipNotMade(f"`{path}` does not exist on `{host}`")
        self.requests.save_backup(request_id, host, path, previous.decode("utf-8", "replace"))
        command = golive_command(path, self.key(request_id), self.config.healthy, self.config.unhealthy)
        return self._guarded_write(host, path, command, self.config.unhealthy)

    def key(self, request_id: int) -> str:
        """The request as the record on the server names it."""
        return request_key(request_id, self.requests.get(request_id).created_at)

    def held(self) -> Claim | None:
        """The go-live the old server records as in effect, in one read (SSHError when it cannot be read)."""
        path = self.plan.health_file(self.config.old) + CLAIM_SUFFIX
        return parse_claim((self.ssh.read_file(self.config.old, path) or b"").decode("utf-8", "replace"))

    def _guarded_write(self, host: str, path: str, command: str, value: str) -> datetime:
        """Run a guarded swap on the host; when it says the file was written (or found so by this request)."""
        try:
            result = self.ssh.run(host, command, stdin=(value + "\n").encode(), retry=False)
        except SSHError as exc:
            raise FlipUnknown(str(exc)) from None
        lines = result.stdout.strip().splitlines()
        first = lines[0] if lines else ""
        if result.exit_code == CLAIMED:
            claim = parse_claim(first.removeprefix("claimed:"))
            said = claim.said() if claim else f"`{path}{CLAIM_SUFFIX}` holds `{first.removeprefix('claimed:')[:80]}`"
            raise FlipRefused(f"the server's record says {said}", claim)
        if result.exit_code == NO_CLAIM:
            undone = parse_claim(first.removeprefix("noclaim:"))
            raise FlipRefused("no go-live is recorded on the server beside `" + path + "`"
                              + (f"; {undone.said()}" if undone else "") + ", so there is nothing of ours to undo",
                              undone)
        if result.exit_code == UNEXPECTED:
            held = first.removeprefix("holds:")
            raise FlipNotMade(f"`{path}` on `{host}` " + (f"holds `{held}`" if held else "is missing or empty")
                              + f", not `{self.config.healthy}`")
        if result.exit_code != 0:
            raise FlipNotMade(f"`{path}` on `{host}` could not be written: "
                              + (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1][:200])
        try:
            return datetime.fromtimestamp(float(lines[1]), timezone.utc)
        except (ValueError, IndexError):
            raise FlipUnknown(f"`{path}` on `{host}` was written but the host did not say when") from None

    def backup(self) -> Backup | None:
        """What the health file held before the last flip."""
        return self.requests.last_backup()

    def restore(self, request_id: int) -> tuple[Backup, datetime]:
        """Put back the health file content recorded before the last flip, if the server's record names that
        flip; returns it and when it was written."""
        saved = self.backup()
        if saved is None:
            raise FlipNotMade("no health file content was recorded before a flip, so there is nothing to restore")
        try:
            self.ssh.ensure_connected(saved.host)
        except SSHError as exc:
            raise FlipNotMade(str(exc)) from None
        command = rollback_command(saved.path, self.key(saved.request_id), self.key(request_id),
                                   saved.content.strip())
        return saved, self._guarded_write(saved.host, saved.path, command, saved.content.strip())

    def tell_keepalived(self, kind: str) -> str | None:
        """Once the health file is known written, say it to keepalived at once through the old server's track
        file: 1 after a go-live, 0 after a rollback. None when done (or the plan has none); else what it means.

        The health file decides: a track file not written after a go-live costs only keepalived's check
        interval; after a rollback it keeps the old server from taking the address back, which the verification
        then shows.
        """
        host = self.config.old
        path = self.plan.track_file(host)
        if path is None:
            return None
        value = "1" if kind == "golive" else "0"
        try:
            self.ssh.replace_file(host, path, f"{value}\n".encode())
            return None
        except SSHError as exc:
            self.audit("cutover", "track-file", f"{host}:{path}", "failed", {"value": value, "error": str(exc)})
            consequence = ("keepalived notices the flip at its next check instead" if value == "1" else
                           f"keepalived keeps the address off `{host}` until it holds 0: write 0 there")
            log.warning("the track file %s on %s was not written (%s): %s", path, host, exc, consequence)
            return f"keepalived's track file `{path}` on `{host}` was not written ({exc}); {consequence}."

    def forward(self, on: bool) -> Forwarding | None:
        """Make the old server's web tier forward every request to the new server (``on``), or stop it; None when
        the plan has no forwarding. From the moment it took effect the old application takes no writes,
        whatever keepalived or DigitalOcean are still doing."""
        data = self.plan.data
        command = data.forward if on else data.unforward
        if command is None or data.forward_host is None:
            return None
        host = data.forward_host
        try:
            result = self.ssh.run(host, f"sh -c {quote(command)} && date +%s.%N",
                                  timeout=data.forward_timeout.total_seconds(), retry=False)
        except SSHError as exc:
            return Forwarding(on, host, command, error=str(exc))
        if result.exit_code != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            return Forwarding(on, host, command, error=f"it exited {result.exit_code}"
                                                       + (f": {said[-1][:200]}" if said else ""))
        try:
            at = datetime.fromtimestamp(float(result.stdout.strip().splitlines()[-1]), timezone.utc)
        except (ValueError, IndexError):
            return Forwarding(on, host, command, error="it ran, but the host did not say when")
        self.audit("cutover", "forward" if on else "unforward", host, "ok", {"at": at.isoformat()})
        return Forwarding(on, host, command, at=at)

    def written_at(self, host: str) -> datetime:
        """When the host says its health file was last written."""
        path = self.plan.health_file(host)
        stamp = self.ssh.check(host, f"date -r {quote(path)} +%s.%N", timeout=10).strip()
        try:
            return datetime.fromtimestamp(float(stamp), timezone.utc)
        except ValueError:
            raise SSHError(f"`{host}` did not say when `{path}` was written") from None

    # -- proving it -----------------------------------------------------------------------------------

    def verify(self, target: str, timeout: float, report: Callable[[Reading], None],
               forwarding: bool = False, sites: tuple[str, ...] = ()) -> Verification:
        """Wait, within ``timeout`` seconds, for every witness to agree that ``target`` serves.

        With the old server forwarding to the new one, an answer from new through the reserved IP no longer
        proves the IP moved: DigitalOcean's word does, and a fourth witness shows the old server forwards.
        ``sites`` (as the preflight listed them) are probed on the moving paths from the start, side by side with
        the other witnesses, so each site's first answer from ``target`` is timed from the flip.
        """
        deadline = time.monotonic() + timeout
        result = Verification(target)
        counts: dict[str, int] = {}
        probing = None
        if self.sites is not None and sites:
            probing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-sites")
            moving = probing.submit(self.sites.until_moved, self.sites.named(sites), target, deadline)
        asks = [lambda: self.witnesses.answers(self.config.probe_url, target, deadline, counts=counts),
                lambda: self.witnesses.vip(target, deadline),
                lambda: self.witnesses.cloud(target, timeout, deadline, result.cloud_errors)]
        if probing is not None:
            asks.insert(1, lambda: self._sites_moved(moving.result(), target, forwarding, result))
        if self.plan.digitalocean is not None and self.plan.digitalocean.metadata:
            asks.append(lambda: self.witnesses.metadata(target, deadline))
        if forwarding:
            asks.append(lambda: replace(self.witnesses.answers(self.config.old_probe_url, target, deadline),
                                        name="forwarding"))
        try:
            for ask in asks:
                reading = _said_for_what(ask(), target, forwarding)
                if reading.name == "probe" and reading.ok:
                    result.first_answer_at = reading.at
                if reading.name == "digitalocean" and reading.ok:
                    result.cloud_confirmed_at = reading.at
                result.witnesses.append(reading)
                report(reading)
        finally:
            if probing is not None:
                probing.shutdown(wait=False)
        result.action_started_at, result.action_completed_at = self.witnesses.assign_action()
        result.master_at = self.witnesses.master_since(target)
        result.failed_probes = counts.get("failed_probes", 0)
        result.other_answers = counts.get("other_answers", 0)
        return result

    def _sites_moved(self, moved: tuple[Grid, dict[str, datetime]], target: str, forwarding: bool,
                     result: Verification) -> Reading:
        """The sites witness: every site on the moving paths answered from ``target``. The servers' own addresses
        are probed once more for the grid (the old one answers as new while it forwards)."""
        assert self.sites is not None
        grid, answered = moved
        old_side = "new" if forwarding and target == self.config.new else "old"
        direct = {p: ("new" if p == "new" else old_side) for p in ("old", "new") if p in self.plan.sites.connect}
        result.grid = self.sites.grid(self.sites.named(grid.sites), direct).merged(grid) if direct else grid
        result.site_answers = answered
        where = " and ".join(PATH_WORDS[p] for p in grid.paths)
        failed = grid.failed()
        if not failed:
            return Reading("sites", True, f"every site answers from `{target}` through the {where}: "
                                          + ", ".join(grid.sites[:8]) + (f" and {len(grid.sites) - 8} more"
                                                                          if len(grid.sites) > 8 else ""),
                           max(answered.values()) if answered else self.clock.now())
        named = "; ".join(f"{c.site} through the {PATH_WORDS[c.path]}: {c.reason}" for c in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        return Reading("sites", False, f"not every site answers from `{target}`: {named}{more}")


def _said_for_what(reading: Reading, target: str, forwarding: bool) -> Reading:
    """Which witness proved what, in its own words: with forwarding, the probe proves who serves, DigitalOcean
    that the IP moved, the old server's own address that it forwards."""
    if not reading.ok or not forwarding:
        return reading
    what = {"probe": f" (through the old server's forwarding too: this shows `{target}` serves, not that the reserved "
                     "IP moved)",
            "sites": f" (through the old server's forwarding too: this shows `{target}` serves every site, not that "
                     "the reserved IP moved)",
            "digitalocean": ": the reserved IP moved",
            "metadata": ": the reserved IP moved, by the droplets' own word",
            "forwarding": ": the old server forwards to the new one and takes no writes"}.get(reading.name, "")
    return replace(reading, detail=reading.detail + what)
