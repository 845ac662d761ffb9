"""DigitalOcean witnessed from both sides: its API's record of the assign action (started, completed), and each
droplet's own metadata service asked over SSH; the report times each flip from keepalived to every site."""

from __future__ import annotations

import time

import pytest

from bot.night.report import write_report
from bot.standins.lab import DROPLETS, FLOATING_IP, SITES
from bot.waiting import wait_until
from tests.conftest import OUTSIDER, make_lab, reply_text
from tests.golive_support import BOB, CAROL, OK, approve_both, lab_plan, make_bot, request, shown, thread_text
from tests.helpers import wait_settled

ALSO_ON_THE_STAND_IN = pytest.mark.parametrize("lab", ["keepalived", "stand-in"], indirect=True)


@ALSO_ON_THE_STAND_IN
def test_the_switch_is_timed_from_both_sides_of_digitalocean_and_every_site(slack, lab, do, tmp_path):
    plan = lab_plan(lab)
    plan["sites"] = lab.sites()
    bot = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        check = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
        assert "the metadata of `old` says the reserved IP is active there, that of `new` says not" in check, check
        req, _ = request(slack, bot)
        assert approve_both(slack, bot, req, 60) == "verified"
        assert "✅ the metadata of `new` says the reserved IP is active there, that of `old` says not" in \
            thread_text(slack, req["message_ts"])
        v = bot.services.records.requests.get(req["id"]).verification
        action = max(do.actions.values(), key=lambda a: a.id)
        assert v.action_started_at is not None and v.action_completed_at is not None
        assert v.action_started_at.strftime("%Y-%m-%dT%H:%M:%SZ") == action.started_at
        assert v.action_completed_at >= v.action_started_at
        assert v.master_at is not None and set(v.site_answers) == set(SITES)
        services = bot.services
        md, _, _ = write_report(services.plan, services.records, services.clock.now(), tmp_path / "report")
        report = md.read_text()
        assert "- Timings from the flip (" in report
        assert "keepalived on `new` entered MASTER: " in report and "DigitalOcean's assign action: started " in report
        for site in SITES:
            assert f"  - {site}: first answer from `new` on every moving path " in report
        assert "| site | old | new | reserved IP | VIP |" in report, report
    finally:
        bot.stop()


def test_the_api_saying_new_while_the_new_droplet_says_inactive_is_unverified(slack, lab, do, tmp_path):
    bot = make_bot(slack, lab, do, tmp_path, plan=lab_plan(lab, verify_timeout="6s"))
    try:
        req, _ = request(slack, bot)
        lab.metadata["new"].say("false")  # the droplet has not been told, whatever the API says
        lab.metadata["old"].say("false")
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        assert wait_settled(bot.services, req["id"], 60) == "unverified"
        text = shown(slack, req["message_ts"], "Verification failed")
        assert "the droplets' metadata disagree with the switch: `new` says false, `old` says false" in text, text
        thread = thread_text(slack, req["message_ts"])
        assert "✅ DigitalOcean has 203.0.113.10 on droplet 3164494 (`new`)" in thread
    finally:
        bot.stop()


def test_a_metadata_service_that_cannot_be_asked_refuses_the_go_live(slack, lab, do, tmp_path):
    plan = lab_plan(lab)
    plan["hosts"]["new"]["metadata_url"] = "http://127.0.0.1:9/metadata/v1"  # nothing listens there
    bot = make_bot(slack, lab, do, tmp_path, plan=plan)
    try:
        text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
        assert "`new` says nothing (curl exited 7" in text and "A go-live would stop here" in text, text
    finally:
        bot.stop()


@pytest.mark.vrrp
@pytest.mark.parametrize("reassert", [True, False], ids=["generated", "without-the-reassert"])
def test_after_a_split_the_reserved_ip_ends_on_the_real_masters_droplet(request, slack, do, tmp_path, reassert):
    """The adverts between the servers are lost for a few seconds: both become master, and the backup's notify
    script moves the reserved IP to its own droplet. Once they flow again, the real master re-asserts it (the
    generated files); without the re-assert the IP stays on the backup's droplet while old serves the VIP."""
    lab = make_lab(request, tmp_path, do)
    lab.reassert = reassert
    with lab:
        lab.split("new")
        wait_until(lambda: lab.vip_holder() == "both", 15, "both servers to take the VIP")
        wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["new"] and not do.busy(FLOATING_IP), 15,
                   "the backup to assign the reserved IP to itself")
        time.sleep(2)  # a split of a few seconds
        lab.heal("new")
        wait_until(lambda: lab.vip_holder() == "old", 15, "the VIP back on old alone")
        bot = make_bot(slack, lab, do, tmp_path)
        try:
            if reassert:
                wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"] and not do.busy(FLOATING_IP), 20,
                           "the real master to re-assert the reserved IP")
                assert "a lower-priority advert while MASTER" in (lab.servers["old"].dir / "notify.log").read_text()
                text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
                for line in ("DigitalOcean has 203.0.113.10 on droplet 3164444 (`old`)",
                             "keepalived holds VIP 10.213.7.100 on `old` only",
                             "the metadata of `old` says the reserved IP is active there, that of `new` says not",
                             "A go-live would find everything ready"):
                    assert line in text, text
            else:
                time.sleep(4)  # long enough for any re-assert to have landed
                assert do.holder(FLOATING_IP) == DROPLETS["new"]
                text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
                assert "DigitalOcean has 203.0.113.10 on droplet 3164494, expected 3164444 (`old`)" in text, text
                assert "A go-live would stop here" in text
        finally:
            bot.stop()
