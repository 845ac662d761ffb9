"""Nothing stops silently: each kind of background thread of a running bot, killed, is said in the channel and at
readiness, restarted, and what it does goes on; one that cannot be restarted ends the process non-zero."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError

from bot.local.bot import start_local_bot
from bot.ops.health import Readiness
from bot.ops.watchdog import RESTARTS_ALLOWED, Watchdog
from bot.plan import parse_plan
from bot.runbook.follower import Follower
from bot.standins.slack import blocks_text
from bot.threads import Death
from bot.threads import Watched
from tests.conftest import OPERATOR, PLAN, reply_text
from tests.helpers import example_home
from tests.stage_support import finished, message_text


class Boom(BaseException):
    """What no ``except Exception`` catches: a thread it escapes from ends."""


def raising_once(method, exc: BaseException):
    """``method``, except that its first call raises ``exc``: a loop made to raise once."""
    raised = threading.Event()

    def once(*args, **kwargs):
        if not raised.is_set():
            raised.set()
            raise exc
        return method(*args, **kwargs)

    return once


def said(slack) -> list[str]:
    return [m["text"] + "\n" + blocks_text(m.get("blocks")) for m in slack.messages()]


def wait_said(slack, fragment: str, timeout: float = 10.0) -> str:
    return slack.wait_for(lambda: next((t for t in said(slack) if fragment in t), None), timeout,
                          f"the channel to say {fragment!r}")


def readiness(bot) -> dict:
    services = bot.services
    items = Readiness(services.settings, services.scheduler, services.watchdog).check()
    return {item.name: item for item in items}


def test_a_dead_scheduler_is_said_restarted_and_the_next_notice_still_comes_once(slack, tmp_path):
    plan = copy.deepcopy(PLAN)
    plan["freezes"] = {"reminders": ["4s"]}
    bot = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "c.db"))
    try:
        scheduler = bot.services.scheduler
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 8s"))
        # As in the clean-clone run: the scheduler's loop meets a job it cannot find, and its thread ends.
        scheduler._process_jobs = raising_once(scheduler._process_jobs,
                                               JobLookupError("freeze-1-remind-4s"))
        scheduler.wakeup()
        text = wait_said(slack, "The scheduler stopped at")
        assert "(JobLookupError: 'No job by the id of freeze-1-remind-4s was found'); freeze notices, reminders, " \
               "go-live expiry and the Home tab's updates resumed at" in text
        item = readiness(bot)["scheduler"]
        assert item.ok and "was restarted at" in item.detail and "JobLookupError" in item.detail
        wait_said(slack, "starts in 4s", timeout=15)  # the reminder, due after the death, on time
        wait_said(slack, "is now in effect", timeout=15)
        time.sleep(1.5)
        texts = said(slack)
        assert sum("The scheduler stopped" in t for t in texts) == 1
        assert sum("starts in" in t for t in texts) == 1 and sum("is now in effect" in t for t in texts) == 1
        assert not any("Posted late" in str(m.get("blocks")) for m in slack.messages())
    finally:
        bot.stop()


def test_a_job_that_raises_is_logged_by_name_and_the_scheduler_runs_on(slack, bot, caplog):
    ran = threading.Event()

    def broken() -> None:
        raise RuntimeError("a bug in a job")

    scheduler = bot.services.scheduler
    scheduler.add_job(broken, "date", id="broken-job")
    scheduler.add_job(ran.set, "date", id="after-it")
    assert ran.wait(5)
    record = slack.wait_for(lambda: next((r for r in caplog.records
                                          if "the scheduled job `broken-job` failed" in r.getMessage()), None), 5,
                            "the failed job's log line")
    assert "RuntimeError: a bug in a job" in record.getMessage() and record.exc_info is not None
    assert scheduler.dead() is None and scheduler._thread.is_alive()
    assert not any("stopped" in t for t in said(slack))


def test_the_shutdown_racing_a_due_job_is_not_a_death(slack, bot):
    from apscheduler.schedulers.base import STATE_STOPPED

    scheduler = bot.services.scheduler

    def stopped_under_it():
        scheduler.state = STATE_STOPPED  # what shutdown() does before it empties the store
        raise JobLookupError("freeze-1-start")

    scheduler._process_jobs = stopped_under_it
    scheduler.wakeup()
    scheduler._thread.join(5)
    assert scheduler.death is None and scheduler.dead() is None


def test_a_dead_lane_thread_is_replaced_and_said(slack, bot):
    def fatal() -> None:
        raise Boom("out of the lane")

    bot.services.events.submit("a job raising past Exception", fatal)
    text = wait_said(slack, "A thread of the events lane stopped at")
    assert "(Boom: out of the lane); a new thread took its place at" in text
    item = readiness(bot)["threads"]
    assert item.ok and "a thread of the events lane stopped at" in item.detail
    assert bot.services.events.dead() is None
    assert "What you can do" in reply_text(slack, slack.command(OPERATOR, "help"))


def test_a_dead_follower_is_said_and_following_resumes_to_the_final_state(slack, sshd, tmp_path, monkeypatch):
    from tests.stage_support import stage_plan

    monkeypatch.setattr(Follower, "run", raising_once(Follower.run, Boom("the follower's loop")))
    bot = start_local_bot(slack, parse_plan(stage_plan(sshd, tmp_path), "p"), str(tmp_path / "c.db"))
    try:
        reply_text(slack, slack.command(OPERATOR, "run slow"))
        text = wait_said(slack, "Following `slow` (run 1) stopped at")
        assert "(Boom: the follower's loop); following it resumed at" in text and "from byte" in text
        run = finished(bot, "slow")
        assert run["state"] == "succeeded"
        assert "succeeded" in message_text(slack, run["message_ts"])
    finally:
        bot.stop()


def test_a_dead_watchdog_is_restarted_by_the_scheduler_and_said(slack, bot):
    watchdog = bot.services.watchdog
    watchdog.sweep = raising_once(watchdog.sweep, Boom("the watchdog's loop"))
    text = wait_said(slack, "The watchdog stopped at", timeout=15)
    assert "(Boom: the watchdog's loop); watching the bot's threads and writing the health file resumed at" in text
    assert watchdog._thread.is_alive()


def test_what_cannot_be_restarted_is_said_and_fatal(slack, bot):
    watchdog = Watchdog(bot.services.notifier, bot.services.clock)
    gone = Death(time.monotonic(), "RuntimeError: gone")

    def refuse() -> None:
        raise OSError("no more threads")

    watchdog.watch(Watched("the scheduler", "freeze notices, reminders and go-live expiry", dead=lambda: gone,
                           revive=refuse))
    watchdog.sweep()
    assert watchdog.fatal.is_set()
    text = wait_said(slack, "could not be restarted")
    assert text.startswith("🛑 The scheduler stopped at") and "(RuntimeError: gone) and could not be restarted: " \
        "restarting it failed (OSError: no more threads). Until the bot restarts, freeze notices, reminders and " \
        "go-live expiry do not happen: restart the bot" in text
    states = watchdog.states()
    assert [s.ok for s in states] == [False] and "could not be restarted" in states[0].detail
    watchdog.sweep()
    assert sum("could not be restarted" in t for t in said(slack)) == 1


def test_one_that_keeps_dying_is_given_up_after_its_restarts(slack, bot):
    watchdog = Watchdog(bot.services.notifier, bot.services.clock)
    revived = []
    watchdog.watch(Watched("a thread of the events lane", "approvals", dead=lambda: Death(time.monotonic(), "Boom"),
                           revive=lambda: revived.append(1)))
    for _ in range(RESTARTS_ALLOWED + 1):
        watchdog.sweep()
    assert len(revived) == RESTARTS_ALLOWED and watchdog.fatal.is_set()
    assert f"it stopped {RESTARTS_ALLOWED + 1} times within 10m 00s" in watchdog.fatal_reason


def test_a_bot_whose_scheduler_keeps_dying_exits_non_zero_and_says_why(slack, tmp_path):
    """The process: `cutover run` with a scheduler whose loop always raises ends with exit code 3 (restart me),
    its reason in the log, and the channel told."""
    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": slack.app_token, "SLACK_API_URL": slack.api_url,
           "CUTOVER_PLAN": str(plan), "CUTOVER_DB": str(tmp_path / "c.db"), **example_home(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    script = textwrap.dedent("""
        import sys
        from bot.ops.scheduler import WatchedScheduler
        def broken(self):
            raise RuntimeError("the loop is broken")
        WatchedScheduler._process_jobs = broken
        from bot.cli import main
        sys.exit(main(["run"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "bot.log", "ab"))
    try:
        assert proc.wait(60) == 3
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    log = (tmp_path / "bot.log").read_text()
    assert "stopping: the scheduler stopped (RuntimeError: the loop is broken) and could not be restarted" in log
    assert sum("could not be restarted" in t for t in said(slack)) == 1
    assert "the bot has stopped: the scheduler stopped" in (tmp_path / "c.db.health.json").read_text()
