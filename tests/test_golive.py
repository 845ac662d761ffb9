"""Go-live and rollback against the keepalived lab (real keepalived, sshd, HTTP in network namespaces),
the Slack stand-in and the DigitalOcean stand-in."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from bot.standins.lab import DROPLETS, FLOATING_IP
from bot.store import Store
from tests.conftest import OPERATOR, OUTSIDER, make_lab, reply_text
from tests.golive_support import (BOB, CAROL, DAVE, OK, approvals, approve_both, ephemerals_for, flipped, flips,
                                  lab_plan, make_bot, request, shown, state, text_of, thread_text)
from tests.helpers import FakeClock, latest_runs, wait_settled

# Run on the real lab and on the keepalived stand-in, so the stand-in the demo and laptops use stays true (the
# rest run on it wherever the lab cannot: CUTOVER_LAB=stand-in runs them all on it).
ALSO_ON_THE_STAND_IN = pytest.mark.parametrize("lab", ["keepalived", "stand-in"], indirect=True)


@pytest.fixture
def bot(slack, lab, do, tmp_path):
    local = make_bot(slack, lab, do, tmp_path)
    yield local
    local.stop()


def test_check_reports_every_item(slack, bot):
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    for expected in ("SSH to `old` works", "SSH to `new` works", "holds `true`", "answers from `new`",
                     "keepalived holds VIP 10.213.7.100 on `old`", "DigitalOcean has 203.0.113.10 on droplet 3164444",
                     "every required stage has succeeded", "no other request is open",
                     "keepalived on `old` reads", "keepalived on `new` reads", "cutover-notify.sh`",
                     "DigitalOcean's token sees droplets 3164444 `web-old-01` (`old`) and 3164494 `web-new-01`",
                     "A go-live would find everything ready"):
        assert expected in text, text.replace("\n", " | ")


@ALSO_ON_THE_STAND_IN
def test_happy_path_then_rollback(slack, lab, do, bot):
    req, reply = request(slack, bot)
    assert reply == "Go-live #1 posted; it needs 2 approval(s) within 15m 00s."
    msg = slack.message("C0LAUNCH", req["message_ts"])
    assert msg["reactions"][0]["name"] == OK and msg["reactions"][0]["users"] == [slack.bot_user_id]
    text = text_of(slack, req["message_ts"])
    assert "*Needs 2 approval(s)* from <@U0BOB>, <@U0CAROL>, <@U0DAVE>" in text
    assert "write `false` to the health file on `old`" in text
    assert "No stage has succeeded yet: the new server has none of the old database's recent writes" in text
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: "(1/2)" in text_of(slack, req["message_ts"]), 10, "one approval shown")
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    assert wait_settled(bot.services, req["id"], 60) == "verified"
    assert lab.vip_holder() == "new"
    assert do.holder(FLOATING_IP) == DROPLETS["new"]
    assert lab.servers["old"].health_file.read_text() == "false\n"
    assert (lab.servers["old"].dir / "health.track").read_text() == "1\n"  # keepalived told at once
    final = shown(slack, req["message_ts"], "Switched to `new` and verified")
    for line in ("approvals complete", "flipped", "first answer from `new`", "DigitalOcean confirmed",
                 "probes without an answer:"):
        assert line in final, (line, final)
    thread = thread_text(slack, req["message_ts"])
    assert "answers from `new`" in thread and "on `new` only" in thread and "droplet 3164494" in thread
    assert len(flips(bot)) == 1
    report = slack.wait_for(lambda: [f for f in slack.files.values() if f.get("completed")
                                     and f["name"] == "cutover-report.md"], 30, "the report after the go-live")
    text = report[0]["content"].decode()
    assert "### Go-live #1: verified" in text and "- Approvals: U0BOB at" in text and "U0CAROL at" in text
    assert "- Verification (passed), towards `new`:" in text and "- Data window:" not in text  # no stage ran

    back, reply = request(slack, bot, kind="rollback")
    assert "needs 1 approval(s)" in reply
    slack.react(OPERATOR, OK, "C0LAUNCH", back["message_ts"])
    assert state(bot, back["id"]) == "open"
    slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
    assert wait_settled(bot.services, back["id"], 60) == "verified"
    assert lab.vip_holder() == "old" and do.holder(FLOATING_IP) == DROPLETS["old"]
    assert lab.servers["old"].health_file.read_text() == "true\n"
    assert (lab.servers["old"].dir / "health.track").read_text() == "0\n"
    shown(slack, back["message_ts"], "Switched to `old` and verified")


def test_every_bypass_is_refused_without_a_flip(slack, lab, do, tmp_path):
    slack.add_user("U0ROBOT", "robot", is_bot=True)
    plan = lab_plan(lab)
    plan["slack"]["approvers"] = [BOB, CAROL, DAVE, "U0ROBOT"]
    clock = FakeClock(datetime.now(timezone.utc))
    local = make_bot(slack, lab, do, tmp_path, plan=plan, clock=clock)
    try:
        req, _ = request(slack, local, user=BOB)
        ts = req["message_ts"]
        other = local.services.notifier.post("some other message")

        slack.react(BOB, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: ephemerals_for(slack, BOB), 10, "a note to the requester")
        assert "You asked for go-live #1, so your approval does not count" in ephemerals_for(slack, BOB)[0]

        slack.react(DAVE, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: approvals(local, req["id"]) == [DAVE], 10, "dave's approval")
        assert slack.react(DAVE, OK, "C0LAUNCH", ts) is None  # Slack itself won't add the same reaction twice
        slack.redeliver(slack.envelopes[-1])
        slack.react(DAVE, "+1", "C0LAUNCH", ts)
        slack.wait_for(lambda: any("Only :white_check_mark: (or the Approve button) counts" in t for t in ephemerals_for(slack, DAVE)), 10,
                       "a note about the emoji")
        assert approvals(local, req["id"]) == [DAVE]

        slack.react(OUTSIDER, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: ephemerals_for(slack, OUTSIDER), 10, "a note to the outsider")
        assert "only the plan's approvers may approve" in ephemerals_for(slack, OUTSIDER)[0]

        slack.react("U0ROBOT", OK, "C0LAUNCH", ts)

        slack.react(CAROL, OK, "C0LAUNCH", other)
        slack.wait_for(lambda: ephemerals_for(slack, CAROL), 10, "a note about the wrong message")
        assert "That message is not a request" in ephemerals_for(slack, CAROL)[0]

        slack.unreact(DAVE, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: approvals(local, req["id"]) == [], 10, "dave's approval withdrawn")
        slack.react(CAROL, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: approvals(local, req["id"]) == [CAROL], 10, "carol's approval")

        clock.advance(timedelta(minutes=16))
        slack.react(DAVE, OK, "C0LAUNCH", ts)
        slack.wait_for(lambda: any("expired" in t for t in ephemerals_for(slack, DAVE)), 10, "a note about expiry")
        assert any("expired" in t for t in ephemerals_for(slack, DAVE))
        slack.wait_for(lambda: state(local, req["id"]) == "expired", 10, "the request to expire")
        slack.wait_for(lambda: "Expired" in text_of(slack, ts), 10, "the expired message")

        assert approvals(local, req["id"]) == [CAROL]
        assert flips(local) == [] and lab.vip_holder() == "old"
        assert lab.servers["old"].health_file.read_text() == "true\n"
        refused = {(e["actor"], json_reason(e)) for e in local.services.store.recent_audit(100)
                   if e["action"] == "approval" and e["outcome"] == "refused"}
        assert {(BOB, "the requester"), (OUTSIDER, "not an approver")} <= refused
        assert "U0ROBOT" not in {e["actor"] for e in local.services.store.recent_audit(100)}
    finally:
        local.stop()


def json_reason(event):
    return json.loads(event["detail"] or "{}").get("reason")


def test_concurrent_and_redelivered_approvals_flip_exactly_once(slack, lab, bot):
    req, _ = request(slack, bot)
    ts = req["message_ts"]
    barrier = threading.Barrier(3)
    envelopes = []

    def approve(user):
        barrier.wait()
        envelopes.append(slack.react(user, OK, "C0LAUNCH", ts))

    threads = [threading.Thread(target=approve, args=(u,)) for u in (BOB, CAROL, DAVE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for env in envelopes:
        slack.redeliver(env)
    assert wait_settled(bot.services, req["id"], 60) == "verified"
    assert len(flips(bot)) == 1
    assert len(bot.services.store.query("SELECT * FROM health_backups")) == 1
    assert lab.vip_holder() == "new"


def test_the_new_server_unhealthy_at_the_threshold_stops_the_flip(slack, lab, bot):
    req, _ = request(slack, bot)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: approvals(bot, req["id"]) == [BOB], 10, "bob's approval")
    lab.set_health("new", "false")
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    assert wait_settled(bot.services, req["id"], 60) == "aborted"
    text = shown(slack, req["message_ts"], "Not switched")
    assert "on `new` holds `false`, expected `true`" in text
    assert flips(bot) == [] and lab.vip_holder() == "old"
    assert lab.servers["old"].health_file.read_text() == "true\n"


def test_keepalived_not_moving_fails_verification_and_rollback_recovers(slack, lab, do, tmp_path):
    plan = lab_plan(lab, verify_timeout="6s")
    for host in plan["hosts"].values():
        host.pop("vrrp_state_file")  # a plan that does not say where keepalived records its state
    local = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        lab.break_check("new")  # running, in FAULT: a preflight that cannot read VRRP states lets it pass
        req, _ = request(slack, local)
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        assert wait_settled(local.services, req["id"], 60) == "unverified"
        text = shown(slack, req["message_ts"], "Verification failed")
        # The flip only lowers old's priority, and new in FAULT never takes the address: old keeps serving.
        assert "VIP 10.213.7.100 is on `old`, expected `new` alone" in text
        assert "never answered from `new` with `web-new-01`; last: HTTP 200 `web-old-01 false`" in text
        assert "`/cutover rollback` switches back" in text
        assert lab.vip_holder() == "old"
        back, _ = request(slack, local, kind="rollback")
        slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
        assert wait_settled(local.services, back["id"], 60) == "verified"
        assert lab.vip_holder() == "old" and lab.servers["old"].health_file.read_text() == "true\n"
    finally:
        local.stop()


def test_digitalocean_errors_are_retried_within_the_timeout(slack, lab, do, bot):
    req, _ = request(slack, bot)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    flipped(slack, lab)
    do.fail_next(429, times=2, path="_ips/", method="GET")
    do.fail_next(500, times=1, path="_ips/", method="GET")
    assert wait_settled(bot.services, req["id"], 60) == "verified"
    shown(slack, req["message_ts"], "DigitalOcean errors retried: 3")


@pytest.mark.parametrize("fault, says", [
    (500, "Unexpected server-side error (server_error, HTTP 500)"),
    ("html", "HTTP 502"),
    ("reset", "the connection was reset"),
    ("hang", "no answer within"),
    ("garbage", "the answer was not JSON"),
])
def test_digitalocean_failing_throughout_is_reported_honestly(slack, lab, do, tmp_path, fault, says):
    local = make_bot(slack, lab, do, tmp_path, plan=lab_plan(lab, verify_timeout="5s"))
    try:
        req, _ = request(slack, local)
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        flipped(slack, lab)
        do.fail_next(fault, times=10_000, path="_ips/", method="GET")
        assert wait_settled(local.services, req["id"], 60) == "unverified"
        text = shown(slack, req["message_ts"], "DigitalOcean gave no usable answer within 5s")
        assert says in text
        assert lab.vip_holder() == "new"
        # Not wedged: the next request is possible, and status no longer calls the switch in progress.
        status = reply_text(slack, slack.command(OUTSIDER, "status"))
        assert "No request is open" in status and "could not be verified" in status, status
        assert "No switch has been made" not in status and ".." not in text
    finally:
        local.stop()


def test_check_answers_with_the_reason_while_digitalocean_hangs(slack, lab, do, bot):
    do.fail_next("hang", times=10_000, path="_ips/", method="GET")
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert "no answer within" in text and "A go-live would stop here" in text, text


def crashed_while_flipping(db, request_id):
    """Leave the database as a bot killed between deciding to flip and confirming it would."""
    store = Store(str(db))
    with store.transaction() as tx:
        tx.execute("UPDATE golive_requests SET state = 'flipping' WHERE id = ?", [request_id])
    store.close()


def test_a_restart_after_the_flip_verifies_and_before_it_changes_nothing(slack, lab, do, tmp_path):
    first = make_bot(slack, lab, do, tmp_path)
    req, _ = request(slack, first)
    first.stop()
    crashed_while_flipping(tmp_path / "g.db", req["id"])
    second = make_bot(slack, lab, do, tmp_path)
    try:
        assert wait_settled(second.services, req["id"], 30) == "interrupted"
        assert lab.vip_holder() == "old" and lab.servers["old"].health_file.read_text() == "true\n"
        slack.wait_for(lambda: "nothing was changed" in thread_text(slack, req["message_ts"]), 10, "the note")
    finally:
        second.stop()

    third = make_bot(slack, lab, do, tmp_path)
    req2, _ = request(slack, third)
    third.stop()
    lab.set_health("old", "false")
    written = lab.servers["old"].health_file.stat().st_mtime
    crashed_while_flipping(tmp_path / "g.db", req2["id"])
    fourth = make_bot(slack, lab, do, tmp_path)
    try:
        assert wait_settled(fourth.services, req2["id"], 60) == "verified"
        assert lab.vip_holder() == "new"
        assert_flip_recorded(fourth, req2["id"], written)
        thread = thread_text(slack, req2["message_ts"])
        assert "restarted just after writing the health file" in thread and "during verification" not in thread
    finally:
        fourth.stop()


def assert_flip_recorded(bot, request_id, written):
    """The flip is in the audit, and its time is the health file's, from the host."""
    audit = [e for e in bot.services.store.recent_audit(200) if e["target"] == f"#{request_id}"]
    assert [e["action"] for e in audit].count("golive-flipped") == 1, audit
    result = json.loads(bot.services.store.get("golive_requests", request_id)["result"])
    assert abs(datetime.fromisoformat(result["flipped_at"]).timestamp() - written) < 0.01


