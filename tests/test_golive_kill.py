"""The bot as a real process, killed (SIGKILL) at each step of a go-live and started again, with and without
SSH to the old server: the final message, `status`, the audit log and the database agree with the world.

Each step is held open by the world, not by the bot's code: an `ip` on the old server that stalls holds the
re-check at the threshold (its VIP check); a slow DigitalOcean answer holds the verification; a `cat` on the
old server that stalls (then fails) holds the write after the backup; a `date` that stalls holds the
read-back after the write has landed; a watch that stalls holds the final count of the data window. The plan
forwards the old server to the new one at the flip: after a restart the forwarding is on exactly when the
switch was made, and the window is counted once.
"""

from __future__ import annotations

import copy
import json
import os
import signal

import pytest

from bot.plan import OPEN_END
from bot.standins.slack import blocks_text
from bot.store import Store
from tests.conftest import OPERATOR, OUTSIDER, PLAN, reply_text
from tests.helpers import start_bot_process, to_toml
from tests.test_golive import BOB, CAROL, OK

STEPS = ("re-check", "after the backup", "after the write", "verification", "final count")


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def stall(lab, command: str, when: str, then: str) -> None:
    """Make ``command`` on the old server wait 30 s, then ``then``, when called as ``when`` says (shell test);
    other uses (the login shell's own) run the real one."""
    wrapper = lab.servers["old"].dir / "bin" / command
    held = lab.servers["old"].dir / f"holding-{command}"  # there while a call is held: the step is under way
    wrapper.write_text(f'#!/bin/sh\nif {when}; then touch {held}; sleep 30; {then}; fi\nexec /bin/{command} "$@"\n')
    wrapper.chmod(0o755)


def holding(lab, command: str) -> bool:
    return (lab.servers["old"].dir / f"holding-{command}").exists()


def unstall(lab) -> None:
    for wrapper in (lab.servers["old"].dir / "bin").iterdir():
        wrapper.unlink()


