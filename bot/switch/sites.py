"""Every hostname of the site, probed on every path: each server's own address, the reserved IP, the VIP.

A probe of hostname H on path P connects where the plan says P is and
speaks to H: TLS server name, certificate name and Host header are H, and
the certificate is verified against the system's CAs (or the plan's
``ca_file``), never skipped. Each answer becomes a ``Cell`` of the grid,
judged for the server expected there: its marker, the site's own marker, not
the default site's, a certificate that lasts ``cert_min_days``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Callable

from bot.clock import Clock
from bot.plan import Plan, Site
from bot.plan.sites import is_hostname
from bot.ssh import SSHError, SSHPool
from bot.switch.model import Cell, Grid
from bot.switch.probes import SiteAnswer, pinned, tls_context

log = logging.getLogger("cutover.sites")

MOVING = ("reserved_ip", "vip")  # the paths a switch moves; each server's own address stays where it is
LISTED_LIMIT = 200  # hostnames a list command may print


class SitesUnknown(Exception):
    """The site's hostnames could not be listed: the list command failed or printed something else."""


class SiteProbes:
    def __init__(self, plan: Plan, ssh: SSHPool, clock: Clock) -> None:
        assert plan.failover is not None
        self.plan = plan
        self.config = plan.sites
        self.failover = plan.failover
        self.ssh = ssh
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="site-probe")

    @property
    def watching(self) -> bool:
        return self.config.listed

    # -- which sites ---------------------------------------------------------------------------------

    def listed(self) -> tuple[Site, ...]:
        """The plan's hostnames and those its list command prints now (SitesUnknown if it cannot)."""
        sites = list(self.config.sites)
        if self.config.list_command is None:
            return tuple(sites)
        host = self.config.list_host or self.failover.new
        try:
            result = self.ssh.run(host, self.config.list_command, timeout=30)
        except SSHError as exc:
            raise SitesUnknown(f"the list command on `{host}` could not run: {exc}") from None
        if result.exit_code != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise SitesUnknown(f"the list command on `{host}` exited {result.exit_code}"
                               + (f": {said[-1][:160]}" if said else ""))
        names = [line.strip().lower() for line in result.stdout.splitlines() if line.strip()]
        wrong = [n for n in names if not is_hostname(n)]
        if wrong:
            raise SitesUnknown(f"the list command on `{host}` printed `{wrong[0][:60]}`, which is no hostname "
                               "(it should print one hostname per line)")
        if len(names) > LISTED_LIMIT:
            raise SitesUnknown(f"the list command on `{host}` printed {len(names)} hostnames; at most "
                               f"{LISTED_LIMIT} are probed")
        known = {s.name for s in sites}
        sites += [Site(n, self.config.path) for n in dict.fromkeys(names) if n not in known]
        return tuple(sites)

    def named(self, names: tuple[str, ...]) -> tuple[Site, ...]:
        """The sites of these hostnames (as a preflight listed them), with the plan's path and marker if it has
        them."""
        known = {s.name: s for s in self.config.sites}
        return tuple(known.get(n) or Site(n, self.config.path) for n in names)

    # -- probing ---------------------------------------------------------------------------------------

    def grid(self, sites: tuple[Site, ...], expect: dict[str, str]) -> Grid:
        """Every site on every path in ``expect`` (path → the server that should answer there), at once."""
        cells = list(self._pool.map(lambda job: self.cell(job[0], job[1], expect[job[1]]),
                                    [(s, p) for s in sites for p in expect]))
        return Grid(tuple(s.name for s in sites), tuple(expect), tuple(cells), self.clock.now())

    def cell(self, site: Site, path: str, expected: str) -> Cell:
        address, port = self.config.connect[path]
        context = tls_context(self.config.ca_file) if self.config.scheme == "https" else None
        answer = pinned(site.name, address, port, site.path, self.config.scheme, context,
                        timeout=self.config.timeout.total_seconds())
        return self.judge(site, path, expected, answer)

    def judge(self, site: Site, path: str, expected: str, answer: SiteAnswer) -> Cell:
        """A cell: whether ``answer`` is ``expected``'s server serving ``site``, and if not, the short reason."""
        server = self.server_of(answer)
        base = dict(site=site.name, path=path, expected=expected, server=server, at=answer.at,
                    status=answer.status, expires=answer.cert_expires)
        if answer.error:
            return Cell(ok=False, reason=answer.error, **base)
        if answer.location is not None:
            return Cell(ok=False, reason=f"HTTP {answer.status} redirect to {answer.location[:80]}", **base)
        if answer.status != 200:
            return Cell(ok=False, reason=f"HTTP {answer.status}", **base)
        if answer.cert_expires is not None and self.config.cert_min_days:
            left = answer.cert_expires - self.clock.now()
            if left < timedelta(days=self.config.cert_min_days):
                return Cell(ok=False, reason=f"the certificate expires {answer.cert_expires:%Y-%m-%d %H:%M} UTC, "
                                             f"in {_days(left)}; the plan wants {self.config.cert_min_days} days "
                                             "at least (`cert_min_days`)", **base)
        if self.config.default_marker and self.config.default_marker in answer.body:
            return Cell(ok=False, reason=f"answers with the default site (`{self.config.default_marker}`): no site "
                                         f"for {site.name} there", **base)
        if site.marker and site.marker not in answer.body:
            return Cell(ok=False, reason=f"the answer lacks this site's marker `{site.marker}`", **base)
        if server != expected:
            who = f"`{server}`" if server else "neither server's marker"
            return Cell(ok=False, reason=f"answered by {who}, expected `{expected}`", **base)
        return Cell(ok=True, reason="", **base)

    def server_of(self, answer: SiteAnswer) -> str | None:
        """Which server's marker the answer carries: the role, "old" or "new", or None."""
        if answer.status != 200:
            return None
        if self.failover.new_marker in answer.body:
            return "new"
        if self.failover.old_marker:
            return "old" if self.failover.old_marker in answer.body else None
        return "old"  # without an old marker, an answer that is not new's is old's

    # -- waiting for a switch ---------------------------------------------------------------------------

    def until_moved(self, sites: tuple[Site, ...], target: str, deadline: float,
                    report: Callable[[Cell], None] | None = None) -> tuple[Grid, dict[str, datetime]]:
        """Probe every site on the moving paths until each answers from ``target`` or ``deadline`` (monotonic)
        passes; the grid of the last answers, and when each site first answered from ``target`` on every moving
        path."""
        moving = [p for p in MOVING if p in self.config.connect]
        pending = {(s.name, p) for s in sites for p in moving}
        last: dict[tuple[str, str], Cell] = {}
        first: dict[tuple[str, str], datetime] = {}
        by_name = {s.name: s for s in sites}
        while pending:
            jobs = sorted(pending)
            for cell in self._pool.map(lambda job: self.cell(by_name[job[0]], job[1], target), jobs):
                last[(cell.site, cell.path)] = cell
                if cell.ok:
                    pending.discard((cell.site, cell.path))
                    first[(cell.site, cell.path)] = cell.at
                    if report is not None:
                        report(cell)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        cells = tuple(last[(s.name, p)] for s in sites for p in moving)
        answered = {s.name: max(first[(s.name, p)] for p in moving) for s in sites
                    if all((s.name, p) in first for p in moving)}
        return Grid(tuple(s.name for s in sites), tuple(moving), cells, self.clock.now()), answered


def _days(left: timedelta) -> str:
    if left.total_seconds() <= 0:
        return "the past: it has expired"
    days = left.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"