@pytest.mark.parametrize("landed", [True, False])
def test_a_restart_that_cannot_read_the_old_server_says_unknown_until_it_can(slack, lab, do, tmp_path, landed):
    first = make_bot(slack, lab, do, tmp_path)
    req, _ = request(slack, first)
    first.stop()
    if landed:
        lab.set_health("old", "false")
    written = lab.servers["old"].health_file.stat().st_mtime
    crashed_while_flipping(tmp_path / "g.db", req["id"])
    lab.ssh_down("old")
    second = make_bot(slack, lab, do, tmp_path)
    try:
        slack.wait_for(lambda: state(second, req["id"]) == "unknown", 30, "the request to be unknown")
        shown(slack, req["message_ts"], "Unknown whether the switch was made")
        slack.wait_for(lambda: "*unknown*" in thread_text(slack, req["message_ts"]), 10,
                       "the thread to say unknown")  # posted just after the message is updated
        assert "nothing was changed" not in thread_text(slack, req["message_ts"])
        status = reply_text(slack, slack.command(OUTSIDER, "status"), timeout=30)
        assert "unknown whether the switch was made" in status and "No switch has been made" not in status
        assert "is still in progress" in reply_text(slack, slack.command(OPERATOR, "rollback"), timeout=30) \
            or "still open" in reply_text(slack, slack.command(OPERATOR, "rollback"), timeout=30)
        lab.ssh_up("old")
        final = wait_settled(second.services, req["id"], 60)
        slack.wait_for(lambda: "Now known" in thread_text(slack, req["message_ts"]), 10, "the thread to say which")
        thread = thread_text(slack, req["message_ts"])
        if landed:
            assert final == "verified" and "Now known: the switch was made" in thread
            assert_flip_recorded(second, req["id"], written)
        else:
            assert final == "aborted" and "Now known: the switch was *not* made" in thread
            assert "nothing was changed" in thread and lab.vip_holder() == "old"
    finally:
        lab.ssh_up("old")
        second.stop()


