"""Stages run detached over real SSH (OpenSSH sshd on 127.0.0.1), followed into Slack (the stand-in)."""

from __future__ import annotations

import os
import signal
import subprocess
import time



from bot.local.bot import start_local_bot
from bot.plan import parse_plan
from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, reply_text
from tests.helpers import latest_runs, rss_kb, start_bot_process, start_sshd, to_toml
from tests.stage_support import SLOW_OUTPUT, finished, group_gone, message_text, stage_plan, updates_of, uploaded

def test_a_successful_stage_reaches_slack_with_its_exit_code(slack, stage_bot):
    reply = reply_text(slack, slack.command(OPERATOR, "run quick"))
    assert reply.startswith("Started `quick`")
    run = finished(stage_bot, "quick")
    assert run["state"] == "succeeded" and run["exit_code"] == 0
    files = uploaded(slack, run)
    assert len(files) == 1 and files[0]["content"] == b"hello\nProcessed 1/2\nProcessed 2/2\ndone\n"
    slack.wait_for(lambda: "succeeded" in message_text(slack, run["message_ts"]), 10, "the final message")
    text = message_text(slack, run["message_ts"])
    assert "*quick* on `new` — *succeeded* in" in text and "(exit 0)" in text
    assert "100% (2 / 2)" in text and "done" in text


def test_a_failing_stage_is_reported_with_its_exit_code_and_notable_lines(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run fails"))
    run = finished(stage_bot, "fails")
    assert run["state"] == "failed" and run["exit_code"] == 3
    slack.wait_for(lambda: "(exit 3)" in message_text(slack, run["message_ts"]), 10, "the final message")
    thread = [blocks_text(m.get("blocks")) or m["text"] for m in slack.messages("C0LAUNCH", run["message_ts"])]
    assert any("ERROR: disk full" in t for t in thread)
    status = reply_text(slack, slack.command(OPERATOR, "status"))
    assert "*fails* on `new` — failed" in status and "exit 3" in status


def test_dependencies_must_have_succeeded(slack, stage_bot):
    text = reply_text(slack, slack.command(OPERATOR, "run after-quick"))
    assert text == "`after-quick` needs `quick` to have succeeded first: `quick` has not run."
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    finished(stage_bot, "quick")
    assert reply_text(slack, slack.command(OPERATOR, "run after-quick")).startswith("Started `after-quick`")
    assert finished(stage_bot, "after-quick")["state"] == "succeeded"


def test_one_run_of_a_stage_at_a_time(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run slow"))
    second = reply_text(slack, slack.command(OPERATOR, "run slow"))
    assert "`slow` is already running" in second and "`cancel slow` stops it" in second
    finished(stage_bot, "slow")


def test_run_all_stops_at_the_first_failure(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [s for s in plan["stages"] if s["name"] in ("quick", "fails", "after-fails")]
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "all.db"))
    try:
        assert reply_text(slack, slack.command(OPERATOR, "run all")).startswith("Running the stages not yet done")
        summary = slack.wait_for(lambda: [m for m in slack.messages() if m["text"] == "`run all` finished"], 60,
                                 "the run all summary")
        text = blocks_text(summary[0]["blocks"])
        assert "`quick` succeeded" in text and "`fails` failed" in text
        assert "stopped after `fails`: `after-fails` not started" in text
        assert "after-fails" not in latest_runs(local.services.store)
    finally:
        local.stop()


def test_cancel_stops_the_whole_process_group(slack, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run hold"))
    slack.wait_for(lambda: (latest_runs(stage_bot.services.store)["hold"]["pid"]), 10, "the stage's pid")
    run = latest_runs(stage_bot.services.store)["hold"]
    assert reply_text(slack, slack.command("U0BOB", "cancel hold")).startswith("Stopping `hold`")
    run = finished(stage_bot, "hold")
    assert run["state"] == "cancelled"
    group_gone(slack, run["pid"])
    slack.wait_for(lambda: "stopped by <@U0BOB>" in message_text(slack, run["message_ts"]), 10, "the final message")


def test_a_stage_past_its_timeout_is_stopped_and_reported(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "t.db"))
    try:
        reply_text(slack, slack.command(OPERATOR, "run hang"))
        run = finished(local, "hang", timeout=30)
        assert run["state"] == "timed out"
        group_gone(slack, run["pid"])
        slack.wait_for(lambda: "stopped after its 2s timeout" in message_text(slack, run["message_ts"]), 10, "msg")
    finally:
        local.stop()


def test_an_unknown_host_key_is_refused_with_how_to_add_it(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    plan["hosts"]["new"]["known_hosts"] = str(empty)
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "k.db"))
    try:
        text = reply_text(slack, slack.command(OPERATOR, "run quick"))
        assert f"the host key of `new` ([127.0.0.1]:{sshd.port}) is not in {empty}; refusing to connect" in text
        assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in text
        assert empty.read_text() == ""
        run = latest_runs(local.services.store)["quick"]
        assert run["state"] == "failed"
        shown = message_text(slack, run["message_ts"])
        assert "— *failed*" in shown and "could not start: the host key of `new`" in shown
    finally:
        local.stop()


