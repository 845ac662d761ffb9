"""Every hostname of the multisite, probed over HTTPS on each server, the reserved IP and the VIP, with
certificates from a CA the lab makes: the preflight refuses a go-live, by name, when the new server does not
serve a site; the verification waits for every site to answer from the new server, and says which did not."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from bot.plan import parse_plan
from bot.ssh import SSHPool
from bot.clock import SystemClock
from bot.standins.lab import SITES
from bot.standins.slack import blocks_text
from bot.switch.sites import SiteProbes
from tests.conftest import OPERATOR, OUTSIDER, reply_text
from tests.golive_support import BOB, CAROL, DAVE, OK, approve_both, lab_plan, make_bot, request, shown
from tests.helpers import wait_settled

ALSO_ON_THE_STAND_IN = pytest.mark.parametrize("lab", ["keepalived", "stand-in"], indirect=True)


def sites_plan(lab, **failover) -> dict:
    plan = lab_plan(lab, **failover)
    plan["sites"] = lab.sites()
    return plan


@pytest.fixture
def bot(slack, lab, do, tmp_path):
    local = make_bot(slack, lab, do, tmp_path, plan=sites_plan(lab))
    yield local
    local.stop()


def thread_all(slack, ts) -> str:
    return "\n".join(m["text"] + "\n" + blocks_text(m.get("blocks")) for m in slack.messages("C0LAUNCH", ts))


@ALSO_ON_THE_STAND_IN
def test_every_site_on_every_path_before_and_after_the_switch_and_the_rollback(slack, lab, do, bot):
    check = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert "every site answers as it should on each path (old, new, reserved IP, VIP): example.test, " \
           "fr.example.test, de.example.test" in check, check
    assert "*Sites* (3): every cell answers as it should" in check
    for site in SITES:
        assert f"`{site}` old ✅ · new ✅ · reserved IP ✅ `old` · VIP ✅ `old`" in check, check
    assert "A go-live would find everything ready" in check

    req, _ = request(slack, bot)
    assert approve_both(slack, bot, req, 60) == "verified"
    thread = thread_all(slack, req["message_ts"])
    assert "✅ every site answers from `new` through the reserved IP and VIP: example.test, fr.example.test, " \
           "de.example.test" in thread, thread
    assert "*Every site after the switch*" in thread
    for site in SITES:  # each with its first answer from new, counted from the flip
        assert re.search(rf"`{re.escape(site)}` old ✅ · new ✅ · reserved IP ✅ `new` \(\+\d+\.\ds\) · VIP ✅ `new` "
                         rf"\(\+\d+\.\ds\)", thread), thread
    verification = bot.services.records.requests.get(req["id"]).verification
    assert set(verification.site_answers) == set(SITES)
    assert all(at >= verification.grid.at - timedelta(minutes=1) for at in verification.site_answers.values())

    back, _ = request(slack, bot, kind="rollback")
    slack.react(DAVE, OK, "C0LAUNCH", back["message_ts"])
    assert wait_settled(bot.services, back["id"], 60) == "verified"
    thread = thread_all(slack, back["message_ts"])
    assert "✅ every site answers from `old` through the reserved IP and VIP" in thread, thread
    assert "*Every site after the rollback*" in thread


def refused(slack, bot, *expected: str) -> str:
    """``check`` names each of ``expected`` and stops; ``golive`` asks nobody."""
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    for line in expected:
        assert line in text, text
    assert "A go-live would stop here" in text, text
    reply = reply_text(slack, slack.command(OPERATOR, "golive"), timeout=30)
    assert reply.startswith("No go-live was requested"), reply
    assert not bot.services.records.requests.in_flight()
    return text


@ALSO_ON_THE_STAND_IN
def test_a_site_missing_on_the_new_server_refuses_the_go_live_by_name(slack, lab, do, bot):
    lab.take_site("new", "fr.example.test")  # no vhost: the default site, with the default certificate
    (lab.workdir / "new" / "certs" / "fr.example.test.pem").unlink()
    text = refused(slack, bot, "fr.example.test on `new`: certificate refused: it does not cover fr.example.test; "
                               "the new server must serve every site before a go-live")
    assert "`example.test` old ✅ · new ✅" in text and "`fr.example.test` old ✅ · new ❌ certificate refused" in text


def test_a_certificate_that_does_not_cover_a_name_refuses_it(slack, lab, do, bot):
    lab.issue("new", "de.example.test", names=["www.example.test"])
    refused(slack, bot, "de.example.test on `new`: certificate refused: it does not cover de.example.test")


def test_a_certificate_expiring_within_cert_min_days_refuses_with_its_date(slack, lab, do, bot):
    lab.issue("new", "example.test", days=3)
    expires = datetime.now(timezone.utc) + timedelta(days=3)
    text = refused(slack, bot, "example.test on `new`: the certificate expires ")
    assert f"{expires:%Y-%m-%d}" in text and "in 3.0 days; the plan wants 7 days at least (`cert_min_days`)" in text


def test_the_new_server_answering_with_its_default_site_for_a_name_refuses_it(slack, lab, do, bot):
    lab.take_site("new", "de.example.test")  # the certificate is there, the site is not
    refused(slack, bot, "de.example.test on `new`: answers with the default site (`site=default`): no site for "
                        "de.example.test there")


def test_the_old_servers_own_failures_are_shown_and_refuse_nothing(slack, lab, do, bot):
    lab.issue("old", "fr.example.test", days=2)
    text = reply_text(slack, slack.command(OUTSIDER, "check"), timeout=30)
    assert "⚠️ on `old`: fr.example.test: the certificate expires" in text, text
    assert "A go-live would find everything ready" in text


def test_a_site_still_answering_from_old_after_the_switch_is_unverified_and_named(slack, lab, do, tmp_path):
    local = make_bot(slack, lab, do, tmp_path, plan=sites_plan(lab, verify_timeout="8s"))
    try:
        req, _ = request(slack, local)
        lab.answer_as("new", "fr.example.test", "old")  # new's vhost passes this site's requests to old
        slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
        slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
        assert wait_settled(local.services, req["id"], 60) == "unverified"
        text = shown(slack, req["message_ts"], "Verification failed")
        assert "not every site answers from `new`: fr.example.test through the reserved IP: answered by `old`, " \
               "expected `new`" in text, text
        assert "`/cutover rollback` switches back" in text
        thread = thread_all(slack, req["message_ts"])
        assert "`fr.example.test` old ✅ · new ❌ answered by `old`, expected `new` · reserved IP ❌" in thread, thread
        assert "`example.test` old ✅ · new ✅ · reserved IP ✅ `new`" in thread
    finally:
        local.stop()


def test_a_probe_never_skips_the_certificate_check(lab, tmp_path):
    """Without the plan's CA the lab's certificates are refused, for every site on every path."""
    plan = sites_plan(lab)
    del plan["sites"]["ca_file"]
    probes = SiteProbes(parse_plan(plan, "lab plan"), SSHPool({}), SystemClock())
    grid = probes.grid(probes.listed(), {"old": "old", "new": "new", "reserved_ip": "old"})
    assert grid.cells and all(not c.ok and c.reason.startswith("certificate refused: unable to get local issuer")
                              for c in grid.cells), [c.reason for c in grid.cells]


def test_the_plan_checks_its_sites(lab):
    plan = sites_plan(lab)
    plan["sites"].update(names=["example.test", "Bad_Name", {"name": "fr.example.test", "paht": "/x"}],
                         connect={"reserved": "1.2.3.4"}, cert_min_days=-1)
    with pytest.raises(Exception) as raised:
        parse_plan(plan, "cutover.toml")
    said = str(raised.value)
    for line in ("sites.names[1].name: got 'Bad_Name'; expected a hostname",
                 "sites.names[2].paht: unknown key (did you mean `path`?)",
                 "sites.connect.reserved: unknown key", "sites.cert_min_days: got -1"):
        assert line in said, said