@pytest.mark.vrrp  # a read-only mount in the old server's own mount namespace
def test_a_write_refused_by_the_old_server_is_reported_as_itself_and_leaves_nothing(slack, lab, do, bot):
    health_dir = lab.servers["old"].health_file.parent
    req, _ = request(slack, bot)
    # In the old server's own mount namespace (ip netns exec gives sshd one): its file system turns read-only.
    on_old = ["nsenter", "-t", str(lab.servers["old"].sshd.process.pid), "-m"]
    subprocess.run([*on_old, "mount", "--bind", str(health_dir), str(health_dir)], check=True)
    try:
        subprocess.run([*on_old, "mount", "-o", "remount,bind,ro", str(health_dir)], check=True)
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        assert wait_settled(bot.services, req["id"], 60) == "aborted"
    finally:
        subprocess.run([*on_old, "umount", str(health_dir)], check=True)
    # the thread is told just after the request is recorded as aborted
    slack.wait_for(lambda: "Nothing was changed" in thread_text(slack, req["message_ts"]), 10, "the thread's note")
    thread = thread_text(slack, req["message_ts"])
    assert "Read-only file system" in thread, thread
    assert "lost the SSH connection" not in thread
    assert not [p.name for p in health_dir.iterdir() if ".cutover-" in p.name]
    assert lab.servers["old"].health_file.read_text() == "true\n" and lab.vip_holder() == "old"


