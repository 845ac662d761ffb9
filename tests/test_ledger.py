"""The data window, counted against real MariaDB databases holding Drupal 7- and Drupal 10-shaped tables, with the
example plans' own commands over SSH in the lab: what the old server took after the copy, at the preflight, on
the approval card and after the flip; the freezes read back; a content edit refusing the go-live; salvage."""

from __future__ import annotations

import copy
import re
import time
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.plan import parse_plan
from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, make_lab, reply_text
from tests.golive_support import BOB, CAROL, DAVE, OK, approvals, lab_plan, make_bot, request, state, text_of, \
    thread_text
from tests.helpers import FakeClock, latest_runs, wait_settled
from tests.site import DrupalSite, MariaDB, install_on, mysql_home

ROOT = Path(__file__).resolve().parent.parent


class Night:
    """A lab whose servers reach a Drupal site's old and new databases, and a plan from the example."""

    def __init__(self, version: int, tmp_path: Path, lab, old_db: MariaDB, new_db: MariaDB) -> None:
        self.version = version
        self.lab = lab
        self.old = DrupalSite(old_db, version).create()
        self.new = DrupalSite(new_db, version)
        new_db.sql("CREATE DATABASE drupal", database=None)
        for role in ("old", "new"):
            install_on(lab.servers[role].dir, version, old_db, new_db, role)

    def plan(self, **changes) -> dict:
        """The example plan on the lab's servers, its watches, freezes and forwarding as written; the copy stage
        dumps the old database into the new one."""
        example = tomllib.loads((ROOT / f"examples/drupal{self.version}.toml").read_text())
        plan = lab_plan(self.lab, require_freezes=["content", "registration"])
        plan["stages"] = [s for s in example["stages"] if s["name"].startswith("freeze-")]
        for s in plan["stages"]:
            s["host"] = "old"
        plan["stages"].append({"name": "db-dump", "host": "old", "command":
                               "mariadb-dump --single-transaction drupal > dump.sql "
                               "&& mariadb --defaults-group-suffix=_new < dump.sql"})
        plan["freezes"] = example["freezes"]
        plan["data"] = {**example["data"], **self.lab.forwarding()}
        plan.update(changes)
        return plan


@pytest.fixture(params=[7, 10], ids=["drupal7", "drupal10"])
def night(request, tmp_path, do):
    old_db, new_db = MariaDB(tmp_path / "db-old").start(), MariaDB(tmp_path / "db-new").start()
    try:
        with make_lab(request, tmp_path, do, env_of=mysql_home) as lab:
            yield Night(request.param, tmp_path, lab, old_db, new_db)
    finally:
        old_db.stop()
        new_db.stop()


def freeze_both(slack, bot, clock):
    """Schedule the content and registration freezes and move the clock to their start; their start stages turn
    them on, and the bot reads them back."""
    for kind in ("content", "registration"):
        reply_text(slack, slack.command(OPERATOR, f"freeze {kind} at in 2m"))
    clock.advance(timedelta(minutes=3))
    bot.services.freezes.tick()
    for kind in ("content", "registration"):
        slack.wait_for(lambda k=kind: any(f"The {k} freeze holds" in m["text"] for m in slack.all_messages()), 30,
                       f"the {kind} freeze read back")


def copy_now(slack, bot) -> int:
    """Run the copy stage; the moment of the copy (epoch seconds, by the old server's clock)."""
    reply_text(slack, slack.command(OPERATOR, "run db-dump"))
    run = slack.wait_for(lambda: (lambda r: r if r and r["state"] == "succeeded" and r["host_started_at"] else None)(
        latest_runs(bot.services.store).get("db-dump")), 60, "the copy")
    return int(datetime.fromisoformat(run["host_started_at"]).timestamp())


