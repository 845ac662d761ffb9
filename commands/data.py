"""``losses`` and ``salvage WATCH``: what the old server took after the copy, and saving it once the window closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.ledger import blocks as ledger_blocks
from bot.slackapi.blocks import slack_date
from commands.router import Caller, Command, Reply, UsageError, no_args

if TYPE_CHECKING:
    from bot.services import Services

NOT_WATCHED = ("The plan watches no data (`[[data.watches]]`), so the bot cannot say what the old server takes after "
               "the copy; README: *The data window*.")


def run_losses(services: "Services", caller: Caller, _: None) -> Reply:
    if not services.ledger.watching:
        return Reply(text=NOT_WATCHED)
    last = services.records.requests.last_switch()
    # After a go-live closed the window, its bounds are the ones that matter: count them again.
    tally = services.ledger.recount_closed(last.id) if last is not None and last.kind == "golive" else None
    tally = tally or services.ledger.count("losses")
    return Reply(text="The data window: " + ledger_blocks.summary(tally), blocks=ledger_blocks.losses_message(tally))


def parse_watch(args: list[str], services: "Services") -> str:
    names = [w.name for w in services.plan.data.watches if w.salvage]
    choices = ", ".join(f"`{n}`" for n in names) or "none: no watch of the plan has a `salvage` command"
    if len(args) != 1:
        raise UsageError(f"Name one watch to salvage: {choices}.")
    if args[0] not in {w.name for w in services.plan.data.watches}:
        shown = args[0] if len(args[0]) <= 40 else args[0][:40] + "…"
        raise UsageError(f"`{shown}` is not a watch of the plan. Watches that can be salvaged: {choices}.")
    return args[0]


def run_salvage(services: "Services", caller: Caller, name: str) -> Reply:
    run_id, since, until = services.ledger.salvage(name, caller.user)
    return Reply(text=f"Started the salvage of `{name}` (run {run_id}) for the window {slack_date(since)} to "
                      f"{slack_date(until)}; it reports in the channel like a stage.")


# Runs each watch's command on its host: one at a time per person.
LOSSES = Command("losses", "losses", "what the old server took after the copy, per watch: counts, rows, accepted or "
                 "must be zero", acts=False, run=run_losses, parse=no_args, expensive=True)
SALVAGE = Command("salvage", "salvage WATCH", "save a watch's rows of the closed data window with its salvage "
                  "command, run like a stage", acts=True, run=run_salvage, parse=parse_watch)
