"""Who may approve a request, and how an approval comes and goes: by reaction, found on the message after a
restart, or taken back.

The rules, in one place: the plan's approvers only, never the requester, no
bots (Slack's ``users.info`` says who is one; someone it cannot confirm is not
counted), each person once, not after the request expired or was decided. A
reaction counts by its base name (a skin tone is the same approval). The
approval that reaches the threshold is the one whose write moves the request
to deciding; the go-live takes it from there.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from bot.plan import Plan
from bot.slackapi.blocks import sentence
from bot.slackapi.notifier import Notifier
from bot.states import RequestState
from bot.switch.model import STATE_WORDS
from bot.switch.requests import BUTTON, Request, Requests
from bot.workers import Workers

log = logging.getLogger("cutover.golive")


def people_list(users: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) or "nobody"


class Approvals:
    def __init__(self, plan: Plan, requests: Requests, notifier: Notifier, audit: Callable[..., object],
                 workers: Workers, *, show: Callable[[int], object], decide: Callable[[int], None],
                 refresh: Callable[[int], None]) -> None:
        self.plan = plan
        self.people = plan.people
        self.requests = requests
        self.notifier = notifier
        self.audit = audit
        self.workers = workers
        self.show = show  # bring the request's message up to date
        self.decide = decide  # the threshold was reached: check again and flip, in this thread
        self.refresh = refresh  # run the request's full preflight again
        self._is_bot: dict[str, bool] = {}
        self._bot_lock = threading.Lock()

    # -- reactions ------------------------------------------------------------------------------

    def on_reaction(self, event: dict) -> None:
        item = event.get("item") or {}
        user, name = event.get("user", ""), event.get("reaction", "")
        if item.get("type") != "message" or item.get("channel") != self.people.channel:
            return
        if not user or user == self.notifier.bot_user_id():
            return
        request = self.requests.on_message(item.get("channel", ""), item.get("ts", ""))
        if event.get("type") == "reaction_removed":
            if request is not None and self.people.approves(name) and not self._still_approves(request, user):
                self.withdraw(request, user)  # withdrawing is always safe: no need to know who it is
            return
        is_bot = self.is_a_bot(user)
        if is_bot:
            return
        if request is None:
            self._elsewhere(user, name, self.plan.is_approver(user))
            return
        if not self.people.approves(name):
            if self.plan.is_approver(user):
                self._note(user, f"Only :{self.people.approval_reaction}: (or the Approve button) counts as an "
                                 f"approval of {request.what} #{request.id}; :{name}: does not.")
            return
        if self._may_approve(request, user, is_bot, f":{name}:"):
            self.approve(request, user, name)

    def on_button(self, request_id: int, user: str, approve: bool) -> None:
        """The Approve (or Withdraw) button on a request's message: the same rules as the reaction."""
        try:
            request = self.requests.get(request_id)
        except LookupError:
            self._note(user, "That button belongs to no request this bot knows.")
            return
        if not approve:
            self.withdraw(request, user, by_button=True)
            return
        if self._may_approve(request, user, self.is_a_bot(user), "approval"):
            self.approve(request, user, BUTTON)

    def _may_approve(self, request: Request, user: str, is_bot: bool | None, what: str) -> bool:
        """The rules every approval meets, by reaction or button; who breaks one is told which, and it is audited."""
        if is_bot:
            return False
        if user == request.requested_by:
            self._refuse(request, user, "the requester",
                         f"You asked for {request.what} #{request.id}, so your approval does not count: it needs "
                         f"{request.required} other approver(s).")
            return False
        if not self.plan.is_approver(user):
            self._refuse(request, user, "not an approver",
                         f"Your {what} does not count: only the plan's approvers may approve "
                         f"({people_list(self.people.approvers)}).")
            return False
        if is_bot is None:
            self._refuse(request, user, "identity unconfirmed",
                         f"Your {what} was not counted: Slack did not confirm that you are a person (its `users.info` "
                         "answer failed), and an approval must come from a person. Try again in a minute.")
            return False
        return True

    def reconcile(self) -> None:
        """Approvals as the open requests' messages show them now, under the same rules as a reaction event.

        An approval whose event was lost (the bot down, or killed between Slack's delivery and the store) is
        counted; one whose reaction is gone is withdrawn. Those who may not approve are left out silently:
        they were told when their reaction arrived.
        """
        for request in self.requests.in_state(RequestState.OPEN):
            if request.message_ts is None:
                continue
            reactions = self.notifier.reactions(request.message_ts, channel=request.channel)
            if reactions is None:
                continue
            shown = list(dict.fromkeys(u for r in reactions if self.people.approves(str(r.get("name", "")))
                                       for u in r.get("users") or []))
            counted = {a.user for a in self.requests.approvals(request.id) if a.reaction != BUTTON}
            for user in shown:
                if user in counted or user == request.requested_by or not self.plan.is_approver(user):
                    continue
                if user == self.notifier.bot_user_id() or self.is_a_bot(user) is not False:
                    continue
                log.info("request #%d: counting %s's approval, which Slack shows but the bot had missed",
                         request.id, user)
                self.approve(request, user, self.people.approval_reaction, reconciled=True)
                if self.requests.get(request.id).state != RequestState.OPEN:
                    break
            for user in counted - set(shown):
                self.withdraw(request, user)

    # -- an approval, and taking it back ---------------------------------------------------------------

    def approve(self, request: Request, user: str, reaction: str, reconciled: bool = False) -> None:
        verdict = self.requests.approve(request.id, user, reaction)
        if verdict == "expired":
            self._refuse(request, user, "expired", f"{sentence(request.what)} #{request.id} expired before your "
                                                   "approval; ask for a new one.")
            self.show(request.id)
            return
        if verdict == "again":
            self._note(user, f"Your approval of {request.what} #{request.id} is already counted; it counts once.")
            return
        if verdict == "closed":
            self._note(user, f"{sentence(request.what)} #{request.id} is no longer open "
                             f"({self.requests.get(request.id).state}); your approval was not needed.")
            return
        self.audit(user, "approval", f"#{request.id}", "ok",
                   {"reason": "found on the message after a restart"} if reconciled else
                   {"via": "button"} if reaction == BUTTON else None)
        if verdict == "threshold":
            self.decide(request.id)  # every outcome of the decision updates the message
            return
        self.show(request.id)
        self.workers.submit(f"preflight for #{request.id}", self.refresh, request.id)

    def withdraw(self, request: Request, user: str, by_button: bool = False) -> None:
        """Take an approval back the way it was given: a reaction removed, or the Withdraw button."""
        if self.requests.withdraw(request.id, user, by_button):
            self.audit(user, "approval-withdrawn", f"#{request.id}", "ok", {"via": "button"} if by_button else None)
            self.show(request.id)
            return
        state = self.requests.get(request.id).state
        given = next((a for a in self.requests.approvals(request.id) if a.user == user), None)
        how = "pressed Withdraw" if by_button else "removed your reaction"
        if given is not None and state != RequestState.OPEN:
            self.audit(user, "approval-withdrawn", f"#{request.id}", "too-late", {"state": state.value})
            self._note(user, f"Your approval of {request.what} #{request.id} still stands: the decision was "
                             f"already taken when you {how}, and the request is now `{state}` "
                             f"({STATE_WORDS.get(state, state)}). To undo a go-live, use `/cutover rollback`.")
        elif given is not None and by_button:
            self._note(user, f"You approved {request.what} #{request.id} with :{given.reaction}:; remove that "
                             "reaction to withdraw.")
        elif by_button:
            self._note(user, f"You have no approval of {request.what} #{request.id} to withdraw.")

    # -- who is who ------------------------------------------------------------------------------------

    def is_a_bot(self, user: str) -> bool | None:
        """Whether ``user`` is a bot or an app; None when Slack could not say (never counted as a person)."""
        with self._bot_lock:
            if user in self._is_bot:
                return self._is_bot[user]
        is_bot = self.notifier.is_bot(user)
        if is_bot is None:
            log.warning("users.info for %s failed; an approval from them is not counted", user)
            return None
        with self._bot_lock:
            self._is_bot[user] = is_bot
        return is_bot

    def look_up_approvers(self) -> None:
        """Ask Slack who each approver is now, so that no approval waits on ``users.info``."""
        for approver in self.people.approvers:
            self.workers.submit(f"who is {approver}", self.is_a_bot, approver)

    def _still_approves(self, request: Request, user: str) -> bool:
        """Whether ``user`` still shows the approval reaction on the request in another skin tone (they took one
        of two back); False when Slack does not say, which withdraws: the reconciliation counts it again if it is
        there."""
        reactions = self.notifier.reactions(request.message_ts or "", channel=request.channel) or []
        return any(self.people.approves(str(r.get("name", ""))) and user in (r.get("users") or [])
                   for r in reactions)

    def _elsewhere(self, user: str, name: str, approver: bool) -> None:
        if not approver or not self.people.approves(name):
            return
        open_ = self.requests.in_state(RequestState.OPEN)
        if open_:
            self._note(user, f"That message is not a request; approve {open_[0].what} #{open_[0].id} by reacting "
                             "on its message.")

    def _note(self, user: str, text: str) -> None:
        self.notifier.ephemeral(user, text)

    def _refuse(self, request: Request, user: str, reason: str, text: str) -> None:
        self.audit(user, "approval", f"#{request.id}", "refused", {"reason": reason})
        self._note(user, text)
