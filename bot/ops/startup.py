"""What is checked before the bot takes its first command: the plan's channel and people, as Slack sees them.

A bot that cannot post in its channel would tell people "announced in the
channel" while nothing was; one whose approver is a mistyped ID would wait
for an approval nobody can give. Each problem names the plan key or the app
setting to fix, and the bot does not start until they are fixed.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.plan import Plan
from bot.slackapi.answers import SlackAnswerError, checked
from bot.slackapi.notifier import slack_error

SCOPE_FOR = {"conversations.info": "channels:read (groups:read for a private channel)", "users.info": "users:read"}


TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class Unanswered(str):
    """A start problem that is Slack not answering (no connection, a 5xx, rate limited), not a bad setting:
    trying again later may clear it."""


def unreachable(exc: BaseException) -> bool:
    """Whether a failed call to Slack means Slack (or the way to it) is down for now, not that a setting is wrong."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0) or 0
        return status >= 500 or status == 429 or slack_error(exc) in TRANSIENT_ERRORS
    return isinstance(exc, OSError)  # URLError, timeouts, refused and reset connections, DNS


def startup_problems(slack: WebClient, plan: Plan) -> list[str]:
    """Every problem found, worded for the person starting the bot; empty when it may start."""
    problems = _channel_problems(slack, plan.people.channel)
    for kind in plan.freezes.kinds.values():
        for extra in kind.announce_to:
            problems += _channel_problems(slack, extra, f"[freezes.{kind.name}] announce_to")
    return problems + _people_problems(slack, plan)


def _channel_problems(slack: WebClient, channel: str, key: str = "[slack] channel") -> list[str]:
    try:
        info = checked("conversations.info", slack.conversations_info(channel=channel))["channel"]
    except SlackAnswerError as exc:
        return [f"{key} = {channel}: Slack could not tell whether the bot is in it ({exc})."]
    except (SlackApiError, SlackClientError, OSError) as exc:  # OSError: no answer within the deadline
        error = slack_error(exc)
        if error == "channel_not_found":
            return [f"{key} = {channel}: Slack knows no channel by that ID that the bot can see "
                    "(channel_not_found). Use the channel's ID (C…, from its details pane); for a private "
                    "channel, invite the bot first."]
        if error == "missing_scope":
            return [f"the Slack app lacks the scope {SCOPE_FOR['conversations.info']} to look at {key} "
                    f"{channel}; reinstall it from slack-manifest.yml."]
        problem = f"{key} = {channel}: Slack could not tell whether the bot is in it ({error})."
        return [Unanswered(problem) if unreachable(exc) else problem]
    problems = []
    if info.get("is_archived"):
        problems.append(f"{key} = {channel} (#{info.get('name', '?')}) is archived; nothing can be "
                        "posted there. Name another channel.")
    elif not info.get("is_member"):
        problems.append(f"the bot is not a member of {key} {channel} (#{info.get('name', '?')}), so it "
                        "cannot post there: invite it with `/invite @cutover` in that channel.")
    return problems


def _people_problems(slack: WebClient, plan: Plan) -> list[str]:
    roles: dict[str, list[str]] = {}
    for user in plan.people.operators:
        roles.setdefault(user, []).append("operators")
    for user in plan.people.approvers:
        roles.setdefault(user, []).append("approvers")
    for stage in plan.stages:
        if stage.owner:
            roles.setdefault(stage.owner, []).append(f"stages `{stage.name}` owner")
    problems = []
    for user, keys in roles.items():
        where = " and ".join(k if k.startswith("stages ") else f"[slack] {k}" for k in keys)
        try:
            info = checked("users.info", slack.users_info(user=user))["user"]
        except SlackAnswerError as exc:
            problems.append(f"{where}: Slack could not say who {user} is ({exc}).")
            continue
        except (SlackApiError, SlackClientError, OSError) as exc:  # OSError: no answer within the deadline
            error = slack_error(exc)
            if error == "user_not_found":
                problems.append(f"{where}: {user} is not a member of this workspace (user_not_found); use the "
                                "member ID from their profile (⋮ → Copy member ID).")
            elif error == "missing_scope":
                return problems + [f"the Slack app lacks the scope {SCOPE_FOR['users.info']} to check the plan's "
                                   "people; reinstall it from slack-manifest.yml."]
            else:
                problem = f"{where}: Slack could not say who {user} is ({error})."
                problems.append(Unanswered(problem) if unreachable(exc) else problem)
            continue
        if info.get("deleted"):
            problems.append(f"{where}: {user} is a deactivated account.")
        elif info.get("is_bot"):
            problems.append(f"{where}: {user} is a bot; operators, approvers and step owners must be people.")
    return problems
