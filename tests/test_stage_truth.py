"""What the bot says of a stage is what happened on its host: cancels, timeouts, end times, late output,
a full disk on the bot's side, late uploads. Real sshd; the host made unreachable by a relay in front of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import parse_time
from bot.local.bot import start_local_bot
from bot.plan import parse_plan
from bot.runbook import follower
from bot.runbook import logs as stage_logs
from bot.standins.netns import Forwarder
from bot.standins.slack import blocks_text
from bot.store import Store
from tests.conftest import OPERATOR, reply_text
from tests.helpers import latest_runs
from tests.stage_support import finished, group_gone, message_text, stage_plan, updates_of, uploaded

TICKS = "i=0; while [ $i -lt {n} ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; echo finished"


@pytest.fixture
def relay(sshd, tmp_path):
    """The test's sshd reached through a relay that can drop the host off the network and bring it back."""
    forwarder = Forwarder((None, "127.0.0.1", 0), (None, "127.0.0.1", sshd.port))
    key = Path(str(sshd.host_key) + ".pub").read_text().split()
    known = tmp_path / "relay_known_hosts"
    known.write_text(f"[127.0.0.1]:{forwarder.port} {key[0]} {key[1]}\n")
    forwarder.entry = {**sshd.host_entry(), "port": forwarder.port, "known_hosts": str(known)}
    yield forwarder
    forwarder.close()


def relayed_bot(slack, sshd, relay, tmp_path, stages_: list[dict]):
    plan = stage_plan(sshd, tmp_path)
    plan["hosts"]["new"] = relay.entry
    plan["stages"] = stages_
    return start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "c.db"))


def running(bot, slack, name):
    return slack.wait_for(lambda: (latest_runs(bot.services.store).get(name) or {}).get("pid"), 15, f"{name}'s pid")


def status_text(slack):
    return reply_text(slack, slack.command(OPERATOR, "status"), timeout=15)


def test_a_cancel_while_the_host_is_away_is_pending_and_delivered_when_it_answers(slack, sshd, relay, tmp_path):
    bot = relayed_bot(slack, sshd, relay, tmp_path, [{"name": "long", "host": "new", "command": TICKS.format(n=150)}])
    try:
        reply_text(slack, slack.command(OPERATOR, "run long"))
        pgid = running(bot, slack, "long")
        relay.pause()
        reply = reply_text(slack, slack.command("U0BOB", "cancel long"), timeout=60)
        assert reply.startswith("Cancel of `long` is *pending*: `new` does not answer"), reply
        run = latest_runs(bot.services.store)["long"]
        assert run["state"] == "running" and run["stop_state"] == "pending"
        assert "cancel pending (asked by <@U0BOB>; the host has not answered)" in status_text(slack)
        slack.wait_for(lambda: "Cancel pending (asked by <@U0BOB>)" in message_text(slack, run["message_ts"]), 15,
                       "the message to say the cancel is pending")
        relay.resume()
        run = finished(bot, "long", timeout=60)
        assert run["state"] == "cancelled" and run["stop_state"] == "sent"
        group_gone(slack, pgid)
        log = uploaded(slack, run)[0]["content"].decode()
        assert log.startswith("tick 0\n") and "finished" not in log
        slack.wait_for(lambda: "stopped by <@U0BOB>" in message_text(slack, run["message_ts"]), 15, "final message")
        actions = [a["action"] for a in bot.services.store.query("SELECT action FROM audit ORDER BY id")]
        assert actions.index("stage-cancel") < actions.index("stage-stop-delivered") < actions.index(
            "stage-cancelled")
    finally:
        relay.resume()
        bot.stop()


