"""What the go-live tests share: a plan on the lab, a bot on it, a request made and watched."""

from __future__ import annotations

import copy

from bot.local.bot import start_local_bot
from bot.plan import parse_plan
from bot.standins.slack import blocks_text
from tests.conftest import OPERATOR, PLAN, reply_text
from tests.helpers import wait_settled

BOB, CAROL, DAVE = "U0BOB", "U0CAROL", "U0DAVE"
OK = "white_check_mark"


def lab_plan(lab, **failover) -> dict:
    base = copy.deepcopy(PLAN)
    base.pop("hosts")
    base["stages"] = []
    plan = lab.plan(base)
    plan["failover"].update(failover)
    return plan


def make_bot(slack, lab, do, tmp_path, plan=None, clock=None, name="g.db"):
    plan = parse_plan(plan or lab_plan(lab), "lab plan")
    return start_local_bot(slack, plan, str(tmp_path / name), clock=clock, digitalocean_end_point=do.end_point)


def request(slack, bot, user=OPERATOR, kind="golive"):
    reply = reply_text(slack, slack.command(user, kind), timeout=30)
    rows = bot.services.store.query("SELECT * FROM golive_requests ORDER BY id DESC LIMIT 1")
    assert rows and rows[0]["kind"] == kind, reply
    row = rows[0]
    slack.wait_for(lambda: bot.services.store.query("SELECT message_ts FROM golive_requests WHERE id = ?",
                                                    [row["id"]])[0]["message_ts"], 10, "the request message")
    return bot.services.store.query("SELECT * FROM golive_requests WHERE id = ?", [row["id"]])[0], reply


def approve_both(slack, bot, req, timeout=60):
    """Bob and Carol approve by reaction; the state the request settles in."""
    slack.react(BOB, OK, "C0LAUNCH", req["message_ts"])
    slack.react(CAROL, OK, "C0LAUNCH", req["message_ts"])
    return wait_settled(bot.services, req["id"], timeout)


def state(bot, request_id):
    return bot.services.store.query("SELECT state FROM golive_requests WHERE id = ?", [request_id])[0]["state"]


def approvals(bot, request_id):
    return [r["user"] for r in bot.services.store.query("SELECT user FROM approvals WHERE request_id = ?",
                                                        [request_id])]


def text_of(slack, ts):
    msg = slack.message("C0LAUNCH", ts)
    return blocks_text(msg.get("blocks")) or msg["text"]


def shown(slack, ts, expected, timeout=10):
    """The request message once it shows ``expected`` (it is updated just after the state settles)."""
    slack.wait_for(lambda: expected in text_of(slack, ts), timeout, f"the message to show {expected!r}")
    return text_of(slack, ts)


def flipped(slack, lab):
    """Wait until the bot has written the old server's health file (verification starts then)."""
    slack.wait_for(lambda: lab.servers["old"].health_file.read_text() == "false\n", 30, "the flip")


def thread_text(slack, ts):
    return "\n".join(m["text"] for m in slack.messages("C0LAUNCH", ts))


def ephemerals_for(slack, user):
    return [e["text"] for e in slack.ephemerals if e["user"] == user]


def flips(bot):
    return [e for e in bot.services.store.recent_audit(200) if e["action"] == "golive-flipped"]