def test_the_preflight_requires_the_freezes_the_plan_names(slack, lab, do, tmp_path):
    plan = lab_plan(lab, require_freezes=["content", "registration"])
    clock = FakeClock(datetime.now(timezone.utc))
    local = make_bot(slack, lab, do, tmp_path, plan=plan, clock=clock)
    try:
        text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
        assert "❌ not in effect: `content`, `registration`" in text and "A go-live would stop here" in text
        refused = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
        assert refused.startswith("No go-live was requested: the preflight found problems.")
        reply_text(slack, slack.command(OPERATOR, "freeze content at in 1h"))
        reply_text(slack, slack.command(OPERATOR, "freeze registration at in 1h"))
        clock.advance(timedelta(hours=1))
        local.services.freezes.tick()
        text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
        assert "✅ in effect: `content`, `registration`" in text and "A go-live would find everything ready" in text
    finally:
        local.stop()


def test_status_shows_where_the_last_verified_switch_left_the_floating_ip(slack, lab, bot):
    before = reply_text(slack, slack.command(OUTSIDER, "status"))
    assert "No switch has been made by the bot." in before
    req, _ = request(slack, bot)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: "1/2 approvals, open until" in reply_text(slack, slack.command(OUTSIDER, "status")), 10,
                   "the open request in status")
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    assert wait_settled(bot.services, req["id"], 60) == "verified"
    after = reply_text(slack, slack.command(OUTSIDER, "status"))
    assert "On `new` since" in after and "verified after go-live #1" in after and "No request is open." in after