def rows_of(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


def test_the_counts_and_rows_the_bot_reports_are_what_the_database_holds(slack, night, do, tmp_path):
    site = night.old
    clock = FakeClock(datetime.now(timezone.utc))
    bot = make_bot(slack, night.lab, do, tmp_path, plan=night.plan(), clock=clock)
    try:
        freeze_both(slack, bot, clock)
        before = int(time.time()) - 600  # written before the copy: on the new server, not counted
        site.session(3, before)
        site.saved_form(before)
        site.profile_edit(4, before)
        site.content_edit(4701, 2, before)
        since = copy_now(slack, bot)
        now = max(since, int(time.time()))  # what the site writes from now on is after the copy, before the flip
        sessions = [site.session(uid, now) for uid in (5, 6, 7)]
        forms = [site.saved_form(now), site.saved_form(now)]
        for uid in (8, 9):
            site.profile_edit(uid, now)

        req, reply = request(slack, bot)
        assert "posted; it needs 2 approval(s)" in reply
        card = text_of(slack, req["message_ts"])
        assert "*What will be lost* (written to the old server since the copy " in card, card
        assert "): losing 3 sessions, 2 saved forms, 2 profile edits; content edits since the copy: 0." in card, card
        assert "At the flip the old server forwards to the new one, so nothing more is written there" in card
        assert re.search(r"✅ \d+ of \d+ checks passed", card) and "every check is in the thread" in card
        thread = "\n".join(m["text"] + "\n" + blocks_text(m.get("blocks"))
                           for m in slack.messages("C0LAUNCH", req["message_ts"]))
        assert "3 sessions written to the old server since the copy (accepted by the plan" in thread
        assert "0 content edits since the copy: held" in thread
        assert "The content freeze holds: `drush" in thread and "The registration freeze holds" in thread

        buttons = [e for b in slack.message("C0LAUNCH", req["message_ts"])["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]
        confirm = next(e for e in buttons if e["action_id"] == "approve_request")["confirm"]
        assert confirm["style"] == "danger" and "Losing 3 sessions, 2 saved forms, 2 profile edits" in \
            confirm["text"]["text"]

        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.click(CAROL, "C0LAUNCH", req["message_ts"], "approve_request")
        assert wait_settled(bot.services, req["id"], 90) == "verified"
        final = slack.wait_for(lambda: [m["text"] + "\n" + blocks_text(m.get("blocks")) for m in
                                        slack.messages("C0LAUNCH", req["message_ts"]) if "data window closed" in m["text"]],
                               30, "the final count")[0]
        assert "(when the old server began forwarding to the new one)" in final
        assert "the old server took 3 sessions, 2 saved forms, 2 profile edits (accepted); content edits: 0" in final
        uids = {int(u) for u in re.findall(r"uid (\d+) active at", final)}
        assert uids == {5, 6, 7}
        expected = site.db.sql(f"SELECT uid FROM sessions WHERE timestamp >= {since}")
        assert uids == {int(u) for u in expected.split()}
        assert all(f in final for f in forms)
        assert sorted(approvals(bot, req["id"])) == [BOB, CAROL]

        # Salvage: the window's sessions go to the new database, by the example's own command.
        assert night.new.count("SELECT COUNT(*) FROM sessions") == 1  # the one from before the copy
        reply = reply_text(slack, slack.command(OPERATOR, "salvage sessions"), timeout=30)
        assert reply.startswith("Started the salvage of `sessions`"), reply
        slack.wait_for(lambda: (latest_runs(bot.services.store).get("salvage-sessions") or {}).get("state")
                       == "succeeded", 60, "the salvage")
        loaded = night.new.db.sql("SELECT sid FROM sessions").split()
        assert set(sessions) <= set(loaded)
    finally:
        bot.stop()


def test_a_content_edit_after_the_copy_refuses_the_go_live_naming_the_node(slack, night, do, tmp_path):
    clock = FakeClock(datetime.now(timezone.utc))
    bot = make_bot(slack, night.lab, do, tmp_path, plan=night.plan(), clock=clock)
    try:
        freeze_both(slack, bot, clock)
        since = copy_now(slack, bot)
        night.old.content_edit(4711, 12, since + 20)
        text = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=60)
        assert text.startswith("No go-live was requested: the preflight found problems."), text
        assert "1 content edit since the copy" in text and "and there must be none: nid 4711 edited by uid 12 at" in text
        assert "run `db-dump` and the stages after it again" in text and '`losses = "accepted"`' in text
        losses = reply_text(slack, slack.command(OPERATOR, "losses"), timeout=60)
        assert "🛑 *content edits* (must be zero, content freeze): 1" in losses and "nid 4711 edited by uid 12" in losses
        status = reply_text(slack, slack.command(OPERATOR, "status"))
        assert "*Data window*" in status and "content edits since the copy: 1" in status
    finally:
        bot.stop()


def test_a_freeze_that_does_not_read_back_as_frozen_refuses_naming_its_check(slack, night, do, tmp_path):
    clock = FakeClock(datetime.now(timezone.utc))
    bot = make_bot(slack, night.lab, do, tmp_path, plan=night.plan(), clock=clock)
    try:
        freeze_both(slack, bot, clock)
        copy_now(slack, bot)
        night.old.set_maintenance(False)  # someone takes the site out of maintenance mode
        text = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=60)
        check = "drush vget maintenance_mode --exact" if night.version == 7 else "drush state:get system.maintenance_mode"
        assert f"The content freeze does not hold: `{check}` on `old` printed `0`, expected `1`" in text, text
        assert "freeze it, or take it out of `require_freezes`" in text
    finally:
        bot.stop()


@pytest.mark.parametrize("command,why", [
    ("echo 'a gateway page'", "it printed no number (its first line: `a gateway page`)"),
    ("echo 'ERROR 2002: cannot connect' >&2; exit 1", "the command exited 1: ERROR 2002: cannot connect"),
    ("sleep 30", "a command on `old` did not finish within 1s"),
])
def test_a_watch_that_cannot_be_counted_is_unknown_and_refuses(slack, lab, do, tmp_path, command, why):
    plan = lab_plan(lab)
    plan["stages"] = [{"name": "db-dump", "host": "old", "command": "true"}]
    plan["data"] = {"copy_stage": "db-dump", "watches": [
        {"name": "sessions", "host": "old", "losses": "accepted", "command": command, "timeout": "1s"}]}
    bot = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        copy_now(slack, bot)
        text = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=60)
        assert text.startswith("No go-live was requested"), text
        assert f"sessions: *unknown* ({why}" in text and "no go-live on a guess" in text, text
    finally:
        bot.stop()


