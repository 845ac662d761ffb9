"""The ``[slack]`` table: the launch channel, operators, approvers and how they approve."""

from __future__ import annotations

from datetime import timedelta

from bot.plan.checker import CHANNEL_ID, EMOJI, USER_ID, Checker
from bot.plan.model import People


def people(c: Checker, data: dict) -> People | None:
    t = c.table(data, "slack", "slack")
    if t is None:
        return None
    c.only(t, "slack.", {"channel", "operators", "approvers", "required_approvals",
                         "approval_reaction", "approval_ttl"})
    channel = c.string(t, "slack.channel", "channel", pattern=CHANNEL_ID,
                       expected="a Slack channel id such as C0LAUNCH")
    user_expected = "a list of Slack user ids such as U0ALICE"
    operators = c.string_list(t, "slack.operators", "operators", USER_ID, user_expected)
    approvers = c.string_list(t, "slack.approvers", "approvers", USER_ID, user_expected)
    required = c.integer(t, "slack.required_approvals", "required_approvals", required=False,
                         default=2, low=1, high=10)
    if required is not None and approvers and required > len(approvers):
        c.error("slack.required_approvals", required,
                f"at most the number of approvers ({len(approvers)})")
    elif required is not None and approvers and required == len(approvers) and set(approvers) & set(operators):
        c.error("slack.required_approvals", required,
                f"at most {len(approvers) - 1}: an operator who is also an approver cannot approve their own "
                "go-live, so a request by them could never be approved (or add another approver)")
    reaction = c.string(t, "slack.approval_reaction", "approval_reaction", required=False,
                        pattern=EMOJI, expected="an emoji name without colons, such as white_check_mark")
    ttl = c.duration(t, "slack.approval_ttl", "approval_ttl", required=False)
    if channel is None:
        return None
    return People(channel=channel, operators=operators, approvers=approvers,
                  required_approvals=required or 2,
                  approval_reaction=reaction or "white_check_mark",
                  approval_ttl=ttl or timedelta(minutes=15))