def test_an_approval_slack_cannot_confirm_is_from_a_person_is_not_counted(slack, lab, do, bot):
    slack.fail_next("users.info", status=500, error="internal_error", times=10)  # the look-ahead at the request too
    req, _ = request(slack, bot)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: any("was not counted" in t for t in ephemerals_for(slack, BOB)), 10, "a note to bob")
    assert approvals(bot, req["id"]) == [] and state(bot, req["id"]) == "open"
    refused = [e for e in bot.services.store.recent_audit(50) if e["action"] == "approval"]
    assert refused and refused[-1]["outcome"] == "refused" and "identity unconfirmed" in refused[-1]["detail"]


def test_removing_a_reaction_after_the_decision_is_answered_plainly(slack, lab, do, bot):
    req, _ = request(slack, bot)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: state(bot, req["id"]) != "open", 10, "the decision")
    slack.unreact(CAROL, OK, "C0LAUNCH", req["message_ts"])
    note = slack.wait_for(lambda: [t for t in ephemerals_for(slack, CAROL) if "still stands" in t], 10, "a note")
    assert "the decision was already taken" in note[0] and "`/cutover rollback`" in note[0]
    assert sorted(approvals(bot, req["id"])) == [BOB, CAROL]
    assert wait_settled(bot.services, req["id"], 60) == "verified"


@pytest.mark.parametrize("role", ["new", "old"])
def test_the_preflight_refuses_when_keepalived_is_not_running(slack, lab, do, bot, role):
    lab.stop_keepalived(role)
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert f"keepalived is not running on `{role}`" in text and "A go-live would stop here" in text, text
    other = "old" if role == "new" else "new"
    assert f"keepalived runs on `{other}`" in text
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested") and not bot.services.records.requests.in_flight()


@ALSO_ON_THE_STAND_IN
def test_the_preflight_refuses_keepalived_wired_to_another_file_or_without_its_notify_script(slack, lab, do, bot):
    old_dir, new_dir = lab.servers["old"].dir, lab.servers["new"].dir
    check = old_dir / "cutover-check.sh"
    check.write_text(check.read_text().replace(str(lab.servers["old"].health_file), "/var/www/other/state"))
    (new_dir / "cutover-notify.sh").unlink()
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert f"keepalived on `old` does not read the health file `{lab.servers['old'].health_file}`" in text, text
    assert f"keepalived's notify script `{new_dir / 'cutover-notify.sh'}` on `new` is missing or not executable" \
        in text, text
    assert "A go-live would stop here" in text
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested") and not bot.services.records.requests.in_flight()


