"""``check``, ``golive`` and ``rollback``: the switch, always behind a preflight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.switch.blocks import preflight_message
from commands.router import Caller, Command, Reply, no_args

if TYPE_CHECKING:
    from bot.services import Services

NOT_CONFIGURED = "The plan has no `[failover]` and `[digitalocean]` sections, so there is nothing to switch."


def run_check(services: "Services", caller: Caller, _: None) -> Reply:
    if services.golive is None:
        return Reply(text=NOT_CONFIGURED)
    preflight = services.golive.check()
    return Reply(text="Preflight: " + ("ready" if preflight.ok else "not ready"),
                 blocks=preflight_message(preflight, "Preflight: what a go-live would find now"))


def _request(services: "Services", caller: Caller, kind: str) -> Reply:
    if services.golive is None:
        return Reply(text=NOT_CONFIGURED)
    outcome = services.golive.request(caller.user, kind)
    if outcome.preflight is not None:
        return Reply(text=outcome.text, blocks=preflight_message(outcome.preflight, outcome.text))
    return Reply(text=outcome.text)


def run_golive(services: "Services", caller: Caller, _: None) -> Reply:
    return _request(services, caller, "golive")


def run_rollback(services: "Services", caller: Caller, _: None) -> Reply:
    return _request(services, caller, "rollback")


CHECK = Command("check", "check", "preflight only: what a go-live would find right now", acts=False,
                run=run_check, parse=no_args, expensive=True)
GOLIVE = Command("golive", "golive", "preflight, then ask the approvers to confirm the switch", acts=True,
                 run=run_golive, parse=no_args, expensive=True)
ROLLBACK = Command("rollback", "rollback", "switch back to the old server, with an approver's confirmation",
                   acts=True, run=run_rollback, parse=no_args)
