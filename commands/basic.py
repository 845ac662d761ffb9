"""``status`` and ``audit``: reads everyone may use (``help`` lives with the router)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.night import blocks as night_blocks
from bot.night.status import build_status
from commands.router import Caller, Command, Reply, UsageError, no_args

if TYPE_CHECKING:
    from bot.services import Services

AUDIT_DEFAULT = 20
AUDIT_MAX = 200


def run_status(services: "Services", caller: Caller, _: None) -> Reply:
    report = build_status(services.plan, services.records, services.clock, services.replica_line())
    return Reply(text="Cutover status", blocks=night_blocks.status_message(report))


def parse_audit(args: list[str], services: "Services") -> int:
    if not args:
        return AUDIT_DEFAULT
    if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= AUDIT_MAX:
        raise UsageError(f"`audit` takes how many events to show, a number from 1 to {AUDIT_MAX} "
                         f"(got `{' '.join(args)[:40]}`).")
    return int(args[0])


def run_audit(services: "Services", caller: Caller, limit: int) -> Reply:
    events = services.store.recent_audit(limit)
    return Reply(text=f"The last {len(events)} audit events", blocks=night_blocks.audit_message(events))


STATUS = Command("status", "status", "stages, freezes, floating IP and go-live at a glance", acts=False,
                 run=run_status, parse=no_args, anywhere=True)
AUDIT = Command("audit", "audit [N]", f"the last N events (default {AUDIT_DEFAULT}): who did what, when",
                acts=False, run=run_audit, parse=parse_audit)


def run_report(services: "Services", caller: Caller, _: None) -> Reply:
    return Reply(text=services.reports.post(caller.user, f"asked by <@{caller.user}>")[1])


# Posts two files in the channel: an operator's act, and one at a time per person (it draws a chart).
REPORT = Command("report", "report", "upload the night's report: Markdown (steps planned against actual, freezes, "
                 "approvals, the switch, the audit log) and a PNG timeline", acts=True, run=run_report,
                 parse=no_args, expensive=True)