@ALSO_ON_THE_STAND_IN
def test_the_preflight_refuses_a_track_file_left_set_and_a_config_that_does_not_watch_it(slack, lab, do, bot):
    conf = lab.servers["new"].dir / "keepalived.conf"
    conf.write_text(conf.read_text().replace("vrrp_track_file cutover_flip", "vrrp_track_file other")
                    .replace(str(lab.servers["new"].dir / "health.track"), "/var/run/elsewhere"))
    (lab.servers["old"].dir / "health.track").write_text("1\n")
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    track = lab.servers["old"].dir / "health.track"
    assert f"keepalived's track file `{track}` on `old` holds `1`, which tells keepalived to move the address off `old`" in text, text
    assert f"keepalived on `new` does not watch the track file `{lab.servers['new'].dir / 'health.track'}`" in text
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested") and not bot.services.records.requests.in_flight()


@ALSO_ON_THE_STAND_IN
def test_a_track_file_the_old_server_refuses_costs_only_the_checks_interval(slack, lab, do, bot):
    # The old server will not take the track file (its `mv` fails for it alone): the health file still decides.
    refuse = lab.servers["old"].dir / "bin" / "mv"
    refuse.write_text('#!/bin/sh\ncase "$3" in *health.track) echo "mv: Read-only file system" >&2; exit 1;; esac\n'
                      'exec /bin/mv "$@"\n')
    refuse.chmod(0o755)
    try:
        req, _ = request(slack, bot)
        assert approve_both(slack, bot, req, 60) == "verified"
    finally:
        refuse.unlink()
    assert lab.vip_holder() == "new" and lab.servers["old"].health_file.read_text() == "false\n"
    assert (lab.servers["old"].dir / "health.track").read_text().strip() == "0"
    failed = [e for e in bot.services.store.recent_audit(100) if e["action"] == "track-file"]
    assert len(failed) == 1 and failed[0]["outcome"] == "failed" and "Read-only file system" in failed[0]["detail"]
    thread = thread_text(slack, req["message_ts"])
    assert f"keepalived's track file `{lab.servers['old'].dir / 'health.track'}` on `old` was not written" in thread
    assert "keepalived notices the flip at its next check instead" in thread


def test_a_track_file_the_old_server_refuses_on_rollback_keeps_the_address_off_it(slack, lab, do, tmp_path):
    # The go-live's track file (1) stays: keepalived keeps the address off old, and the thread says so.
    local = make_bot(slack, lab, do, tmp_path, plan=lab_plan(lab, verify_timeout="6s"))
    refuse = lab.servers["old"].dir / "bin" / "mv"
    try:
        req, _ = request(slack, local)
        assert approve_both(slack, local, req, 60) == "verified"
        refuse.write_text('#!/bin/sh\ncase "$3" in *health.track) echo "mv: Read-only file system" >&2; exit 1;; '
                          'esac\nexec /bin/mv "$@"\n')
        refuse.chmod(0o755)
        back, _ = request(slack, local, kind="rollback")
        slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
        assert wait_settled(local.services, back["id"], 60) == "unverified"
        thread = thread_text(slack, back["message_ts"])
        assert f"keepalived's track file `{lab.servers['old'].dir / 'health.track'}` on `old` was not written" in thread
        assert "keepalived keeps the address off `old` until it holds 0: write 0 there" in thread
        assert lab.vip_holder() == "new" and lab.servers["old"].health_file.read_text() == "true\n"
        assert (lab.servers["old"].dir / "health.track").read_text().strip() == "1"
    finally:
        refuse.unlink(missing_ok=True)
        local.stop()


def test_the_preflight_refuses_a_token_that_cannot_see_the_droplets(slack, lab, do, bot):
    do.hidden_droplets.add(DROPLETS["new"])
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert f"droplet {DROPLETS['new']} (`new`): DigitalOcean: droplet {DROPLETS['new']}: " in text, text
    assert "the token cannot see it: give it droplet:read" in text and "A go-live would stop here" in text
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested") and not bot.services.records.requests.in_flight()


def test_an_approval_slack_shows_but_the_bot_missed_is_counted_after_a_restart(slack, lab, do, tmp_path):
    first = make_bot(slack, lab, do, tmp_path)
    req, _ = request(slack, first)
    first.stop()
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"], deliver=False)  # acknowledged, never stored
    slack.react(OPERATOR, OK, "C0LAUNCH", req["message_ts"], deliver=False)  # the requester: never counts
    second = make_bot(slack, lab, do, tmp_path)
    try:
        slack.wait_for(lambda: approvals(second, req["id"]) == [BOB], 15, "bob's approval, reconciled")
        shown(slack, req["message_ts"], "(1/2)")
        audit = [e for e in second.services.store.recent_audit(50) if e["action"] == "approval"]
        assert audit[-1]["actor"] == BOB and "after a restart" in audit[-1]["detail"]
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        assert wait_settled(second.services, req["id"], 60) == "verified"
    finally:
        second.stop()