def test_a_changed_host_key_is_refused(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join((other.with_suffix(".pub")).read_text().split()[:2]) + "\n")
    plan["hosts"]["new"]["known_hosts"] = str(wrong)
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "w.db"))
    try:
        text = reply_text(slack, slack.command(OPERATOR, "run quick"))
        assert "has CHANGED since it was recorded" in text and "Refusing to connect" in text
    finally:
        local.stop()


def test_a_jump_host_carries_the_connection(slack, sshd, tmp_path):
    bastion = start_sshd(tmp_path / "bastion", client_key=sshd.client_key, log_level="DEBUG1")
    try:
        plan = stage_plan(sshd, tmp_path)
        plan["hosts"]["bastion"] = bastion.host_entry()
        plan["hosts"]["new"]["jump"] = "bastion"
        local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "j.db"))
        try:
            reply_text(slack, slack.command(OPERATOR, "run quick"))
            assert finished(local, "quick")["state"] == "succeeded"
            assert f"target 127.0.0.1 port {sshd.port}" in bastion.log.read_text()
        finally:
            local.stop()
    finally:
        bastion.stop()


def test_the_ssh_connection_cut_mid_stage_loses_nothing(slack, sshd, stage_bot):
    reply_text(slack, slack.command(OPERATOR, "run slow"))
    slack.wait_for(lambda: latest_runs(stage_bot.services.store)["slow"]["log_offset"] > 200, 10, "some output")
    assert sshd.cut_connections() >= 1
    run = finished(stage_bot, "slow")
    assert run["state"] == "succeeded"
    files = uploaded(slack, run)
    assert len(files) == 1 and files[0]["content"].decode() == SLOW_OUTPUT


def test_slack_text_never_reaches_a_shell(slack, stage_bot, tmp_path):
    marker = tmp_path / "pwned"
    attempts = [f"run ; touch {marker}", f"run $(touch {marker})", f"run `touch {marker}`",
                f"run quick; touch {marker}", f"cancel quick && touch {marker}", f"logs |touch {marker}",
                f"run quick$(touch {marker})"]
    for text in attempts:
        reply = reply_text(slack, slack.command(OPERATOR, text))
        assert "is not a stage of the plan" in reply or "Name one stage" in reply, (text, reply)
    time.sleep(0.5)
    assert not marker.exists()
    assert latest_runs(stage_bot.services.store) == {}


def test_a_token_printed_by_a_stage_is_redacted_everywhere(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [{"name": "leak", "host": "new",
                       "command": f"echo 'error: auth with {slack.bot_token} failed'; echo password=hunter2"}]
    plan["redact"] = [r"password=\S+"]
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "r.db"))
    try:
        reply_text(slack, slack.command(OPERATOR, "run leak"))
        run = finished(local, "leak")
        slack.wait_for(lambda: "succeeded" in message_text(slack, run["message_ts"]), 10, "the final message")
        everything = repr(slack.all_messages()) + repr([f["content"] for f in slack.files.values()])
        assert slack.bot_token not in everything and "hunter2" not in everything
        assert "error: auth with [redacted] failed" in everything and "[redacted]" in files_text(slack, run)
    finally:
        local.stop()


