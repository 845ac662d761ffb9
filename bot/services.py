"""The one graph of dependencies, built once at start and handed to everything.

Tests build the same graph with stand-ins (a Slack stand-in URL, a fake
clock, a temporary database); nothing is imported as a global.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from slack_sdk import WebClient

from bot.clock import Clock, SystemClock
from bot.notifier import Notifier, make_slack_client
from bot.plan import Plan
from bot.redact import Redactor
from bot.settings import Settings
from bot.ssh import SSHPool
from bot.stages import StageRunner
from bot.store import Store
from bot.workers import Workers


@dataclass
class Services:
    settings: Settings
    plan: Plan
    store: Store
    clock: Clock
    slack: WebClient
    notifier: Notifier
    workers: Workers
    redactor: Redactor
    ssh: SSHPool
    stages: "StageRunner" = field(init=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cutover"))

    def audit(self, actor: str, action: str, target: str = "", outcome: str = "ok",
              detail: dict | str | None = None) -> None:
        self.store.audit(actor, action, target, outcome, detail)

    def close(self) -> None:
        self.stages.stop()
        self.workers.shutdown(wait=True)
        self.ssh.close()
        self.store.close()


def build_services(settings: Settings, plan: Plan, *, clock: Clock | None = None,
                   slack: WebClient | None = None, workers: int = 8) -> Services:
    clock = clock or SystemClock()
    redactor = Redactor(settings.secrets(), plan.redact)
    slack = slack or make_slack_client(settings)
    store = Store(settings.db_path, clock)
    store.prune_deliveries()
    services = Services(settings=settings, plan=plan, store=store, clock=clock, slack=slack,
                        notifier=Notifier(slack, plan.people.channel, redactor), workers=Workers(workers),
                        redactor=redactor, ssh=SSHPool(plan.hosts))
    services.stages = StageRunner(services, services.ssh, settings.log_dir)
    return services
