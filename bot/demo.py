"""``cutover demo``: the bot run end to end against local stand-ins, printed as the channel reads.

Each step says what a person does, shows what the bot answered, and checks it.
The exit code is 0 only if every step did what it should.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from bot.local import LocalBot, start_local_bot
from bot.plan import parse_plan
from bot.standins.slack import Envelope, SlackStandIn
from bot.terminal import plain, render_blocks

PEOPLE = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave", "U0EVE": "eve",
          "U0CUTBOT": "cutover"}

DEMO_PLAN = {
    "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"],
              "approvers": ["U0BOB", "U0CAROL", "U0DAVE"], "required_approvals": 2,
              "approval_reaction": "white_check_mark", "approval_ttl": "15m"},
    "hosts": {"old": {"address": "127.0.0.1", "user": "deploy"},
              "new": {"address": "127.0.0.1", "user": "deploy"}},
    "stages": [{"name": "db-import", "host": "new", "command": "./deploy.sh db-import", "timeout": "4h",
                "progress": r"Processed (?P<done>\d+)/(?P<total>\d+)"},
               {"name": "solr-reindex", "host": "new", "command": "./deploy.sh solr-reindex",
                "depends_on": ["db-import"]}],
}


@dataclass
class Demo:
    slack: SlackStandIn
    bot: LocalBot
    out: TextIO
    results: list[tuple[str, bool]] = field(default_factory=list)

    def say(self, who: str, text: str) -> Envelope:
        self.out.write(f"\n{who:>8} ▸ {text}\n")
        user = next(u for u, n in PEOPLE.items() if n == who)
        return self.slack.command(user, text.removeprefix("/cutover").strip())

    def reply(self, env: Envelope, timeout: float = 10.0) -> str:
        """What the person who typed the command sees: the ack's text, or the answer posted later."""
        self.slack.wait_ack(env, timeout)
        if env.ack_payload and env.ack_payload.get("text"):
            text = env.ack_payload["text"]
        else:
            responses = self.slack.wait_for(lambda: self.slack.responses_for(env), timeout, "a reply")
            text = render_blocks(responses[-1]["blocks"], responses[-1]["text"], PEOPLE)
        text = plain(text, PEOPLE)
        self.out.write("".join(f"{'cutover':>8} │ {line}\n" for line in text.splitlines()))
        return text

    def check(self, what: str, ok: bool) -> None:
        self.results.append((what, ok))
        self.out.write(f"{'':>8}   {'✔' if ok else '✘ FAILED:'} {what}\n")


def run_demo(out: TextIO = sys.stdout) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cutover-demo-"))
    plan = parse_plan(DEMO_PLAN, "demo plan")
    out.write("cutover demo: the bot against a local Slack stand-in (Socket Mode and Web API on 127.0.0.1).\n"
              "Real: the Bolt app, the services, SQLite state. Stand-in: Slack itself.\n")
    with SlackStandIn() as slack:
        bot = start_local_bot(slack, plan, str(workdir / "cutover.db"))
        demo = Demo(slack, bot, out)
        try:
            steps: list[Callable[[Demo], None]] = [_help, _status, _bad_usage, _audit]
            for step in steps:
                step(demo)
        finally:
            bot.stop()
    failed = [w for w, ok in demo.results if not ok]
    out.write(f"\nSummary: {len(demo.results) - len(failed)}/{len(demo.results)} checks passed "
              f"in {time.monotonic() - started:.1f}s.\n")
    for what in failed:
        out.write(f"  failed: {what}\n")
    return 0 if not failed else 1


def _help(d: Demo) -> None:
    text = d.reply(d.say("alice", "/cutover help"))
    d.check("help lists what an operator may do", "/cutover status" in text and "operator" in text)


def _status(d: Demo) -> None:
    text = d.reply(d.say("eve", "/cutover status"))
    d.check("anyone may read the status", "db-import" in text and "not run" in text)


def _bad_usage(d: Demo) -> None:
    text = d.reply(d.say("bob", "/cutover launch-now"))
    d.check("an unknown subcommand gets the usage line", "not a /cutover command" in text and "Usage:" in text)


def _audit(d: Demo) -> None:
    text = d.reply(d.say("carol", "/cutover audit 5"))
    d.check("the audit shows who did what", "@alice" in text and "help" in text)