def test_without_a_copy_there_is_nothing_to_count_and_the_go_live_waits(slack, lab, do, tmp_path):
    plan = lab_plan(lab)
    plan["stages"] = [{"name": "db-dump", "host": "old", "command": "true", "required": False}]
    plan["data"] = {"copy_stage": "db-dump", "watches": [
        {"name": "sessions", "host": "old", "losses": "accepted", "command": "echo 0"}]}
    bot = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        text = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=60)
        assert "`db-dump`, the stage that copies the data, has not succeeded yet" in text, text
    finally:
        bot.stop()


def button_plan(lab) -> dict:
    plan = lab_plan(lab)
    plan["stages"] = [{"name": "db-dump", "host": "old", "command": "true"}]
    plan["data"] = {"copy_stage": "db-dump", "watches": [
        {"name": "sessions", "host": "old", "losses": "accepted", "command": "printf '2\\nuid 5\\nuid 6\\n'"}]}
    return plan


def test_the_approve_button_follows_every_rule_the_reaction_does(slack, lab, do, tmp_path):
    clock = FakeClock(datetime.now(timezone.utc))
    bot = make_bot(slack, lab, do, tmp_path, plan=button_plan(lab), clock=clock)
    try:
        copy_now(slack, bot)
        req, _ = request(slack, bot, user=BOB)
        ts = req["message_ts"]

        def notes(user):
            return [e["text"] for e in slack.ephemerals if e["user"] == user]

        slack.click(BOB, "C0LAUNCH", ts, "approve_request")  # the requester
        slack.wait_for(lambda: any("You asked for go-live #1" in t for t in notes(BOB)), 10, "a note to bob")
        slack.click("U0EVE", "C0LAUNCH", ts, "approve_request")  # not an approver
        slack.wait_for(lambda: any("only the plan's approvers may approve" in t for t in notes("U0EVE")), 10, "eve")
        slack.click(DAVE, "C0LAUNCH", ts, "approve_request")
        slack.wait_for(lambda: approvals(bot, req["id"]) == [DAVE], 10, "dave's approval")
        slack.click(DAVE, "C0LAUNCH", ts, "approve_request")  # twice
        slack.react(DAVE, OK, "C0LAUNCH", ts)  # and by reaction: still once
        slack.wait_for(lambda: sum("already counted" in t for t in notes(DAVE)) == 2, 10, "counted once, twice said")
        assert approvals(bot, req["id"]) == [DAVE] and state(bot, req["id"]) == "open"
        slack.unreact(DAVE, OK, "C0LAUNCH", ts)  # the reaction taken back: the button's approval stands
        time.sleep(1)
        assert approvals(bot, req["id"]) == [DAVE]
        slack.click(DAVE, "C0LAUNCH", ts, "withdraw_approval")
        slack.wait_for(lambda: approvals(bot, req["id"]) == [], 10, "dave's approval withdrawn")
        slack.wait_for(lambda: "(0/2)" in text_of(slack, ts), 10, "the card rewritten")
        slack.click(CAROL, "C0LAUNCH", ts, "approve_request")
        slack.wait_for(lambda: "Approved by <@U0CAROL>" in text_of(slack, ts), 10, "carol on the card")
        bot.services.golive.approvals.reconcile()  # a button's approval is no reaction Slack shows: it stays
        assert approvals(bot, req["id"]) == [CAROL]
        clock.advance(timedelta(minutes=16))
        slack.click(DAVE, "C0LAUNCH", ts, "approve_request")  # expired
        slack.wait_for(lambda: any("expired before your approval" in t for t in notes(DAVE)), 10, "expired")
        assert state(bot, req["id"]) == "expired" and approvals(bot, req["id"]) == [CAROL]
    finally:
        bot.stop()