def files_text(slack, run):
    return "".join(f["content"].decode() for f in uploaded(slack, run))


def test_a_flood_of_output_keeps_slack_calls_bounded_and_memory_flat(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [{"name": "flood", "host": "new",
                       "command": "seq 1 200000 | sed 's/^/row /; 50000s/$/ error here/'; echo finished"}]
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "f.db"))
    try:
        before = rss_kb()
        started = time.monotonic()
        reply_text(slack, slack.command(OPERATOR, "run flood"))
        run = finished(local, "flood", timeout=120)
        elapsed = time.monotonic() - started
        grown_mb = (rss_kb() - before) / 1024
        updates = updates_of(slack, run["message_ts"])
        assert len(updates) <= elapsed + 3, (len(updates), elapsed)
        content = files_text(slack, run)
        assert content.count("\n") == 200001 and content.endswith("row 200000\nfinished\n")
        assert grown_mb < 64, grown_mb
        thread = slack.messages("C0LAUNCH", run["message_ts"])
        assert len(thread) <= 5
    finally:
        local.stop()


def test_logs_uploads_the_latest_full_log(slack, stage_bot):
    assert reply_text(slack, slack.command(OPERATOR, "logs quick")) == "`quick` has not run yet; there is no log."
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    run = finished(stage_bot, "quick")
    reply = reply_text(slack, slack.command("U0BOB", "logs quick"))
    assert reply.startswith("The log of `quick`")
    assert len(uploaded(slack, run)) == 2


def test_the_bot_killed_and_restarted_mid_stage_resumes_exactly(slack, sshd, tmp_path):
    plan = stage_plan(sshd, tmp_path)
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(plan))
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(tmp_path / "bot.db")}

    def start_bot():
        proc = start_bot_process(slack, env, tmp_path)
        time.sleep(0.3)
        return proc

    first = start_bot()
    try:
        reply_text(slack, slack.command(OPERATOR, "run slow"), timeout=20)
        slack.wait_for(lambda: any("of the slow stage" in (blocks_text(m.get("blocks")) or "")
                                   for m in slack.messages()), 15, "progress in Slack")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    second = start_bot()
    try:
        from bot.store import Store
        store = Store(env["CUTOVER_DB"])
        slack.wait_for(lambda: latest_runs(store)["slow"]["log_uploaded"] == 1, 30, "the stage to finish")
        run = latest_runs(store)["slow"]
        assert run["state"] == "succeeded" and run["exit_code"] == 0
        files = uploaded(slack, run)
        assert len(files) == 1 and files[0]["content"].decode() == SLOW_OUTPUT
        thread = [m["text"] for m in slack.messages("C0LAUNCH", run["message_ts"])]
        assert any(t.startswith("Re-attached to `slow` after a bot restart") for t in thread)
        status = reply_text(slack, slack.command(OPERATOR, "status"), timeout=15)
        assert "*slow* on `new` — succeeded" in status and "exit 0" in status
    finally:
        second.terminate()
        second.wait(10)


def test_rate_limited_updates_still_end_with_the_true_final_message(slack, stage_bot):
    slack.fail_next("chat.update", retry_after=1, times=2)
    reply_text(slack, slack.command(OPERATOR, "run slow"))
    run = finished(stage_bot, "slow")
    slack.wait_for(lambda: "succeeded" in message_text(slack, run["message_ts"]), 15, "the final message")
    statuses = [c["status"] for c in slack.calls_of("chat.update")]
    assert statuses.count(429) == 2 and statuses[-1] == 200


