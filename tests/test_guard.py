"""The flip the servers guard: two bots (one of them on a stale copy of the database) can never both flip, and a
rollback undoes only the go-live the old server has recorded. Real sshd, the real health file on the old server."""

from __future__ import annotations

import shutil
import threading

import pytest

from bot.standins.slack import SlackStandIn
from bot.switch.failover import FlipRefused
from bot.switch.guard import CLAIM_SUFFIX, UNDONE_SUFFIX
from tests.conftest import OPERATOR, reply_text
from tests.golive_support import BOB, CAROL, OK, make_bot, request, text_of
from tests.helpers import wait_settled

ALSO_ON_THE_STAND_IN = pytest.mark.parametrize("lab", ["keepalived", "stand-in"], indirect=True)


@ALSO_ON_THE_STAND_IN
def test_two_bots_flipping_at_once_make_one_flip_and_the_other_says_whose_it_is(slack, lab, do, tmp_path):
    other_slack = SlackStandIn().start()
    a = make_bot(slack, lab, do, tmp_path, name="a.db")
    b = make_bot(other_slack, lab, do, tmp_path, name="b.db")
    try:
        mine, _ = request(slack, a)
        theirs, _ = request(other_slack, b)
        health = lab.servers["old"].health_file
        outcomes: dict[str, object] = {}
        start = threading.Barrier(2)

        def flip(name, bot, request_id):
            start.wait()
            try:
                outcomes[name] = bot.services.golive.failover.flip(request_id)
            except FlipRefused as exc:
                outcomes[name] = exc

        threads = [threading.Thread(target=flip, args=("a", a, mine["id"])),
                   threading.Thread(target=flip, args=("b", b, theirs["id"]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        refused = [name for name, outcome in outcomes.items() if isinstance(outcome, FlipRefused)]
        assert len(refused) == 1, outcomes
        loser = refused[0]
        winner = "a" if loser == "b" else "b"
        won_id = (mine if winner == "a" else theirs)["id"]
        assert health.read_text() == "false\n"
        claim = (health.parent / (health.name + CLAIM_SUFFIX)).read_text().splitlines()
        assert len(claim) == 1 and claim[0].startswith(f"golive #{won_id}@")
        said = str(outcomes[loser])
        assert said.startswith(f"the server's record says the switch was made by request #{won_id} at ")
        assert "(bot " in said
        written = health.stat().st_mtime_ns

        # The loser recorded what the file held before its attempt, so it has something to restore; the server
        # refuses: the go-live it records is not the loser's.
        losing_bot, winning_bot = (a, b) if loser == "a" else (b, a)
        lost_id = (mine if loser == "a" else theirs)["id"]
        with pytest.raises(FlipRefused, match=f"the switch was made by request #{won_id}"):
            losing_bot.services.golive.failover.restore(lost_id)
        assert health.read_text() == "false\n" and health.stat().st_mtime_ns == written
        # The winner's rollback is the one the server takes, and records.
        saved, _ = winning_bot.services.golive.failover.restore(won_id)
        assert health.read_text() == saved.content
        assert not (health.parent / (health.name + CLAIM_SUFFIX)).exists()
        undone = (health.parent / (health.name + UNDONE_SUFFIX)).read_text().splitlines()
        assert undone[0] == claim[0] and undone[1].startswith(f"rollback #{won_id}@")
        # The same go-live never switches a second time, even asked again after its rollback.
        with pytest.raises(FlipRefused, match="rolled back"):
            winning_bot.services.golive.failover.flip(won_id)
        assert health.read_text() == saved.content
    finally:
        a.stop()
        b.stop()
        other_slack.stop()


def test_a_bot_restored_from_a_stale_copy_finds_its_request_flipped_and_does_not_flip_again(slack, lab, do,
                                                                                           tmp_path):
    """The copy was taken with one approval; the request was approved and flipped after it. The bot started on the
    copy counts the second approval from Slack, and the server tells it the flip is its request's own: it says
    when it was made, and the health file is written once."""
    a = make_bot(slack, lab, do, tmp_path, name="a.db")
    req, _ = request(slack, a)
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.wait_for(lambda: "(1/2)" in text_of(slack, req["message_ts"]), 10, "one approval shown")
    a.services.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(tmp_path / "a.db", tmp_path / "stale.db")  # the replica, as it was then
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    assert wait_settled(a.services, req["id"], 60) == "verified"
    health = lab.servers["old"].health_file
    written = health.stat().st_mtime_ns
    a.stop()  # the machine is gone
    b = make_bot(slack, lab, do, tmp_path, name="stale.db")
    try:
        settled = wait_settled(b.services, req["id"], 90)
        assert health.stat().st_mtime_ns == written, "the stale bot wrote the health file again"
        assert settled == "verified", settled
        audit = [e["action"] for e in b.services.store.recent_audit(200) if e["target"] == f"#{req['id']}"]
        assert audit.count("golive-flipped") == 1, audit
    finally:
        b.stop()


def test_the_preflight_and_status_say_what_the_old_server_records(slack, lab, do, tmp_path):
    from bot.standins.slack import blocks_text

    a = make_bot(slack, lab, do, tmp_path, name="a.db")
    try:
        req, _ = request(slack, a)
        env = slack.command(OPERATOR, "status")
        slack.wait_for(lambda: slack.responses_for(env), 20, "the status reply")
        status = blocks_text(slack.responses_for(env)[-1].get("blocks"))
        assert "holds `true` (no go-live recorded beside it) (as the preflight of go-live #1 read it" in status, \
            status
        a.services.golive.failover.flip(req["id"])
        check = reply_text(slack, slack.command(OPERATOR, "check"), timeout=60)
        assert f"the switch was made by request #{req['id']} at " in check, check
    finally:
        a.stop()
