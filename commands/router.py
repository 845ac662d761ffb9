"""The ``/cutover`` router: parse, authorize, ack, hand off.

Parsing and authorization happen inside Slack's three seconds and answer in
the ack itself; the work runs on the worker pool and answers through the
command's ``response_url``. Nothing typed in Slack is ever passed to a shell.
"""

from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from bot.refusals import Refused
from commands.help import help_message
from commands.typed import from_slack, refusal, visible

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger("cutover.commands")

AUDIT_TEXT = 500  # what the audit keeps of a typed command


@dataclass(frozen=True)
class Caller:
    user: str
    channel: str


@dataclass
class Reply:
    text: str
    blocks: list[dict] | None = None
    public: bool = False


class UsageError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    acts: bool | Callable[[Any], bool]
    run: Callable[["Services", Caller, Any], Reply]
    parse: Callable[[list[str], "Services"], Any] = field(default=lambda args, services: args)
    read_usage: str = ""
    expensive: bool = False  # calls out to hosts, DigitalOcean or Slack uploads: one at a time per person
    anywhere: bool = False  # answered outside the plan's channel too (only to the asker, posting nothing)

    def acts_on(self, parsed: Any) -> bool:
        """Whether this use of the command changes something or posts in the channel (so needs an operator)."""
        return self.acts(parsed) if callable(self.acts) else self.acts

    def usage_line(self) -> str:
        return f"Usage: `/cutover {self.usage}`"


def no_args(args: list[str], services: "Services") -> None:
    if args:
        raise UsageError(f"This command takes no arguments (got `{' '.join(args)[:40]}`).")


class Router:
    def __init__(self, commands: list[Command]) -> None:
        help_command = Command("help", "help", "what you may do here", acts=False, run=self._help,
                               parse=no_args, anywhere=True)
        self.commands = {c.name: c for c in [help_command, *commands]}
        self._busy: dict[str, str] = {}  # person -> the expensive command they have in flight
        self._busy_lock = threading.Lock()

    def _help(self, services: "Services", caller: Caller, _: None) -> Reply:
        operator = services.plan.is_operator(caller.user)
        blocks = help_message(
            [(c.usage if operator or not c.read_usage else c.read_usage, c.summary)
             for c in self.allowed(services, caller.user)],
            is_operator=services.plan.is_operator(caller.user),
            is_approver=services.plan.is_approver(caller.user),
            reaction=services.plan.people.approval_reaction)
        return Reply(text="What you can do with /cutover", blocks=blocks)

    def overview(self) -> str:
        return "Usage: `/cutover " + " | ".join(c.name for c in self.commands.values()) + "`"

    def parse(self, text: str, services: "Services") -> tuple[Command, Any]:
        words = text.split()
        if not words:
            return self.commands["help"], None
        name, args = words[0].lower(), words[1:]
        command = self.commands.get(name)
        if command is None:
            shown = name if len(name) <= 30 else name[:30] + "…"
            close = difflib.get_close_matches(name, list(self.commands), n=1)
            guess = f" Did you mean `/cutover {close[0]}`?" if close else ""
            raise UsageError(f"`{shown}` is not a /cutover command.{guess} {self.overview()} "
                             "— `/cutover help` says what each does.")
        try:
            return command, command.parse(args, services)
        except UsageError as exc:
            raise UsageError(f"{exc.message}\n{command.usage_line()}") from None

    @staticmethod
    def _may_read(command: Command, text: str) -> bool:
        """Whether someone who is not an operator may use this command as typed, judged before parsing."""
        if not command.acts_on(None):
            return True
        return bool(command.read_usage) and " ".join(text.split()).lower() == command.read_usage

    @staticmethod
    def _refuse_outsider(ack: Callable[..., None], command: Command) -> None:
        ack(text=f"Only operators may use `/cutover {command.name}`; you can still use "
                 "`help`, `status`, `audit`, `check`, and `done`/`failed` on a step of yours. Operators are "
                 "listed in the plan's `[slack] operators`.")

    def allowed(self, services: "Services", user: str) -> list[Command]:
        """What ``user`` may use: everything for operators, and every read for the rest."""
        is_operator = services.plan.is_operator(user)
        return [c for c in self.commands.values() if is_operator or not c.acts_on(None) or c.read_usage]

    def handle(self, services: "Services", body: dict, ack: Callable[..., None],
               respond: Callable[..., Any], delivery: str | None = None) -> None:
        """The slash-command listener's whole job; returns within milliseconds and never waits on the database.

        What is recorded (the audit, the delivery) is written in the commands lane, after the ack.
        """
        caller = Caller(user=body.get("user_id", ""), channel=body.get("channel_id", ""))
        typed = from_slack(body.get("text") or "").strip()
        text = services.redactor.text(visible(typed))  # what the audit keeps: hidden characters spelled out
        operator = services.plan.is_operator(caller.user)

        def record(action: str, outcome: str, detail: dict | None = None) -> None:
            services.workers.submit("audit", services.once, delivery, services.audit, caller.user, action,
                                    text[:AUDIT_TEXT], outcome, detail)

        hidden = refusal(typed)
        if hidden is not None:
            ack(text=hidden)
            record("command", "refused", {"reason": "invisible characters"})
            return

        named = self.commands.get(text.split()[0].lower()) if text.split() else None
        channel = services.plan.people.channel
        if caller.channel != channel and not (named is not None and named.anywhere):
            ack(text=f"The cutover runs in <#{channel}>: use `/cutover` there. Here, `help` and `status` "
                     "answer only you.")
            record(named.name if named else "command", "refused", {"reason": "outside the plan's channel",
                                                                   "channel": caller.channel[:40]})
            return
        if named is not None and not operator and not self._may_read(named, text):
            self._refuse_outsider(ack, named)  # before parsing: outsiders parse nothing
            record(named.name, "refused", {"reason": "not an operator"})
            return
        try:
            command, parsed = self.parse(text, services)
        except UsageError as exc:
            ack(text=exc.message)
            record("command", "bad-usage")
            return
        if command.acts_on(parsed) and not operator:
            self._refuse_outsider(ack, command)
            record(command.name, "refused", {"reason": "not an operator"})
            return
        if command.expensive and not self._take(caller.user, command.name):
            ack(text=f"Your `/cutover {self._busy.get(caller.user, command.name)}` is still running; its answer "
                     f"comes here. One at a time, so that everyone's commands stay quick.")
            record(command.name, "refused", {"reason": "one expensive command at a time"})
            return
        ack()

        def act() -> None:
            services.audit(caller.user, command.name, text[:AUDIT_TEXT], "accepted")
            try:
                reply = command.run(services, caller, parsed)
            except Refused as exc:
                services.audit(caller.user, command.name, text[:AUDIT_TEXT], "refused", {"reason": str(exc)})
                reply = Reply(text=str(exc))
            respond(text=services.redactor.text(reply.text), blocks=services.redactor.deep(reply.blocks),
                    response_type="in_channel" if reply.public else "ephemeral")

        def work() -> None:
            try:
                services.once(delivery, act)
            finally:
                if command.expensive:
                    self._give_back(caller.user)

        def failed(ref: str) -> None:
            respond(text=f"`/cutover {command.name}` failed unexpectedly; nothing more was done. "
                         f"The bot's log has the details (ref {ref}).", response_type="ephemeral")

        services.workers.submit(f"/cutover {command.name}", work, on_error=failed)

    def _take(self, user: str, name: str) -> bool:
        with self._busy_lock:
            if user in self._busy:
                return False
            self._busy[user] = name
            return True

    def _give_back(self, user: str) -> None:
        with self._busy_lock:
            self._busy.pop(user, None)