def test_a_restart_finds_runs_the_bot_was_still_launching(slack, sshd, tmp_path):
    from bot.store import Store

    db = tmp_path / "launch.db"
    store = Store(str(db))
    never = store.db["stage_runs"].insert({"stage": "quick", "host": "new", "state": "starting",
                                           "started_by": OPERATOR, "started_at": "2026-12-01T12:00:00+00:00"}).last_pk
    empty_dir = tmp_path / "remote-run"
    empty_dir.mkdir()
    unstarted = store.db["stage_runs"].insert({"stage": "slow", "host": "new", "state": "starting",
                                               "started_by": OPERATOR, "started_at": "2026-12-01T12:00:00+00:00",
                                               "remote_dir": str(empty_dir)}).last_pk
    store.close()
    local = start_local_bot(slack, parse_plan(stage_plan(sshd, tmp_path), "p"), str(db))
    try:
        slack.wait_for(lambda: all(r["state"] == "lost" for r in local.services.store.query(
            "SELECT state FROM stage_runs")), 10, "both runs settled")
        rows = {r["id"]: r for r in local.services.store.query("SELECT * FROM stage_runs")}
        assert "nothing ran" in rows[never]["detail"]
        assert "it did not start" in rows[unstarted]["detail"]
        assert reply_text(slack, slack.command(OPERATOR, "run quick")).startswith("Started `quick`")
    finally:
        local.stop()


def test_a_large_log_is_uploaded_gzipped_whole_and_redacted(slack, sshd, tmp_path):
    import gzip

    plan = stage_plan(sshd, tmp_path)
    plan["stages"] = [{"name": "big", "host": "new",
                       "command": f"seq 1 50000 | sed 's/^/row /'; echo 'token {slack.bot_token}'"}]
    local = start_local_bot(slack, parse_plan(plan, "p"), str(tmp_path / "gz.db"))
    local.services.stages.logs.gzip_above = 64 * 1024
    try:
        reply_text(slack, slack.command(OPERATOR, "run big"))
        run = finished(local, "big")
        files = uploaded(slack, run)
        assert len(files) == 1 and files[0]["name"].endswith(".log.gz")
        text = gzip.decompress(files[0]["content"]).decode()
        assert text.startswith("row 1\nrow 2\n") and "row 50000\n" in text
        assert text.endswith("token [redacted]\n") and slack.bot_token not in text
    finally:
        local.stop()


def test_the_final_state_lands_even_when_slack_refuses_updates_for_a_while(slack, stage_bot):
    slack.fail_next("chat.update", status=500, error="internal_error", times=4)
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    run = finished(stage_bot, "quick")
    slack.wait_for(lambda: "succeeded" in (blocks_text(slack.message("C0LAUNCH", run["message_ts"]).get("blocks"))
                                           or ""), 30, "the final state in the message")
    slack.wait_for(lambda: stage_bot.services.store.get("stage_runs", run["id"])["message_final"] == 1, 10, "it to be recorded")


def test_a_restart_brings_a_message_left_running_to_its_final_state(slack, sshd, tmp_path):
    plan = parse_plan(stage_plan(sshd, tmp_path), "test plan")
    first = start_local_bot(slack, plan, str(tmp_path / "c.db"))
    slack.fail_next("chat.update", status=500, error="internal_error", times=10_000)
    reply_text(slack, slack.command(OPERATOR, "run quick"))
    slack.wait_for(lambda: (latest_runs(first.services.store).get("quick") or {}).get("state") == "succeeded", 30,
                   "the run to end")
    run = latest_runs(first.services.store)["quick"]
    first.stop()
    assert "succeeded" not in (blocks_text(slack.message("C0LAUNCH", run["message_ts"]).get("blocks")) or "")
    slack.clear_faults()
    second = start_local_bot(slack, plan, str(tmp_path / "c.db"))
    try:
        slack.wait_for(lambda: "succeeded" in (blocks_text(slack.message("C0LAUNCH", run["message_ts"])
                                                           .get("blocks")) or ""), 30, "the final state")
    finally:
        second.stop()


def test_a_start_post_slack_refused_is_said_and_posted_when_slack_takes_it(slack, stage_bot):
    slack.fail_next("chat.postMessage", status=200, error="internal_error", times=2)
    reply = reply_text(slack, slack.command(OPERATOR, "run slow"), timeout=20)
    assert reply.startswith("Started `slow` (run 1), but its progress message could not be posted"), reply
    assert "Slack said `internal_error`" in reply
    run = finished(stage_bot, "slow", timeout=60)
    assert run["message_ts"] is not None
    assert "succeeded" in blocks_text(slack.message("C0LAUNCH", run["message_ts"]).get("blocks"))
