"""What a go-live (or a rollback) would find right now, each item with ✅/❌ and its detail."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from bot.clock import Clock
from bot.freezes.model import ReadBack
from bot.freezes.records import FreezeRecords
from bot.ledger.model import Count, Tally
from bot.ledger.watches import Ledger
from bot.plan import Plan
from bot.plan.model import PATH_WORDS
from bot.runbook.runs import Runs
from bot.slackapi.blocks import sentence
from bot.ssh import SSHError, SSHPool
from bot.states import RunState
from bot.switch.failover import Failover
from bot.switch.guard import CLAIM_SUFFIX, UNDONE_SUFFIX, Claim, parse_claim
from bot.switch.model import Check, Grid, Preflight, Reading
from bot.switch.requests import Requests
from bot.switch.sites import SiteProbes, SitesUnknown
from bot.switch.witnesses import Snapshot

CLOUD_PATIENCE = 2.0


class Preflights:
    """Asks the servers, the probe URLs and DigitalOcean, in parallel, each with its own deadline."""

    def __init__(self, plan: Plan, runs: Runs, freezes: FreezeRecords, requests: Requests, clock: Clock, ssh: SSHPool,
                 failover: Failover, ledger: Ledger | None = None,
                 read_back: Callable[[str], ReadBack | None] | None = None, sites: SiteProbes | None = None) -> None:
        assert plan.failover is not None
        self.plan = plan
        self.config = plan.failover
        self.runs = runs
        self.freezes = freezes
        self.ledger = ledger
        self.read_back = read_back  # a freeze's check, run on its host
        self.requests = requests
        self.clock = clock
        self.ssh = ssh
        self.failover = failover
        self.witnesses = failover.witnesses
        self.sites = sites if sites is not None and sites.watching else None

    def run(self, purpose: str = "golive", ignore_request: int | None = None) -> Preflight:
        cfg = self.config
        golive = purpose == "golive"
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="preflight") as pool:
            # Each server's health, track and VRRP state files and addresses, read once by one SSH command for
            # every check below that needs them. Submitted first, so a worker is on each before any check waits.
            reads = {host: pool.submit(self.witnesses.snapshot, host, self._small_files(host))
                     for host in (cfg.old, cfg.new)}
            data = self._data_window(pool, golive, only_must_be_zero=False)
            probing = pool.submit(self._sites, purpose) if self.sites is not None else None

            def snaps() -> dict[str, Snapshot]:
                return {host: read.result() for host, read in reads.items()}

            checks = self._full_checks(purpose, snaps, ignore_request)
            results = tuple(pool.map(lambda fn: fn(), checks))
            tally, more = data()
            grid, site_checks = probing.result() if probing is not None else (None, ())
        return Preflight(purpose, self.clock.now(), results + site_checks + more, tally, grid)

    def _sites(self, purpose: str) -> tuple[Grid, tuple[Check, ...]]:
        """Every site on each server and on the moving paths. Before a go-live, the new server must serve each
        one (refused, by name, if not); the old server and the moving paths are shown and refuse nothing (the old
        one may be broken already: that is why people migrate). Before a rollback nothing refuses."""
        assert self.sites is not None
        cfg = self.config
        golive = purpose == "golive"
        try:
            sites = self.sites.listed()
        except SitesUnknown as exc:
            return Grid((), (), (), self.clock.now(), str(exc)), (
                Check("sites", False, f"The site's hostnames are unknown: {exc}; no go-live without every site "
                                      "probed", blocking=golive),)
        serving = cfg.old if golive else cfg.new
        expect = {path: (path if path in ("old", "new") else serving) for path in self.plan.sites.paths()}
        if not golive and "old" in expect and self._old_forwards():
            expect["old"] = "new"  # the old server forwards to the new one until the rollback undoes it
        grid = self.sites.grid(sites, expect)
        if not grid.failed():
            paths = ", ".join(PATH_WORDS[p] for p in grid.paths)
            return grid, (Check("sites", True, f"every site answers as it should on each path ({paths}): "
                                               + sites_named(grid.sites)),)
        checks = []
        for path in grid.paths:
            failed = grid.failed(path)
            where = PATH_WORDS[path] if path not in ("old", "new") else f"`{path}`"
            if not failed:
                continue
            blocking = golive and path == "new"
            if blocking:
                checks += [Check(f"site {c.site} new", False, f"{c.site} on `{cfg.new}`: {c.reason}; the new server "
                                                              "must serve every site before a go-live")
                           for c in failed]
            else:
                checks.append(Check(f"sites {path}", False, f"on {where}: " + "; ".join(
                    f"{c.site}: {c.reason}" for c in failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5
                                                                     else ""), blocking=False))
        return grid, tuple(checks)

    def _data_window(self, pool: ThreadPoolExecutor, golive: bool,
                     only_must_be_zero: bool) -> Callable[[], tuple[Tally | None, tuple[Check, ...]]]:
        """Start counting the watches (all of them, or the must-be-zero ones) and reading back the required
        freezes; the answer, to be taken once the other checks are under way."""
        if not golive:
            return lambda: (None, ())
        counting = None
        if self.ledger is not None and self.ledger.watching:
            only = {w.name for w in self.plan.data.watches if w.must_be_zero} if only_must_be_zero else None
            if only is None or only:
                counting = pool.submit(self.ledger.count, "preflight", None, None, only)
        kinds = [k for k in self.config.require_freezes if self.plan.freezes.kinds[k].check]
        backs = [pool.submit(self.read_back, k) for k in kinds] if self.read_back is not None else []

        def answer() -> tuple[Tally | None, tuple[Check, ...]]:
            tally = counting.result() if counting is not None else None
            checks = [watch_check(c, tally, self.plan) for c in (tally.counts if tally else ())]
            checks += [read_back_check(reading) for f in backs if (reading := f.result()) is not None]
            return tally, tuple(checks)

        return answer

    def _old_forwards(self) -> bool:
        """Whether the old server forwards to the new one now: the last switch was a go-live that turned it on."""
        last = self.requests.last_switch()
        return last is not None and last.kind == "golive" and last.forwarded_at is not None

    def _full_checks(self, purpose: str, snaps: Callable[[], dict[str, Snapshot]],
                     ignore_request: int | None) -> list[Callable[[], Check]]:
        cfg = self.config
        golive = purpose == "golive"
        current, target = (cfg.old, cfg.new) if golive else (cfg.new, cfg.old)
        checks: list[Callable[[], Check]] = [lambda: self._ssh(cfg.old), lambda: self._ssh(cfg.new)]
        if golive:
            checks += [lambda: self._health(cfg.old, snaps()[cfg.old]),
                       lambda: self._health(cfg.new, snaps()[cfg.new]),
                       lambda: self._answers(cfg.new_probe_url, cfg.new, blocking=True)]
        else:
            checks += [self._backup, self._old_answers]
        checks += [lambda: _check(f"keepalived {cfg.old}", self.witnesses.keepalived(cfg.old), True),
                   lambda: _check(f"keepalived {cfg.new}", self.witnesses.keepalived(cfg.new), True),
                   lambda: _check("vrrp", self.witnesses.vrrp(current, target, snaps(), backup_may_fault=not golive),
                                  blocking=self.plan.vrrp_state_file(cfg.old) is not None),
                   lambda: _check("vip", self.witnesses.vip(current, snaps=snaps()), golive),
                   lambda: _check("digitalocean", self.witnesses.cloud(current, CLOUD_PATIENCE),
                                  golive),
                   lambda: _check(f"wiring {cfg.old}", self.witnesses.wiring(cfg.old), True),
                   lambda: _check(f"wiring {cfg.new}", self.witnesses.wiring(cfg.new), True),
                   lambda: _check("droplets", self.witnesses.droplets_seen(), golive)]
        if self.plan.digitalocean is not None and self.plan.digitalocean.metadata:
            checks.append(lambda: _check("metadata", self.witnesses.metadata(current), golive))
        if golive:
            checks += [self._stages, self._freezes]
        checks.append(lambda: self._no_other_request(ignore_request))
        return checks

    def confirm(self, purpose: str = "golive", ignore_request: int | None = None) -> Preflight:
        """What can change in seconds, asked again: the health files (over SSH), keepalived's states and the VIP,
        and the stages, freezes and requests. Tens of milliseconds, where ``run`` takes half a second or more.

        Only valid beside a full preflight that passed moments ago: DigitalOcean's assignment and the new
        server's answer are not asked again here, nor the watches whose losses the plan accepts; the must-be-zero
        watches and the freezes' read-back are, since one edit would make the switch lose it.
        """
        cfg = self.config
        golive = purpose == "golive"
        current, target = (cfg.old, cfg.new) if golive else (cfg.new, cfg.old)
        hosts = (cfg.old, cfg.new)
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="confirm") as pool:
            # each server is asked once, everything at once: one SSH round trip, not one per file
            reads = [pool.submit(self.witnesses.snapshot, host, self._small_files(host)) for host in hosts]
            data = self._data_window(pool, golive, only_must_be_zero=True)  # an edit can come in seconds
            local = [pool.submit(fn) for fn in ((self._stages, self._freezes) if golive else (self._backup,))]
            local.append(pool.submit(self._no_other_request, ignore_request))
            snaps = {host: read.result() for host, read in zip(hosts, reads)}
            checks = [self._health(host, snaps[host]) if golive else self._reached(snaps[host]) for host in hosts]
            checks += [f.result() for f in local]
            tally, more = data()
        checks += [_check("vrrp", self.witnesses.vrrp(current, target, snaps, backup_may_fault=not golive),
                          blocking=self.plan.vrrp_state_file(cfg.old) is not None),
                   _check("vip", self.witnesses.vip(current, snaps=snaps), golive), *more]
        return Preflight(purpose, self.clock.now(), tuple(checks), tally)

    def _small_files(self, host: str) -> list[str]:
        """The files a confirmation reads on ``host``: its health file, and its track and VRRP state files."""
        health = self.plan.health_file(host)
        records = [health + CLAIM_SUFFIX, health + UNDONE_SUFFIX] if host == self.config.old else []
        return [p for p in (health, self.plan.track_file(host), self.plan.vrrp_state_file(host), *records)
                if p is not None]

    def _recorded(self, host: str, snap: Snapshot) -> tuple[str, Claim | None]:
        """What the old server records beside its health file, said for a check; and the go-live in effect."""
        if host != self.config.old:
            return "", None
        path = self.plan.health_file(host)
        held = parse_claim(snap.files.get(path + CLAIM_SUFFIX))
        if held is not None:
            return f": {held.said()}", held
        undone = (snap.files.get(path + UNDONE_SUFFIX) or "").splitlines()
        last = parse_claim(undone[-1]) if undone else None
        return (f" ({last.said()})" if last else " (no go-live recorded beside it)"), None

    @staticmethod
    def _reached(snap: Snapshot) -> Check:
        if snap.error:
            return Check(f"ssh {snap.host}", False, snap.error)
        return Check(f"ssh {snap.host}", True, f"SSH to `{snap.host}` works")

    def _ssh(self, host: str) -> Check:
        try:
            name = self.ssh.check(host, "hostname", timeout=10).strip()
            return Check(f"ssh {host}", True, f"SSH to `{host}` works (hostname `{name}`)")
        except SSHError as exc:
            return Check(f"ssh {host}", False, str(exc))

    def _health(self, host: str, snap: Snapshot) -> Check:
        """The health file holds the healthy value, and the track file (if any) 0, as ``snap`` read them."""
        cfg = self.config
        path = self.plan.health_file(host)
        try:
            value = self.witnesses.health(host, snap)
        except SSHError as exc:
            return Check(f"health {host}", False, f"cannot read `{path}` on `{host}`: {exc}")
        if value == cfg.healthy:
            track = self.plan.track_file(host)
            if track is not None:
                try:
                    held = snap.read(track)
                except SSHError as exc:
                    return Check(f"health {host}", False, f"cannot read `{track}` on `{host}`: {exc}")
                if held not in ("0", None):
                    return Check(f"health {host}", False, f"keepalived's track file `{track}` on `{host}` holds "
                                                          f"`{held[:20]}`, which tells keepalived to move the address off "
                                                          f"`{host}`; write 0 there once you know why it is set")
            said, held = self._recorded(host, snap)
            if held is not None:
                return Check(f"health {host}", False, f"`{path}` on `{host}` holds `{cfg.healthy}`, but the server "
                                                      f"still records a go-live beside it{said}: if that switch was "
                                                      f"undone by hand, remove `{path}{CLAIM_SUFFIX}` there")
            return Check(f"health {host}", True, f"`{path}` on `{host}` holds `{cfg.healthy}`{said}")
        shown = "is missing" if value is None else f"holds `{value[:40]}`"
        said, _ = self._recorded(host, snap)
        return Check(f"health {host}", False, f"`{path}` on `{host}` {shown}, expected `{cfg.healthy}`"
                     + (said if said.startswith(":") else ""))

    def _old_answers(self) -> Check:
        """Before a rollback: the old server's own address answers, from itself, or from the new server while it
        forwards there (the rollback undoes that)."""
        cfg = self.config
        if not self._old_forwards():
            return self._answers(cfg.old_probe_url, cfg.old, blocking=False)
        check = self._answers(cfg.old_probe_url, cfg.new, blocking=False)
        return replace(check, detail=check.detail + " (the old server forwards to the new one until the rollback "
                                                    "undoes it)")

    def _answers(self, url: str, host: str, blocking: bool) -> Check:
        return _check(f"answers {host}", self.witnesses.answers(url, host, timeout=3.0), blocking)

    def _stages(self) -> Check:
        runs = self.runs.latest()
        missing = [s.name for s in self.plan.stages
                   if s.required and (s.name not in runs or runs[s.name].state != RunState.SUCCEEDED)]
        if not missing:
            return Check("stages", True, "every required stage has succeeded")
        return Check("stages", False, "not yet succeeded: " + ", ".join(f"`{m}`" for m in missing))

    def _freezes(self) -> Check:
        required = self.config.require_freezes
        if not required:
            return Check("freezes", True, "the plan requires no freeze")
        active = self.freezes.active_kinds()
        missing = [k for k in required if k not in active]
        if not missing:
            return Check("freezes", True, "in effect: " + ", ".join(f"`{k}`" for k in required))
        return Check("freezes", False, "not in effect: " + ", ".join(f"`{k}`" for k in missing))

    def _backup(self) -> Check:
        saved = self.failover.backup()
        if saved is None:
            return Check("backup", False, "no health file content was recorded by a go-live; nothing to restore")
        return Check("backup", True, f"will restore `{saved.path}` on `{saved.host}` to "
                                     f"`{saved.content.strip()[:40]}`")

    def _no_other_request(self, ignore: int | None) -> Check:
        others = [r for r in self.requests.in_flight() if r.id != ignore]
        if not others:
            return Check("requests", True, "no other request is open")
        r = others[0]
        return Check("requests", False, f"{r.kind} request #{r.id} by <@{r.requested_by}> is still open")


def sites_named(names: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check(name: str, reading: Reading, blocking: bool) -> Check:
    return Check(name, reading.ok, reading.detail, blocking)


def watch_check(count: Count, tally: Tally | None, plan: Plan) -> Check:
    """A watch's count as the preflight judges it: unknown and rows where there must be none refuse."""
    name = f"watch {count.watch}"
    since = tally.source if tally else "the copy"
    if count.count is None:
        return Check(name, False, f"{count.label}: *unknown* ({count.error}); no go-live on a guess: fix the watch "
                                  f"`{count.watch}` (its command, or its host) and check again")
    if count.must_be_zero and count.count:
        shown = "; ".join(count.rows[:3]) + (f" and {count.count - 3:,} more" if count.count > 3 else "")
        again = f"run `{plan.data.copy_stage}` and the stages after it again" if plan.data.copy_stage else "re-sync them"
        return Check(name, False, f"{count.phrase()} since the copy ({since}), and there must be none: "
                                  f"{shown or 'the watch printed no rows'}. Bring them to the new server ({again}), or "
                                  f"make the plan accept them (`losses = \"accepted\"` in the watch `{count.watch}`)")
    if count.must_be_zero:
        return Check(name, True, f"0 {count.label} since the copy: held")
    return Check(name, True, f"{count.phrase()} written to the old server since the copy (accepted by "
                             "the plan: lost when traffic moves)")


def read_back_check(reading: ReadBack) -> Check:
    if reading.frozen:
        return Check(f"read-back {reading.kind}", True, sentence(reading.describe()))
    fix = ("freeze it, or take it out of `require_freezes`" if reading.printed is not None
           else "fix the check's command or its host")
    return Check(f"read-back {reading.kind}", False, f"{sentence(reading.describe())}; {fix}")