def test_a_button_and_a_reaction_from_one_person_at_once_count_once(slack, lab, do, tmp_path):
    import threading

    bot = make_bot(slack, lab, do, tmp_path, plan=button_plan(lab))
    try:
        copy_now(slack, bot)
        req, _ = request(slack, bot)
        start = threading.Barrier(2)

        def click():
            start.wait()
            slack.click(DAVE, "C0LAUNCH", req["message_ts"], "approve_request")

        def react():
            start.wait()
            slack.react(DAVE, OK, "C0LAUNCH", req["message_ts"])

        threads = [threading.Thread(target=click), threading.Thread(target=react)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        slack.wait_for(lambda: approvals(bot, req["id"]) == [DAVE], 10, "dave's approval")
        time.sleep(1)
        assert approvals(bot, req["id"]) == [DAVE] and state(bot, req["id"]) == "open"
        audit = [e for e in bot.services.store.recent_audit(50) if e["action"] == "approval" and e["outcome"] == "ok"]
        assert len(audit) == 1
    finally:
        bot.stop()


@pytest.mark.vrrp
def test_forwarding_at_the_flip_answers_from_new_before_the_ip_moves_and_a_rollback_undoes_it(slack, lab, do,
                                                                                              tmp_path):
    """The reserved IP's assignment takes DigitalOcean's time; meanwhile what still reaches the old server is
    answered by the new one: it forwards from the flip on. A rollback stops it."""
    from bot.standins.lab import FLOATING_IP
    from bot.switch.probes import probe

    do.action_delay = 6.0
    plan = copy.deepcopy(button_plan(lab))
    plan["data"].update(lab.forwarding())
    plan["failover"]["verify_timeout"] = "30s"
    bot = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        copy_now(slack, bot)
        req, _ = request(slack, bot)
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        slack.wait_for(lambda: (lab.servers["old"].dir / "forward").exists(), 10, "the forwarding")
        assert do.holder(FLOATING_IP) == 3164444  # DigitalOcean still sends the reserved IP's traffic to old
        answers = [get_in(lab.client_netns(), FLOATING_IP) for _ in range(5)]  # as the public reaches it
        assert all("web-new-01" in a for a in answers), answers
        assert wait_settled(bot.services, req["id"], 60) == "verified"
        thread = thread_text(slack, req["message_ts"])
        assert "forwards every request to the new server since" in thread
        assert "the reserved IP moved" in thread and "the old server forwards to the new one and takes no writes" \
            in thread

        back, _ = request(slack, bot, kind="rollback")
        slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
        assert wait_settled(bot.services, back["id"], 60) == "verified"
        assert not (lab.servers["old"].dir / "forward").exists()
        assert "serves its own requests again" in thread_text(slack, back["message_ts"])
        assert "web-old-01" in probe(plan["failover"]["old_probe_url"], timeout=2).body
    finally:
        bot.stop()


def get_in(netns: str, address: str, port: int = 80) -> str:
    """One GET of the site from inside ``netns``, as a visitor there reaches it; the answer's body."""
    from bot.standins.netns import connect_in

    sock = connect_in(netns, (address, port), timeout=5)
    try:
        sock.settimeout(5)
        sock.sendall(b"GET /health.php HTTP/1.0\r\nHost: www.example.org\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data.decode("utf-8", "replace").split("\r\n\r\n", 1)[-1]
    finally:
        sock.close()


def test_the_plan_checks_the_data_table(tmp_path):
    from bot.plan import PlanError
    from tests.conftest import PLAN

    plan = copy.deepcopy(PLAN)
    plan["data"] = {"copy_stage": "db-imprt", "forward": "x", "watches": [
        {"name": "sessions", "host": "old", "losses": "acepted", "command": "echo 0"},
        {"name": "edits", "host": "olde", "losses": "must-be-zero", "command": "echo 0", "freeze": "contnt"}]}
    with pytest.raises(PlanError) as caught:
        parse_plan(plan, "p.toml")
    errors = "\n".join(caught.value.errors)
    assert "p.toml: data.copy_stage: got 'db-imprt'; expected the name of a stage (did you mean `db-import`?)" in errors
    assert "data.watches[0] (`sessions`).losses: got 'acepted'; expected `accepted`" in errors
    assert "data.watches[1] (`edits`).host: got 'olde'; expected the name of a [hosts.*] entry (did you mean `old`?)" \
        in errors
    assert "data.watches[1] (`edits`).freeze: got 'contnt'; expected a freeze kind" in errors
    assert "data.unforward: missing; expected both `forward` and `unforward`" in errors
    for example in ("drupal7", "drupal10"):
        from bot.plan import load_plan

        loaded = load_plan(ROOT / f"examples/{example}.toml")
        assert [w.losses for w in loaded.data.watches] == ["accepted", "accepted", "accepted", "must-be-zero"]
