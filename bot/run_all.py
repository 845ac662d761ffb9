"""``run all``: every stage not yet done, in the plan's order, stopping at the first failure, said in the channel.

It can take hours, longer than a command's response_url lives, so the
summary is posted in the channel, packed by the length-safe builder.
"""

from __future__ import annotations

from bot import messages
from bot.blocks import sections
from bot.stages import StageRefused, StageRunner
from bot.states import RunState


def run_all(runner: StageRunner, user: str) -> list[str]:
    """Run every stage not yet succeeded, in depends_on order; one line of report per stage."""
    report = []
    runs = runner.store.latest_runs()
    for stage in runner.plan.stages:
        last = runs.get(stage.name)
        if last and last["state"] == RunState.SUCCEEDED:
            report.append(f"⏭️ `{stage.name}` already succeeded; skipped (use `run {stage.name}` to repeat it)")
            continue
        try:
            run_id = runner.start(stage.name, user)
        except StageRefused as exc:
            report.append(f"🛑 {exc}")
            break
        state = runner.wait(run_id)
        if state.active:  # the bot is stopping; the stage is not
            report.append(f"⏸️ the bot stopped while `{stage.name}` was running; it keeps running on its host. "
                          "Later stages were not started: `run all` again once it has ended.")
            break
        report.append(f"{messages.STATE_ICONS.get(state, '•')} `{stage.name}` {state}")
        if state != RunState.SUCCEEDED:
            report.append("🛑 stopped: later stages were not started")
            break
    return report


def run_all_and_report(runner: StageRunner, user: str) -> None:
    report = run_all(runner, user)
    how = "was interrupted" if runner.stopping.is_set() else "finished"
    runner.notifier.post(f"`run all` {how}", sections([f"`run all` by <@{user}> {how}:", *report]))