def test_ssh_lost_right_after_the_write_is_unknown_until_the_old_server_answers(slack, lab, do, bot):
    req, _ = request(slack, bot)
    # The write lands, then the command stalls in its read-back (a slow `date` on the old server) while the
    # connection is cut: the bot cannot know whether the write landed.
    slow = lab.servers["old"].dir / "bin" / "date"
    slow.write_text('#!/bin/sh\n[ "$1" = -r ] && sleep 20\nexec /bin/date "$@"\n')
    slow.chmod(0o755)
    try:
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        flipped(slack, lab)
        lab.ssh_down("old")
        slack.wait_for(lambda: state(bot, req["id"]) == "unknown", 30, "the request to be unknown")
        said = lambda: (lambda t: t if "*unknown*" in t else "")(thread_text(slack, req["message_ts"]))  # noqa: E731
        thread = slack.wait_for(said, 10, "the thread to say unknown")  # said just after the state is recorded
        assert "othing was changed" not in thread and "could not be made" not in thread
        slow.unlink()
        lab.ssh_up("old")
        assert wait_settled(bot.services, req["id"], 60) == "verified"
        assert "Now known: the switch was made" in thread_text(slack, req["message_ts"])
        actions = [e["action"] for e in bot.services.store.recent_audit(100) if e["target"] == f"#{req['id']}"]
        assert actions.index("golive-flip-unknown") < actions.index("golive-flipped") < actions.index("golive-verified")
    finally:
        slow.unlink(missing_ok=True)
        lab.ssh_up("old")


@ALSO_ON_THE_STAND_IN
def test_the_preflight_reads_keepalived_states_and_refuses_a_backup_in_fault(slack, lab, do, bot):
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert "keepalived is MASTER on `old` and BACKUP on `new`" in text, text
    lab.break_check("new")
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert "keepalived on `new` is `FAULT`, expected BACKUP" in text and "A go-live would stop here" in text, text


def test_a_request_slack_would_not_post_is_withdrawn_and_blocks_nothing(slack, lab, do, bot):
    slack.fail_next("chat.postMessage", status=200, error="not_in_channel", times=1)
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested: its message could not be posted in the launch channel "
                            "(Slack said `not_in_channel`)"), reply
    assert "Invite the bot" in reply and "posted; it needs" not in reply
    assert state(bot, 1) == "aborted" and not bot.services.records.requests.in_flight()
    assert "golive-withdrawn" in [e["action"] for e in bot.services.store.recent_audit(20)]
    again, reply = request(slack, bot)
    assert reply.startswith("Go-live #2 posted"), reply


def test_an_approval_never_waits_behind_a_lane_full_of_commands(slack, lab, do, tmp_path):
    plan = lab_plan(lab)
    plan["stages"] = [{"name": "hello", "host": "new", "command": "echo hello"}]
    crowd = [f"U0OP{i:02d}" for i in range(10)]
    plan["slack"]["operators"] = plan["slack"]["operators"] + crowd
    local = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        reply_text(slack, slack.command(OPERATOR, "run hello"))
        slack.wait_for(lambda: (latest_runs(local.services.store).get("hello") or {}).get("log_uploaded"), 30,
                       "the stage and its log")
        req, _ = request(slack, local)
        slack.method_delay["files.getUploadURLExternal"] = 20.0  # every command lane thread held by an upload
        crowded = [slack.command(user, "logs hello") for user in crowd]
        for env in crowded:
            slack.wait_ack(env)
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        flipped(slack, lab)
        assert not any(slack.responses_for(env) for env in crowded)  # the approval went first
        counted = [e for e in local.services.store.recent_audit(200) if e["action"] == "approval"]
        assert [e["detail"] for e in counted] == [None, None]  # by their events, not found later by reconciling
        slack.method_delay.clear()
        assert wait_settled(local.services, req["id"], 60) == "verified"
        for env in crowded:
            assert reply_text(slack, env, timeout=60).startswith("The log of `hello`")
    finally:
        slack.method_delay.clear()
        local.stop()


