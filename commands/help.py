"""``help``: what the caller may do, as Block Kit (the router answers it itself)."""

from __future__ import annotations

from bot.slackapi.blocks import context, header, sections


def help_message(commands: list[tuple[str, str]], *, is_operator: bool, is_approver: bool,
                 reaction: str) -> list[dict]:
    lines = [f"• `/cutover {usage}` — {summary}" for usage, summary in commands]
    roles = []
    if is_operator:
        roles.append("an *operator*: you may run stages, freezes and go-live")
    if is_approver:
        roles.append(f"an *approver*: you may confirm a go-live by reacting with :{reaction}:")
    who = ("You are " + " and ".join(roles) + ".") if roles else \
        "You may read the plan's state; operators act, approvers confirm go-live."
    return [header("What you can do with /cutover"), *sections(lines), context(who)]