def test_a_cancel_that_reaches_the_host_after_the_stage_ended_leaves_the_true_outcome(slack, sshd, relay, tmp_path):
    bot = relayed_bot(slack, sshd, relay, tmp_path, [{"name": "brief", "host": "new",
                                                       "command": "sleep 2; echo finished"}])
    try:
        reply_text(slack, slack.command(OPERATOR, "run brief"))
        running(bot, slack, "brief")
        relay.pause()
        assert "*pending*" in reply_text(slack, slack.command("U0BOB", "cancel brief"), timeout=60)
        remote_dir = Path(latest_runs(bot.services.store)["brief"]["remote_dir"])
        slack.wait_for(lambda: (remote_dir / "exit").exists(), 15, "the stage to end on its host")
        relay.resume()
        run = finished(bot, "brief", timeout=60)
        assert run["state"] == "succeeded" and run["exit_code"] == 0 and run["stop_state"] == "too late"
        assert run["detail"] == "it ended before the cancel by <@U0BOB> reached `new`"
        assert uploaded(slack, run)[0]["content"] == b"finished\n"
        assert not (remote_dir / "stop").exists()
    finally:
        relay.resume()
        bot.stop()


def test_the_timeout_holds_and_the_end_time_comes_from_the_host_while_the_bot_is_down(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan["stages"].append({"name": "brief", "host": "new", "command": "sleep 1; echo done"})
    plan = parse_plan(plan, "p")
    db = str(tmp_path / "down.db")
    first = start_local_bot(slack, plan, db)
    reply_text(slack, slack.command(OPERATOR, "run hang"))
    reply_text(slack, slack.command(OPERATOR, "run brief"))
    pgid = running(first, slack, "hang")
    running(first, slack, "brief")
    run = latest_runs(first.services.store)["hang"]
    first.stop()
    remote_dir = Path(run["remote_dir"])
    slack.wait_for(lambda: (remote_dir / "exit").exists(), 20, "the host to stop the stage at its timeout")
    assert (remote_dir / "stop").read_text().strip() == "timed out"
    group_gone(slack, pgid)
    time.sleep(6)  # the bot stays down well past the stage's end
    second = start_local_bot(slack, plan, db)
    try:
        run = finished(second, "hang")
        assert run["state"] == "timed out" and run["detail"] == "stopped after its 2s timeout"
        took = parse_time(run["ended_at"]) - parse_time(run["started_at"])
        assert timedelta(seconds=1) < took < timedelta(seconds=5), took
        brief = finished(second, "brief")
        assert brief["state"] == "succeeded"
        assert parse_time(brief["ended_at"]) - parse_time(brief["started_at"]) < timedelta(seconds=4)
        slack.wait_for(lambda: re.search(r"timed out\* after [1-4]s", message_text(slack, run["message_ts"])), 15,
                       "the final message")
    finally:
        second.stop()


def test_output_after_the_command_exits_is_kept_and_processes_left_running_are_named(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [
        {"name": "late", "host": "new", "command": "echo main; (sleep 1; echo child-late) & echo main-done"},
        {"name": "outlives", "host": "new", "command": "sleep 300 & echo started"},
    ]
    bot = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "c.db"))
    pgid = None
    try:
        reply_text(slack, slack.command(OPERATOR, "run late"))
        run = finished(bot, "late")
        assert run["state"] == "succeeded" and run["detail"] is None
        assert uploaded(slack, run)[0]["content"] == b"main\nmain-done\nchild-late\n"
        reply_text(slack, slack.command(OPERATOR, "run outlives"))
        run = finished(bot, "outlives")
        pgid = run["pid"]
        assert run["state"] == "succeeded"
        assert f"processes it started still run on `new` (process group {pgid})" in run["detail"]
        os.killpg(pgid, 0)  # raises if the group is gone
        slack.wait_for(lambda: "processes it started still run" in message_text(slack, run["message_ts"]), 15,
                       "the message to name them")
    finally:
        if pgid:
            os.killpg(pgid, signal.SIGKILL)
        bot.stop()