def test_the_threshold_confirms_a_fresh_preflight_quickly_and_runs_a_stale_one_again(slack, lab, do, bot,
                                                                                     monkeypatch):
    req, _ = request(slack, bot)
    assert approve_both(slack, bot, req, 60) == "verified"
    thread = thread_text(slack, req["message_ts"])
    assert "Approvals complete; checked against the preflight of" in thread, thread
    assert "confirmed in" in thread and "Running the preflight again" not in thread
    back, _ = request(slack, bot, kind="rollback")
    from bot.switch import freshness

    monkeypatch.setattr(freshness, "FRESH_FOR", 0.0)  # the request's preflight is already too old to lean on
    slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
    assert wait_settled(bot.services, back["id"], 60) == "verified"
    thread = thread_text(slack, back["message_ts"])
    assert "Running the preflight again before the rollback" in thread and "checked against a full preflight" in thread


def test_an_approval_counts_with_or_without_a_skin_tone_and_either_removal_withdraws_only_the_last(
        slack, lab, do, tmp_path):
    """Slack sends `+1::skin-tone-2` for a person whose default skin tone is set, and `+1` for what a plan may call
    `thumbsup`; such a person must still be able to approve, and to withdraw."""
    plan = lab_plan(lab)
    plan["slack"]["approval_reaction"] = "thumbsup"
    local = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        req, _ = request(slack, local)
        ts = req["message_ts"]
        slack.react(BOB, "+1::skin-tone-2", "C0LAUNCH", ts)
        slack.wait_for(lambda: approvals(local, req["id"]) == [BOB], 10, "bob's toned approval")
        slack.react(BOB, "+1", "C0LAUNCH", ts)  # the same person, both ways: counted once
        slack.unreact(BOB, "+1::skin-tone-2", "C0LAUNCH", ts)
        slack.wait_for(lambda: len([e for e in local.services.store.recent_audit(50) if e["actor"] == BOB]) >= 1, 5,
                       "bob's events")
        time.sleep(1)
        assert approvals(local, req["id"]) == [BOB], "one of two reactions taken back: the approval stands"
        slack.unreact(BOB, "+1", "C0LAUNCH", ts)
        slack.wait_for(lambda: approvals(local, req["id"]) == [], 10, "bob's approval withdrawn")
        slack.react(CAROL, "+1::skin-tone-5", "C0LAUNCH", ts)
        slack.react(DAVE, "+1", "C0LAUNCH", ts)
        assert wait_settled(local.services, req["id"], 60) == "verified"
        assert sorted(approvals(local, req["id"])) == [CAROL, DAVE]
    finally:
        local.stop()


@ALSO_ON_THE_STAND_IN
def test_the_preflight_refuses_keepalived_speaking_vrrp_where_the_private_address_is_not(slack, lab, do, bot):
    """Each server has two interfaces, as droplets do: eth0 public, eth1 private. A configuration that speaks VRRP
    on eth0 would never reach the peer over the private network."""
    conf = lab.servers["new"].dir / "keepalived.conf"
    conf.write_text(conf.read_text().replace("interface eth1", "interface eth0"))
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert ("keepalived on `new` speaks VRRP on `eth0`, but its private address 10.213.7.3 is on `eth1`: the adverts "
            "would not reach the peer and both servers would become master; regenerate with `cutover keepalived "
            "--online`") in text, text
    assert "A go-live would stop here" in text


@pytest.mark.vrrp
def test_without_a_private_vip_keepalived_moves_only_the_reserved_ip_and_the_switch_is_verified(
        request, slack, do, tmp_path):
    """DigitalOcean's own wiring: no address bound by keepalived; its MASTER state and the reserved IP move."""
    from tests.golive_support import request as ask

    lab = make_lab(request, tmp_path, do)
    lab.vip = False
    with lab:
        assert "virtual_ipaddress" not in (lab.servers["old"].dir / "keepalived.conf").read_text()
        local = make_bot(slack, lab, do, tmp_path)
        try:
            check = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
            assert "keepalived is MASTER on `old` alone (`new`: BACKUP); no VIP: it moves the reserved IP only" \
                in check, check
            assert "A go-live would find everything ready" in check
            req, _ = ask(slack, local)
            assert approve_both(slack, local, req, 60) == "verified"
            thread = thread_text(slack, req["message_ts"])
            assert "✅ keepalived is MASTER on `new` alone (`old`: BACKUP)" in thread, thread
            assert lab.vip_holder() is None
        finally:
            local.stop()