def request_row(db):
    store = Store(str(db))
    try:
        rows = store.query("SELECT * FROM golive_requests ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None
    finally:
        store.close()


def audit_actions(db, request_id):
    store = Store(str(db))
    try:
        return [e["action"] for e in store.recent_audit(500) if e["target"] == f"#{request_id}"]
    finally:
        store.close()


@pytest.mark.vrrp  # its stalls wrap the real tools, the stand-in's `ip` among them
@pytest.mark.parametrize("ssh_at_restart", ["up", "down"])
@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_the_channel_status_audit_and_database_agree_with_the_world(
        slack, lab, do, tmp_path, step, ssh_at_restart):
    base = copy.deepcopy(PLAN)
    base.pop("hosts")
    base["stages"] = []
    plan = lab.plan(base)
    # A watch whose final count (a closed window: its end is not the open one) stalls while `stall-count` exists.
    stall_count, counting = tmp_path / "stall-count", tmp_path / "counting"
    plan["data"] = {**lab.forwarding(), "copied_at": "2026-01-01T00:00:00Z", "watches": [{
        "name": "sessions", "host": "old", "losses": "accepted", "timeout": "60s",
        "command": f'if [ "$CUTOVER_UNTIL" != {OPEN_END} ] && [ -e {stall_count} ]; then touch {counting}; '
                   'sleep 30; fi; echo 2; echo "uid 5 active"; echo "uid 6 active"'}]}
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(plan))
    db = tmp_path / "bot.db"
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_DB": str(db),
           "DIGITALOCEAN_ACCESS_TOKEN": do.token, "DIGITALOCEAN_END_POINT": do.end_point}

    first = start_bot_process(slack, env, tmp_path)
    try:
        reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=40)
        assert reply.startswith("Go-live #1 posted"), reply
        row = slack.wait_for(lambda: (lambda r: r if r and r["message_ts"] else None)(request_row(db)), 10,
                             "the request message")
        ts = row["message_ts"]
        if step == "re-check":
            stall(lab, "ip", '[ "$1" = -o ]', "exit 1")  # the VIP check at the threshold: `ip -o -4 addr show`
        elif step == "after the backup":
            stall(lab, "cat", '[ $# -eq 0 ]', "exit 1")  # `cat > tmp`: the write itself
        elif step == "after the write":
            stall(lab, "date", '[ "$1" = -r ]', ":")  # `date -r file`: the read-back after the rename
        elif step == "final count":
            stall_count.touch()
        slack.react(BOB, OK, "C0LAUNCH", ts)
        slack.react(CAROL, OK, "C0LAUNCH", ts)
        if step == "verification":
            slack.wait_for(lambda: request_row(db)["state"] == "flipped", 40, "verification to begin")
            do.fail_next("slow", times=10_000, path="_ips/", method="GET", delay=30)
        expected_state = {"re-check": "deciding", "after the backup": "flipping", "after the write": "flipping",
                          "verification": "flipped", "final count": "verified"}[step]
        slack.wait_for(lambda: request_row(db)["state"] == expected_state, 40, f"the request to be {expected_state}")
        if step == "after the backup":
            store = Store(str(db))
            slack.wait_for(lambda: store.query("SELECT COUNT(*) AS n FROM health_backups")[0]["n"] == 1, 20,
                           "the backup")
            # The command that writes is on its way to the old server once the backup is made; the bot is killed
            # while the server holds the write itself, not before it gets there.
            slack.wait_for(lambda: holding(lab, "cat"), 20, "the write to be held on the old server")
            store.close()
        if step == "after the write":
            slack.wait_for(lambda: lab.servers["old"].health_file.read_text() == "false\n", 20, "the write")
        if step == "final count":
            slack.wait_for(counting.exists, 60, "the final count to begin")
    finally:
        kill(first)
    do.clear_faults()
    unstall(lab)
    stall_count.unlink(missing_ok=True)
    forward_flag = lab.servers["old"].dir / "forward"
    landed = lab.servers["old"].health_file.read_text() == "false\n"
    assert landed == (step in ("after the write", "verification", "final count"))
    assert forward_flag.exists() == (step in ("verification", "final count"))  # forwarded with the flip's record

    if ssh_at_restart == "down":
        lab.ssh_down("old")
    second = start_bot_process(slack, env, tmp_path)
    try:
        if ssh_at_restart == "down" and step in ("after the backup", "after the write"):
            slack.wait_for(lambda: request_row(db)["state"] == "unknown", 40, "the request to be unknown")
            text = slack.wait_for(lambda: (lambda t: t if "Unknown whether the switch was made" in t else None)(
                blocks_text(slack.message("C0LAUNCH", ts).get("blocks"))), 10, "the message to say unknown")
            assert "othing was changed" not in text
            status = reply_text(slack, slack.command(OUTSIDER, "status"), timeout=30)
            assert "unknown whether the switch was made" in status, status
        lab.ssh_up("old")
        final = slack.wait_for(lambda: (lambda r: r if r["state"] not in
                                        ("open", "deciding", "flipping", "flipped", "unknown") else None)(
            request_row(db)), 90, "the request to settle")
        world_switched = lab.servers["old"].health_file.read_text() == "false\n"
        assert world_switched == landed
        text = slack.wait_for(lambda: (lambda t: t if ("Switched to" in t or "Not switched" in t or "Interrupted"
                                                       in t) else None)(
            blocks_text(slack.message("C0LAUNCH", ts).get("blocks"))), 20, "the final message")
        actions = audit_actions(db, final["id"])  # the message is updated after the audit entry is written
        thread = "\n".join(m["text"] for m in slack.messages("C0LAUNCH", ts))
        status = reply_text(slack, slack.command(OUTSIDER, "status"), timeout=30)
        if landed:
            assert final["state"] == "verified", final
            assert actions.count("golive-flipped") == 1, actions
            assert "golive-verified" in actions and "Switched to `new` and verified" in text
            assert "othing was changed" not in thread and "othing was changed" not in text
            assert lab.vip_holder() == "new"
            assert (lab.servers["old"].dir / "health.track").read_text() == "1\n"  # told after a restart too
            assert forward_flag.exists()  # forwarding at the flip, after a restart too
            windows = slack.wait_for(lambda: [m["text"] for m in slack.messages("C0LAUNCH", ts)
                                              if "data window closed" in m["text"]], 60, "the final count")
            assert "(when the old server began forwarding to the new one)" in windows[0]
            if "sessions unknown" in windows[0]:  # counted while SSH to the old server was down: said, then again
                assert ssh_at_restart == "down", windows
                again = reply_text(slack, slack.command(OUTSIDER, "losses"), timeout=60)
                assert "from the copy to the switch" in again and "*sessions* (accepted): 2" in again, again
            else:
                assert "the old server took 2 sessions (accepted)" in windows[0], windows
            assert "On `new` since" in status and "verified after go-live #1" in status
            windows = [m["text"] for m in slack.messages("C0LAUNCH", ts) if "data window closed" in m["text"]]
            assert len(windows) == 1, windows  # counted once, whenever the bot stopped
            written = lab.servers["old"].health_file.stat().st_mtime
            flipped_at = json.loads(final["result"])["flipped_at"]
            from datetime import datetime
            assert abs(datetime.fromisoformat(flipped_at).timestamp() - written) < 0.01
        else:
            assert final["state"] in ("interrupted", "aborted"), final
            assert "golive-flipped" not in actions, actions
            assert "othing was changed" in text or "othing was changed" in thread
            # VRRP may flap for an advert or two on a loaded machine; where it settles is the truth.
            slack.wait_for(lambda: lab.vip_holder() == "old", 10, "keepalived's address to be on old")
            assert not forward_flag.exists() and "data window closed" not in thread
            assert "No switch has been made by the bot." in status and "No request is open." in status
    finally:
        lab.ssh_up("old")
        second.terminate()
        second.wait(10)
