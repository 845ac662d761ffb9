"""Shared fixtures: the Slack stand-in, a plan, and the real bot wired to both.

Under CI (``CI`` set), a skipped test is a failure: the tests that need root,
network namespaces or system packages must run there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.local.bot import start_local_bot
from bot.plan import Plan, parse_plan
from bot.standins.digitalocean import DigitalOceanStandIn
from bot.standins.keepalived_pair import KeepalivedPairStandIn, pair_unavailable
from bot.standins.lab import STEADY, KeepalivedLab, lab_unavailable
from bot.standins.slack import SlackStandIn
from tests.helpers import start_sshd

OPERATOR = "U0ALICE"
APPROVERS = ("U0BOB", "U0CAROL", "U0DAVE")
OUTSIDER = "U0EVE"

PLAN = {
    "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"],
              "approvers": list(APPROVERS), "required_approvals": 2,
              "approval_reaction": "white_check_mark", "approval_ttl": "15m"},
    "hosts": {"old": {"address": "127.0.0.1", "user": "deploy"},
              "new": {"address": "127.0.0.1", "user": "deploy"}},
    "stages": [{"name": "db-import", "host": "new", "command": "./deploy.sh db-import"},
               {"name": "solr-reindex", "host": "new", "command": "./deploy.sh solr-reindex",
                "depends_on": ["db-import"]}],
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def do():
    """The DigitalOcean stand-in, its actions completing after 0.3 s."""
    with DigitalOceanStandIn(action_delay=0.3) as standin:
        yield standin


@pytest.fixture
def lab(request, tmp_path, do):
    """The two servers: the keepalived lab (network namespaces, real keepalived, sshd and web servers; root only)
    where it can run, else the keepalived stand-in (``bot.standins.keepalived_pair``: real sshd and web servers on
    127.0.0.1) unless the test is marked ``vrrp``. ``parametrize("lab", ["stand-in"], indirect=True)`` asks for
    the stand-in; ``CUTOVER_LAB=stand-in`` gives it to every test that does not need real VRRP."""
    with make_lab(request, tmp_path, do) as running:
        yield running


def make_lab(request, tmp_path, do, env_of=None):
    """The lab the ``lab`` fixture gives (see there), not yet started; ``env_of(server_dir)`` gives each server's
    SSH commands more environment."""
    wanted = getattr(request, "param", os.environ.get("CUTOVER_LAB", "keepalived"))
    why = lab_unavailable()
    needs_vrrp = request.node.get_closest_marker("vrrp") is not None
    if wanted == "keepalived" and why is None or needs_vrrp:
        if why:
            pytest.skip(f"the keepalived lab cannot run here: {why}")
        work = tmp_path / "lab"
        env = {role: env_of(work / role) for role in ("old", "new")} if env_of else None
        return KeepalivedLab(work, do, STEADY, env=env)
    why_no_pair = pair_unavailable()
    if why_no_pair:
        pytest.skip(f"the keepalived stand-in cannot run here: {why_no_pair}")
    work = tmp_path / "pair"
    env = {role: env_of(work / role) for role in ("old", "new")} if env_of else None
    return KeepalivedPairStandIn(work, do, STEADY, env=env)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def stage_bot(slack, sshd, tmp_path):
    """The bot with the stage tests' plan, its stages on the test's sshd."""
    from tests.stage_support import stage_plan

    local = start_local_bot(slack, parse_plan(stage_plan(sshd, tmp_path), "test plan"), str(tmp_path / "c.db"))
    yield local
    local.stop()


@pytest.fixture
def plan() -> Plan:
    return parse_plan(PLAN, "test plan")


@pytest.fixture
def bot(slack: SlackStandIn, plan: Plan, tmp_path: Path):
    local = start_local_bot(slack, plan, str(tmp_path / "cutover.db"))
    yield local
    local.stop()


def reply_text(slack: SlackStandIn, env, timeout: float = 10.0) -> str:
    """What the person who ran a command sees: the ack's text or the answer posted to response_url."""
    from bot.standins.slack import blocks_text

    slack.wait_ack(env, timeout)
    if env.ack_payload and env.ack_payload.get("text"):
        return env.ack_payload["text"]
    responses = slack.wait_for(lambda: slack.responses_for(env), timeout, "a response")
    last = responses[-1]
    return blocks_text(last["blocks"]) or last["text"]
