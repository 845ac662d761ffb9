"""``run all``: every step not yet done, side by side up to ``max_parallel``, stopping at the first failure.

A step starts once every step it depends on has succeeded (with
``max_parallel = 1``, the default, once the step before it in the plan has
ended too: the plan's order, one at a time). After a failure no new step
starts; those already running finish. It can take hours, longer than a
command's response_url lives, so the summary is posted in the channel,
packed by the length-safe builder, with each step's start and end.
"""

from __future__ import annotations

from bot.durations import format_duration
from bot.plan import Stage
from bot.runbook import blocks as stage_blocks
from bot.runbook.runner import StageRunner
from bot.runbook.runs import StageRefused
from bot.slackapi.blocks import sections, slack_date
from bot.states import RunState


def run_all(runner: StageRunner, user: str) -> list[str]:
    """Run every step not yet succeeded; one line of report per step, in the order they ended."""
    plan = runner.plan
    limit = plan.schedule.max_parallel
    waits_for = plan.waits_for()
    report: list[str] = []
    runs = runner.runs.latest()
    done = set()
    for stage in plan.stages:
        last = runs.get(stage.name)
        if last and last.state == RunState.SUCCEEDED:
            done.add(stage.name)
            report.append(f"⏭️ `{stage.name}` already succeeded; skipped (use `run {stage.name}` to repeat it)")
    pending = [s for s in plan.stages if s.name not in done]
    running: dict[int, str] = {}
    stopped_by = ""
    while pending or running:
        if not stopped_by and not runner.stopping.is_set():
            for stage in list(pending):
                if len(running) >= limit:
                    break
                if not all(w in done for w in waits_for[stage.name]):
                    continue
                pending.remove(stage)
                try:
                    running[runner.start(stage.name, user)] = stage.name
                except StageRefused as exc:
                    report.append(f"🛑 {exc}")
                    stopped_by = stage.name
                    break
        if not running:
            break  # nothing left that can start
        states = runner.wait_any(list(running))
        if runner.stopping.is_set() and all(s.active for s in states.values()):
            names = ", ".join(f"`{n}`" for n in running.values())
            report.append(f"⏸️ the bot stopped while {names} {'was' if len(running) == 1 else 'were'} running; "
                          "a stage keeps running on its host, a person's step stays open for its owner."
                          + (f" Not started: {_names(pending)}; `run all` again once the running ones have ended."
                             if pending else ""))
            return report
        for run_id, state in states.items():
            if state.active:
                continue
            name = running.pop(run_id)
            report.append(f"{stage_blocks.STATE_ICONS.get(state, '•')} `{name}` {state}{_times(runner, run_id)}")
            if state == RunState.SUCCEEDED:
                done.add(name)
            elif not stopped_by:
                stopped_by = name
    if stopped_by and pending:
        report.append(f"🛑 stopped after `{stopped_by}`: {_names(pending)} not started")
    elif pending:
        report.append(f"🛑 not started, their dependencies did not succeed: {_names(pending)}")
    return report


def _names(stages: list[Stage], shown: int = 10) -> str:
    """Step names for one line of the summary: the first few and how many more, so that it fits any plan."""
    names = ", ".join(f"`{s.name}`" for s in stages[:shown])
    return names + (f" and {len(stages) - shown} more" if len(stages) > shown else "")


def _times(runner: StageRunner, run_id: int) -> str:
    run = runner.runs.get(run_id)
    start, end = run.started_at, run.ended_at
    if end is None:
        return ""
    return f" ({slack_date(start, '{time_secs}')}–{slack_date(end, '{time_secs}')}, {format_duration(end - start)})"


def run_all_and_report(runner: StageRunner, user: str) -> None:
    report = run_all(runner, user)
    how = "was interrupted" if runner.stopping.is_set() else "finished"
    side = f", up to {runner.plan.schedule.max_parallel} side by side" if runner.plan.schedule.max_parallel > 1 else ""
    runner.notifier.post(f"`run all` {how}", sections([f"`run all` by <@{user}> {how}{side}:", *report]))
