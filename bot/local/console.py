"""``cutover console --plan FILE``: talk to the bot from a terminal, as any person in the plan.

The same Bolt app and services run against the Slack stand-in, so what works
here works in Slack. Lines:

    /cutover …                  run a command as the current person
    as @bob                     become bob (names come from the plan's user ids: U0BOB → bob)
    react :emoji: [as @carol]   react to the bot's last message in the channel
    unreact :emoji: [as @carol] take a reaction back
    help, quit
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from bot.local.bot import start_local_bot
from bot.local.terminal import ChannelView
from bot.plan import Plan, PlanError, load_plan
from bot.settings import load_settings
from bot.standins.slack import SlackStandIn

HELP = __doc__.split("Lines:", 1)[1].rstrip()  # type: ignore[union-attr]
_REACT = re.compile(r"^(un)?react\s+:?([a-z0-9_+'-]+):?(?:\s+as\s+@?(\S+))?$")


def names_of(plan: Plan) -> dict[str, str]:
    """People's console names from their Slack ids: U0ALICE → alice."""
    ids = dict.fromkeys([*plan.people.operators, *plan.people.approvers, "U0EVE"])
    return {uid: re.sub(r"^[UW]0?", "", uid).lower() for uid in ids}


def run_console(plan_path: str, db_path: str | None = None, stdin: TextIO = sys.stdin,
                out: TextIO = sys.stdout) -> int:
    try:
        plan = load_plan(plan_path)
    except PlanError as exc:
        out.write("\n".join(exc.errors) + "\n")
        return 2
    settings = load_settings()
    names = names_of(plan)
    ids = {name: uid for uid, name in names.items()}
    db_path = db_path or str(Path(tempfile.mkdtemp(prefix="cutover-console-")) / "console.db")
    with SlackStandIn(channels={plan.people.channel: "launch"}) as slack:
        names[slack.bot_user_id] = "cutover"
        view = ChannelView(out, time.monotonic(), names)
        slack.on_post(view)
        bot = start_local_bot(slack, plan, db_path, digitalocean_end_point=settings.digitalocean_end_point,
                              digitalocean_token=settings.digitalocean_token)
        user = plan.people.operators[0] if plan.people.operators else "U0EVE"
        out.write(f"cutover console — plan {plan_path}, state in {db_path}. Slack is a local stand-in; hosts and "
                  f"DigitalOcean are whatever the plan and environment point at.\nType help for what you can do.\n")
        try:
            while True:
                out.write(f"{names.get(user, user)}> ")
                out.flush()
                line = stdin.readline()
                if not line:
                    break
                line = line.strip()
                if line in ("quit", "exit"):
                    break
                if not line:
                    continue
                if line == "help":
                    out.write(HELP.strip("\n") + "\n")
                elif line.startswith("/cutover"):
                    env = slack.command(user, line.removeprefix("/cutover").strip())
                    try:
                        slack.wait_ack(env, 10)
                        if not (env.ack_payload or {}).get("text"):
                            slack.wait_for(lambda: slack.responses_for(env), 120, "the reply")
                    except TimeoutError as exc:
                        out.write(f"(no reply yet: {exc})\n")
                elif line.startswith("as "):
                    who = line[3:].strip().lstrip("@")
                    if who in ids or who in names:
                        user = ids.get(who, who)
                    else:
                        out.write(f"nobody called {who} in the plan; try " + ", ".join(sorted(ids)) + "\n")
                elif match := _REACT.match(line):
                    undo, emoji, who = match.groups()
                    actor = ids.get(who.lstrip("@"), who) if who else user
                    bot_messages = [m for m in slack.messages(plan.people.channel) if m.get("user") == slack.bot_user_id]
                    if not bot_messages:
                        out.write("the bot has not posted in the channel yet; nothing to react to\n")
                        continue
                    target = bot_messages[-1]
                    act = slack.unreact if undo else slack.react
                    act(actor, emoji, plan.people.channel, target["ts"])
                    first = (target.get("text") or "").splitlines()[0][:60]
                    out.write(f"@{names.get(actor, actor)} {'took back' if undo else 'reacted'} :{emoji}: on "
                              f"\u201c{first}\u201d\n")
                    time.sleep(0.5)
                else:
                    out.write("not understood; type help\n")
        finally:
            running = [r.stage for r in bot.services.records.runs.active()]
            bot.stop()
            if running:
                out.write(f"Still running on their hosts: {', '.join(running)}. They go on without the console; "
                          f"`cutover console --plan {plan_path} --db {db_path}` picks them up again.\n")
    return 0
