"""The one graph of dependencies, built once at start and handed to everything.

Tests build the same graph with stand-ins (a Slack stand-in URL, a fake
clock, a temporary database); nothing is imported as a global. Each service
is given only what it uses; this is the one place that knows them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from slack_sdk import WebClient

from bot.clock import Clock, SystemClock
from bot.freezes.service import Freezes
from bot.ledger.watches import Ledger
from bot.night.home import HomeView
from bot.night.records import Records
from bot.night.reports import Reports
from bot.night.status import build_status
from bot.ops.scheduler import WatchedScheduler
from bot.ops.watchdog import Watchdog
from bot.plan import Plan
from bot.redact import Redactor
from bot.runbook.runner import StageRunner
from bot.runbook.steps import LATE_CHECK_SECONDS
from bot.settings import Settings
from bot.slackapi.notifier import Notifier, make_slack_client
from bot.ssh import SSHPool
from bot.store import Store
from bot.switch.cloud import Cloud
from bot.switch.failover import Failover
from bot.switch.freshness import FRESH_EVERY
from bot.switch.golive import GoLive
from bot.switch.preflight import Preflights
from bot.switch.sites import SiteProbes
from bot.switch.witnesses import Witnesses
from bot.threads import Watched
from bot.workers import Workers

log = logging.getLogger("cutover.services")

RECONCILE_SECONDS = 15
HOME_REFRESH_SECONDS = 2
WATCHDOG_CHECK_SECONDS = 5


@dataclass(frozen=True)
class Services:
    settings: Settings
    plan: Plan
    store: Store
    clock: Clock
    slack: WebClient
    notifier: Notifier
    workers: Workers  # the commands lane
    events: Workers  # the events lane: approvals, stage and freeze jobs, never behind a command
    redactor: Redactor
    ssh: SSHPool
    cloud: Cloud
    scheduler: WatchedScheduler
    stages: StageRunner
    freezes: Freezes
    golive: GoLive | None
    reports: Reports
    home: HomeView
    watchdog: Watchdog
    records: Records
    ledger: Ledger
    replica_line: Callable[[], str | None] = lambda: None  # where the database's replica stands, if there is one

    def audit(self, actor: str, action: str, target: str = "", outcome: str = "ok",
              detail: dict | str | None = None) -> None:
        self.store.audit(actor, action, target, outcome, detail)

    def once(self, key: str | None, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` unless the store has seen this delivery before (a redelivery after a restart)."""
        if key is not None and not self.store.first_delivery(key):
            log.info("ignored a repeated delivery (%s)", key)
            return
        fn(*args)

    def start(self) -> None:
        """What runs once the bot is connected: re-attach stages, settle requests, start the clock jobs."""
        self.stages.resume()
        self.freezes.tick()
        self.freezes.rebuild_jobs()
        self.scheduler.add_job(self.home.refresh, "interval", seconds=HOME_REFRESH_SECONDS, id="home-tab",
                               max_instances=1, coalesce=True, replace_existing=True)
        self.scheduler.add_job(self.stages.people.remind_late, "interval", seconds=LATE_CHECK_SECONDS,
                               id="steps-late", max_instances=1, coalesce=True, replace_existing=True)
        if self.golive is not None:
            self.golive.resume()
            self.scheduler.add_job(self.golive.expire_due, "interval", seconds=1, id="golive-expiry",
                                   max_instances=1, coalesce=True, replace_existing=True)
            self.scheduler.add_job(self.golive.reconcile, "interval", seconds=RECONCILE_SECONDS,
                                   id="golive-reconcile", max_instances=1, coalesce=True, replace_existing=True)
            self.scheduler.add_job(self.golive.refresh, "interval", seconds=FRESH_EVERY, id="golive-refresh",
                                   max_instances=1, coalesce=True, replace_existing=True)
        self.scheduler.add_job(self.notifier.reassert_due, "interval", seconds=1, id="late-updates",
                               max_instances=1, coalesce=True, replace_existing=True)
        self.scheduler.add_job(self.watchdog.ensure_running, "interval", seconds=WATCHDOG_CHECK_SECONDS,
                               id="watchdog", max_instances=1, coalesce=True, replace_existing=True)
        self.scheduler.start()
        self._watch()
        self.watchdog.start()

    def _watch(self) -> None:
        """What the watchdog keeps running: the scheduler, both lanes, each stage's follower."""
        scheduler, watchdog = self.scheduler, self.watchdog
        watchdog.watch(Watched("the scheduler", "freeze notices, reminders, go-live expiry and the Home tab's "
                               "updates", dead=scheduler.dead, revive=scheduler.revive))
        for lane, does in ((self.workers, "`/cutover` commands"),
                           (self.events, "approvals, stage runs and freeze jobs")):
            watchdog.watch(Watched(f"a thread of the {lane.name}", does, dead=lane.dead, revive=lane.revive,
                                   resumed="a new thread took its place at {at}"))
        watchdog.watch_each(self.stages.watched_followers)

    def close(self) -> None:
        self.watchdog.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.stages.stop()
        if self.golive is not None:
            self.golive.stop()
        self.workers.shutdown(wait=True)
        self.events.shutdown(wait=True)
        self.ssh.close()
        self.store.close()


def build_services(settings: Settings, plan: Plan, *, clock: Clock | None = None,
                   slack: WebClient | None = None, workers: int = 8, events: int = 8,
                   replica_line: Callable[[], str | None] | None = None) -> Services:
    clock = clock or SystemClock()
    replica = replica_line or (lambda: None)
    redactor = Redactor(settings.secrets(), plan.redact)
    slack = slack or make_slack_client(settings)
    store = Store(settings.db_path, clock)
    store.prune_deliveries()
    notifier = Notifier(slack, plan.people.channel, redactor)
    pool = Workers(workers, "commands lane")
    lane = Workers(events, "events lane")
    ssh = SSHPool(plan.hosts)
    cloud = Cloud(settings.digitalocean_token, settings.digitalocean_end_point)
    scheduler = WatchedScheduler()
    records = Records.on(store, clock, plan)
    stages = StageRunner(plan, records.runs, store.audit, notifier, clock, ssh, lane, redactor, settings.log_dir)
    freezes = Freezes(plan, records.freezes, store.audit, notifier, clock, scheduler, lane, stages, ssh)
    ledger = Ledger(plan, ssh, records.runs, records.counts, clock, stages)
    reports = Reports(plan, records, notifier, clock, redactor, settings.log_dir / "reports")
    golive = None
    if plan.failover is not None and plan.digitalocean is not None:
        sites = SiteProbes(plan, ssh, clock)
        failover = Failover(plan, ssh, records.requests, store.audit, clock, Witnesses(plan, ssh, cloud, clock), sites)
        preflights = Preflights(plan, records.runs, records.freezes, records.requests, clock, ssh, failover, ledger,
                                freezes.read_back, sites)
        golive = GoLive(plan, store, notifier, clock, lane, failover, preflights, records.requests, records.runs,
                        after_verified=reports.after_verified, ledger=ledger)
    services = Services(settings=settings, plan=plan, store=store, clock=clock, slack=slack, notifier=notifier,
                        workers=pool, events=lane, redactor=redactor, ssh=ssh, cloud=cloud, scheduler=scheduler,
                        stages=stages, freezes=freezes, golive=golive, reports=reports,
                        home=HomeView(notifier, clock, lambda: build_status(plan, records, clock, replica())),
                        watchdog=Watchdog(notifier, clock), records=records, ledger=ledger, replica_line=replica)
    return services