@pytest.fixture
def full_log_disk(tmp_path):
    """A 64 KiB filesystem where the bot keeps its copies of stage logs (root only), grown when told."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the bot's logs needs root")
    logs = tmp_path / "disk-logs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(logs)], check=True)
    yield lambda: subprocess.run(["mount", "-o", "remount,size=16m", str(logs)], check=True)
    subprocess.run(["umount", "-l", str(logs)], check=False)


def test_following_outlasts_a_full_disk_says_why_and_loses_nothing(slack, sshd, tmp_path, full_log_disk,
                                                                   monkeypatch, caplog):
    monkeypatch.setattr(follower, "RETRY_FIRST", 0.2)
    monkeypatch.setattr(follower, "RETRY_MOST", 0.4)
    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [{"name": "bulk", "host": "new", "command": "seq 1 40000; sleep 1; echo done"}]
    bot = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "disk.db"))
    try:
        reply_text(slack, slack.command(OPERATOR, "run bulk"))
        failures = lambda: [r for r in caplog.records if r.getMessage().startswith("following run 1 failed")]  # noqa
        slack.wait_for(lambda: len(failures()) >= 8, 60, "following to have failed more often than it once gave up")
        run = latest_runs(bot.services.store)["bulk"]
        assert run["state"] in ("running", "starting") and run["log_uploaded"] == 0
        slack.wait_for(lambda: "following stopped: no space left on the bot's disk for the log"
                       in message_text(slack, run["message_ts"]), 15, "the message to say why")
        full_log_disk()
        run = finished(bot, "bulk", timeout=60)
        assert run["state"] == "succeeded"
        expected = "".join(f"{i}\n" for i in range(1, 40001)) + "done\n"
        assert uploaded(slack, run)[0]["content"].decode() == expected
        thread = [m["text"] for m in slack.messages("C0LAUNCH", run["message_ts"])]
        said = [t for t in thread if "no space left on the bot's disk" in t]
        assert len(said) == 1 and said[0].startswith("⚠️ Following `bulk` stopped"), thread
        assert any(t.startswith("Following `bulk` again, from byte") for t in thread), thread
    finally:
        bot.stop()


def run_and_note(slack, bot, name, words, timeout):
    """Run a stage; its run once its message is posted, and the notes in its thread that say ``words``."""
    reply_text(slack, slack.command(OPERATOR, f"run {name}"))
    store = bot.services.store
    run = slack.wait_for(lambda: (lambda r: r if r and r["message_ts"] else None)(latest_runs(store).get(name)),
                         15, "the run's message")
    notes = slack.wait_for(lambda: [m for m in slack.messages("C0LAUNCH", run["message_ts"]) if words in m["text"]],
                           timeout, f"the thread to say {words!r}")
    return run, notes


def test_a_failed_log_upload_is_said_late_and_retried_until_slack_takes_it(slack, stage_bot, monkeypatch):
    monkeypatch.setattr(stage_logs, "UPLOAD_RETRY_FIRST", 0.3)
    slack.fail_next("files.getUploadURLExternal", status=500, error="internal_error")
    slack.fail_next("upload", status=502, html=True)
    slack.fail_next("files.completeUploadExternal", status=503, html=True)
    run, late = run_and_note(slack, stage_bot, "quick", "is late", 15)
    assert late[0]["text"].startswith("⏳ The full log of `quick` is late: the upload failed (internal_error)")
    assert "succeeded" in message_text(slack, run["message_ts"])  # the final state did not wait for the log
    run = finished(stage_bot, "quick", timeout=30)
    files = uploaded(slack, run)
    assert len(files) == 1 and files[0]["content"].startswith(b"hello\n")
    assert len([m for m in slack.messages("C0LAUNCH", run["message_ts"]) if "is late" in m["text"]]) == 1
    assert [c["status"] for c in slack.calls_of("files.getUploadURLExternal")] == [500, 200, 200, 200]


def test_two_runs_of_one_stage_never_share_a_directory_on_the_host(sshd, tmp_path):
    from bot.runbook.remote import RemoteRuns
    from bot.ssh import SSHPool

    plan = parse_plan(stage_plan(sshd, tmp_path), "p")
    pool = SSHPool(plan.hosts)
    try:
        remote = RemoteRuns(pool)
        stage = plan.stage("quick")
        dirs = [remote.prepare(stage, 1) for _ in range(3)]  # the same stage and run id, within one second
        assert len(set(dirs)) == 3, dirs
        assert all(Path(d, "run.sh").exists() for d in dirs)
    finally:
        pool.close()


def test_a_progress_update_held_by_a_slow_slack_never_lands_after_the_final_state(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run slow"))
    store = stage_bot.services.store
    slack.wait_for(lambda: slack.calls_of("chat.update"), 15, "a first progress update")
    slack.hold_next("chat.update", 4.0)  # the next update is answered, and applied, only after 4 s
    run = finished(stage_bot, "slow", timeout=60)
    slack.wait_for(lambda: store.get("stage_runs", run["id"])["message_final"], 30, "the final state recorded")
    slack.wait_for(lambda: not slack.held(), 15, "the held update to be answered")
    assert "— *succeeded*" in message_text(slack, run["message_ts"])
    applied = updates_of(slack, run["message_ts"])
    assert "succeeded" in str(applied[-1]["params"].get("blocks")), "the last update applied was not the final one"


@pytest.mark.parametrize("slack_refuses", [False, True], ids=["note posted", "note refused"])
def test_a_stopped_bot_says_the_stage_goes_on_and_catches_up_when_back(slack, sshd, tmp_path, slack_refuses):
    from bot.store import Store
    from tests.helpers import latest_runs, start_bot_process, to_toml

    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(stage_plan(sshd, tmp_path)))
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(tmp_path / "bot.db")}

    first = start_bot_process(slack, env, tmp_path)
    try:
        reply_text(slack, slack.command(OPERATOR, "run hold"), timeout=20)
        store = Store(env["CUTOVER_DB"])
        pgid = slack.wait_for(lambda: latest_runs(store)["hold"]["pid"], 15, "the stage's pid")
        ts = latest_runs(store)["hold"]["message_ts"]
        if slack_refuses:
            slack.fail_next("chat.update", status=500, error="internal_error", times=1000)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    log = (tmp_path / "bot.log").read_text()
    assert "stopping: taking no new commands" in log and "keeps running on new while the bot is away" in log
    said = "the bot stopped (a restart or a deploy); the stage keeps running on `new`" in message_text(slack, ts)
    assert said != slack_refuses
    assert ("Slack did not take the note that the bot stopped" in log) == slack_refuses
    os.killpg(pgid, 0)  # the stage itself goes on
    slack.clear_faults()
    updates = len(updates_of(slack, ts))
    second = start_bot_process(slack, env, tmp_path)
    try:
        slack.wait_for(lambda: len(updates_of(slack, ts)) > updates
                       and "the bot stopped" not in message_text(slack, ts), 20, "the message brought up to date")
        assert "— *running*" in message_text(slack, ts)
        assert reply_text(slack, slack.command(OPERATOR, "cancel hold"), timeout=20).startswith("Stopping `hold`")
        slack.wait_for(lambda: latest_runs(store)["hold"]["state"] == "cancelled", 30, "the stage cancelled")
    finally:
        second.terminate()
        second.wait(30)
        store.close()


def test_a_log_slack_never_takes_is_given_up_on_and_the_thread_says_how_to_ask_again(slack, stage_bot, monkeypatch):
    monkeypatch.setattr(stage_logs, "UPLOAD_RETRY_FIRST", 0.2)
    monkeypatch.setattr(stage_logs, "UPLOAD_GIVE_UP", 1.0)
    slack.fail_next("files.getUploadURLExternal", status=500, error="internal_error", times=50)
    run, given_up = run_and_note(slack, stage_bot, "quick", "could not be uploaded", 20)
    store = stage_bot.services.store
    assert "the bot has stopped trying. `/cutover logs quick` uploads it when Slack is back." in given_up[0]["text"]
    assert "(internal_error)" in given_up[0]["text"]
    assert latest_runs(store)["quick"]["log_uploaded"] == 0  # not claimed as uploaded
    slack.clear_faults()
    assert reply_text(slack, slack.command(OPERATOR, "logs quick"), timeout=20).startswith("The log of `quick`")
    assert len(uploaded(slack, latest_runs(store)["quick"])) == 1


def test_run_all_stopped_by_the_bot_says_what_was_left_running_and_what_did_not_start(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    by_name = {s["name"]: s for s in plan["stages"]}
    plan["stages"] = [by_name["hold"], {**by_name["quick"], "depends_on": ["hold"]}]
    bot = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "i.db"))
    store = Store(str(tmp_path / "i.db"))
    pgid = None
    try:
        reply_text(slack, slack.command(OPERATOR, "run all"))
        pgid = slack.wait_for(lambda: (latest_runs(store).get("hold") or {}).get("pid"), 15, "hold to run")
    finally:
        bot.stop()  # the stages' bot stops; the summary is posted before it is gone
    try:
        summary = [m for m in slack.messages() if m["text"] == "`run all` was interrupted"]
        assert len(summary) == 1, [m["text"] for m in slack.messages()]
        text = blocks_text(summary[0]["blocks"])
        assert "⏸️ the bot stopped while `hold` was running; a stage keeps running on its host" in text
        assert "Not started: `quick`; `run all` again once the running ones have ended." in text
        os.killpg(pgid, 0)  # it goes on, as the summary says
        assert "quick" not in latest_runs(store) and latest_runs(store)["hold"]["state"] == "running"
    finally:
        if pgid:
            os.killpg(pgid, signal.SIGKILL)
        store.close()


def test_old_finished_runs_are_pruned_to_keep_runs_per_stage_never_a_running_or_recent_one(sshd, tmp_path):
    """A day of rehearsals left 136 run folders on a host. Starting a run removes the stage's finished runs beyond
    the newest [ssh] keep_runs; a running one, one that ended minutes ago, and another stage's are left alone."""
    import os
    import time
    import uuid

    from bot.runbook.remote import RemoteRuns
    from bot.ssh import SSHPool

    name = f"keep{uuid.uuid4().hex[:8]}"
    data = stage_plan(sshd, tmp_path)
    data["ssh"] = {"keep_runs": 3}
    data["stages"].append({"name": name, "host": "new", "command": "echo kept"})
    plan = parse_plan(data, "p")
    assert plan.keep_runs == 3
    runs = Path.home() / ".cutover" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    hour_ago = time.time() - 3600

    def folder(label: str, age: float, ended: bool = True, recent_exit: bool = False) -> Path:
        d = runs / label
        d.mkdir()
        (d / "log").write_text("x" * 1000)
        if ended:
            (d / "exit").write_text("0 1\n")
            if not recent_exit:
                os.utime(d / "exit", (hour_ago, hour_ago))
        os.utime(d, (time.time() - age, time.time() - age))
        return d

    finished = [folder(f"{name}-{i}-{i:012x}", age=4000 + 60 * i) for i in range(1, 9)]  # 1 is the newest
    running = folder(f"{name}-20-{20:012x}", age=9000, ended=False)
    just_ended = folder(f"{name}-21-{21:012x}", age=10000, recent_exit=True)
    others = [folder(f"{name}-x-1-{1:012x}", age=9000), folder(f"{name}-3-7-{7:012x}", age=9000),
              folder(f"{name}-9-nothex", age=9000)]
    pool = SSHPool(plan.hosts)
    try:
        new = RemoteRuns(pool, plan.keep_runs).prepare(plan.stage(name), 30)
    finally:
        pool.close()
    left = {p.name for p in runs.iterdir() if p.name.startswith(name)}
    try:
        # The three newest finished ones stay; the one whose exit file is minutes old stays whatever its place.
        assert left == {Path(new).name, *(d.name for d in finished[:3]), running.name, just_ended.name,
                        *(d.name for d in others)}, sorted(left)
    finally:
        for label in left:
            subprocess.run(["rm", "-rf", "--", str(runs / label)], check=True)
