"""``run``, ``cancel`` and ``logs``: stages by name from the plan, never a command from chat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.runbook.run_all import run_all_and_report
from bot.runbook.steps import LATE_CHECK_SECONDS
from commands.router import Caller, Command, Reply, UsageError

if TYPE_CHECKING:
    from bot.services import Services


def _stage_name(args: list[str], services: "Services", allow_all: bool = False) -> str:
    names = [s.name for s in services.plan.stages]
    choices = ", ".join(f"`{n}`" for n in names) + (" or `all`" if allow_all else "")
    if len(args) != 1:
        raise UsageError(f"Name one stage: {choices}.")
    name = args[0]
    if allow_all and name.lower() == "all":
        return "all"
    if name not in names:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise UsageError(f"`{shown}` is not a stage of the plan. Stages: {choices}.")
    return name


def parse_run(args: list[str], services: "Services") -> str:
    return _stage_name(args, services, allow_all=True)


def parse_stage(args: list[str], services: "Services") -> str:
    return _stage_name(args, services)


def run_run(services: "Services", caller: Caller, name: str) -> Reply:
    if name == "all":
        services.events.submit("run all", run_all_and_report, services.stages, caller.user)
        limit = services.plan.schedule.max_parallel
        if limit == 1:
            order = " → ".join(f"`{s.name}`" for s in services.plan.stages)
            how = f"in order ({order}), stopping at the first failure"
        else:
            how = (f"up to {limit} side by side, each once what it depends on has succeeded; after a failure no "
                   "new one starts")
        return Reply(text=f"Running the stages not yet done, {how}. Each reports in the channel; the summary "
                          "follows there.")
    run_id = services.stages.start(name, caller.user)
    stage = services.plan.stage(name)
    posted = services.stages.runs.get(run_id).message_ts is not None
    if stage is not None and stage.manual:
        if not posted:
            return Reply(text=f"`{name}` is open for <@{stage.owner}>, but its message could not be posted "
                              f"(Slack said `{services.notifier.last_error()}`); the bot tries again every "
                              f"{LATE_CHECK_SECONDS} s. `/cutover done {name}` completes it meanwhile.")
        return Reply(text=f"`{name}` is open: <@{stage.owner}> has its instructions and a Done button in the "
                          "channel.")
    if not posted:
        return Reply(text=f"Started `{name}` (run {run_id}), but its progress message could not be posted in the "
                          f"channel (Slack said `{services.notifier.last_error()}`); the bot keeps trying, and "
                          "`/cutover status` shows the run meanwhile.")
    return Reply(text=f"Started `{name}` (run {run_id}); its progress is in the channel and its thread.")


def run_cancel(services: "Services", caller: Caller, name: str) -> Reply:
    return Reply(text=services.stages.cancel(name, caller.user))


def run_logs(services: "Services", caller: Caller, name: str) -> Reply:
    run = services.stages.send_log(name, caller.user)
    if run is None:
        return Reply(text=f"Uploading the log of `{name}` failed; the bot's log says why. Try again in a minute.")
    return Reply(text=f"The log of `{name}` (run {run.id}) is in the thread of its progress message.")


def parse_done(args: list[str], services: "Services") -> str:
    return _stage_name(args, services)


def parse_failed(args: list[str], services: "Services") -> tuple[str, str]:
    if len(args) < 2:
        raise UsageError("Name the step and say why it failed, such as `/cutover failed smoke-test the login page "
                         "answers 500`.")
    return _stage_name(args[:1], services), " ".join(args[1:])


def run_done(services: "Services", caller: Caller, name: str) -> Reply:
    return Reply(text=services.stages.people.complete(name, caller.user, ok=True))


def run_failed(services: "Services", caller: Caller, parsed: tuple[str, str]) -> Reply:
    name, reason = parsed
    return Reply(text=services.stages.people.complete(name, caller.user, ok=False, reason=reason))


RUN = Command("run", "run STAGE|all", "start a stage on its host (or all: every step not yet done, each once what it depends on is done, "
              "side by side up to [schedule] max_parallel)",
              acts=True, run=run_run, parse=parse_run)
CANCEL = Command("cancel", "cancel STAGE", "stop a running stage and its whole process group", acts=True,
                 run=run_cancel, parse=parse_stage)
LOGS = Command("logs", "logs STAGE", "upload the full output of the stage's latest run to its thread",
               acts=True, run=run_logs, parse=parse_stage, expensive=True)
# A person's step is completed by its owner, who need not be an operator; the service checks owner-or-operator.
DONE = Command("done", "done STEP", "mark your step (a person's step in the plan) done", acts=False,
               run=run_done, parse=parse_done)
FAILED = Command("failed", "failed STEP REASON", "mark your step failed, saying why", acts=False,
                 run=run_failed, parse=parse_failed)
