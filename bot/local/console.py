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

import copy
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from bot.local.bot import start_local_bot
from bot.local.terminal import ChannelView
from bot.plan import Plan, PlanError, parse_plan
from bot.plan.load import read_toml
from bot.settings import load_settings
from bot.standins.digitalocean import DigitalOceanStandIn
from bot.standins.keepalived_pair import KeepalivedPairStandIn, pair_unavailable
from bot.standins.lab import TUNED
from bot.standins.slack import SlackStandIn
from bot.store import Store, StoreError

HELP = __doc__.split("Lines:", 1)[1].rstrip()  # type: ignore[union-attr]
_REACT = re.compile(r"^(un)?react\s+:?([a-z0-9_+'-]+):?(?:\s+as\s+@?(\S+))?$")


def names_of(plan: Plan) -> dict[str, str]:
    """People's console names from their Slack ids: U0ALICE → alice."""
    ids = dict.fromkeys([*plan.people.operators, *plan.people.approvers, "U0EVE"])
    return {uid: re.sub(r"^[UW]0?", "", uid).lower() for uid in ids}


def run_console(plan_path: str, db_path: str | None = None, stdin: TextIO = sys.stdin,
                out: TextIO = sys.stdout, stand_in_failover: bool = False) -> int:
    """``stand_in_failover``: rehearse the go-live too, with a DigitalOcean stand-in and a keepalived stand-in for
    two servers on this machine in place of the plan's [failover] side; its stages still run on its own hosts."""
    try:
        data = read_toml(plan_path)
        plan = parse_plan(data, plan_path)
    except PlanError as exc:
        out.write("\n".join(exc.errors) + "\n")
        return 2
    if stand_in_failover and (why := pair_unavailable()) is not None:
        out.write(f"--stand-in-failover: the keepalived stand-in cannot run here: {why}\n")
        return 2
    settings = load_settings()
    names = names_of(plan)
    ids = {name: uid for uid, name in names.items()}
    db_path = db_path or str(Path(tempfile.mkdtemp(prefix="cutover-console-")) / "console.db")
    try:
        hold = Store.hold(db_path)  # one bot per database, the console included
    except StoreError as exc:
        out.write(f"{exc}\n")
        return 2
    uploads = Path(db_path).resolve().parent / f"{Path(db_path).stem}-uploads"
    with ExitStack() as stack:
        stack.callback(hold.release)
        end_point, token = settings.digitalocean_end_point, settings.digitalocean_token
        dropped: list[str] = []
        if stand_in_failover:
            work = Path(tempfile.mkdtemp(prefix="cutover-failover-"))
            do = stack.enter_context(DigitalOceanStandIn(action_delay=0.5))
            pair = stack.enter_context(KeepalivedPairStandIn(work, do, TUNED))
            data, dropped = with_failover_stand_ins(data, pair.plan({}))
            try:
                plan = parse_plan(data, plan_path)
            except PlanError as exc:
                out.write("with the failover side stood in, the plan does not hold together:\n"
                          + "\n".join(exc.errors) + "\n")
                return 2
            end_point, token = do.end_point, None
        slack = stack.enter_context(SlackStandIn(channels={plan.people.channel: "launch"}))
        names[slack.bot_user_id] = "cutover"
        view = ChannelView(out, time.monotonic(), names, keep_file=lambda f: _keep(slack, f, uploads))
        slack.on_post(view)
        bot = start_local_bot(slack, plan, db_path, digitalocean_end_point=end_point, digitalocean_token=token)
        logs = bot.services.settings.log_dir
        user = plan.people.operators[0] if plan.people.operators else "U0EVE"
        out.write(f"cutover console — plan {plan_path}. Slack is a local stand-in; hosts are the plan's"
                  + ("; the failover side (DigitalOcean, keepalived and the two servers it moves the IP between, "
                     "`standin-old` and `standin-new` on 127.0.0.1) is stood in" + (
                         f" (left out of the plan here: {', '.join(dropped)})" if dropped else "")
                     if stand_in_failover else ", and DigitalOcean is what the environment points at")
                  + f".\nState: {db_path}. Full stage logs: {logs}/. Files the bot uploads (the report, logs): "
                  f"{uploads}/.\nType help for what you can do.\n")
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


STAND_INS = {"old": "standin-old", "new": "standin-new"}


def with_failover_stand_ins(data: dict, side: dict) -> tuple[dict, list[str]]:
    """The plan with its [failover] and [digitalocean] pointed at the stand-ins' two servers (``side``, as
    ``ServerPair.plan`` gives it), and what of the plan could not come along: the [sites] (the stand-in servers do
    not serve the plan's domains) and forwarding at the flip (it is set up on the plan's old server)."""
    data = copy.deepcopy(data)
    hosts = data.setdefault("hosts", {})
    for role, entry in side["hosts"].items():
        hosts[STAND_INS[role]] = entry
    kept = {k: v for k, v in (data.get("failover") or {}).items() if k in ("require_freezes", "rollback_approvals")}
    data["failover"] = {**side["failover"], "old": STAND_INS["old"], "new": STAND_INS["new"], **kept}
    data["digitalocean"] = side["digitalocean"]
    dropped = []
    if data.pop("sites", None) is not None:
        dropped.append("[sites]")
    window = data.get("data") or {}
    for key in ("forward", "unforward", "forward_host", "forward_timeout"):
        if window.pop(key, None) is not None and "forwarding at the flip" not in dropped:
            dropped.append("forwarding at the flip")
    return data, dropped


def _keep(slack: SlackStandIn, shared: dict, folder: Path) -> str | None:
    """Save a file the bot uploaded to the stand-in where the person at the console can open it; where it went, or
    why it could not be saved, said after the upload's line."""
    content = (slack.files.get(shared["id"]) or {}).get("content")
    if content is None:
        return None
    path = folder / f"{shared['id']}-{Path(shared['name']).name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    except OSError as exc:
        return f"not saved: {exc.filename or path}: {exc.strerror or exc}"
    return f"saved as {path}"
