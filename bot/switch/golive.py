"""Go-live and rollback requests: a preflight, two-person approval, one flip, a verified switch.

A request moves through states, each change a conditional update of its
record, so that only one thread ever takes a step:

    open ─► deciding ─► flipping ─► flipped ─► verified | unverified
      │         │           ├─► aborted (the write was refused: nothing changed)
      │         │           └─► unknown ─► flipped | aborted (once the old server answers)
      │         └─► aborted (preflight worse at the threshold)
      └─► expired

Approvals (``bot.switch.approvals``) move ``open`` to ``deciding``. A bot
restarted mid-way never flips on its own: it reads the old server's health
file and finishes a flip that happened, says nothing changed when the file
says so, and says *unknown* — and keeps asking — while it cannot read it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from bot.clock import Clock
from bot.ledger import blocks as ledger_blocks
from bot.ledger.watches import Ledger
from bot.plan import Plan
from bot.runbook.runs import Runs
from bot.slackapi.blocks import sentence, slack_date
from bot.slackapi.notifier import Notifier
from bot.ssh import SSHError
from bot.states import RequestState
from bot.store import Store
from bot.switch import blocks as request_blocks
from bot.switch.approvals import Approvals
from bot.switch.failover import Failover, FlipNotMade, FlipRefused, FlipUnknown
from bot.switch.freshness import FreshPreflights
from bot.switch.model import WHAT, Preflight, Reading
from bot.switch.preflight import Preflights
from bot.switch.requests import Facts, RequestRefused, Requests
from bot.workers import Workers, error_ref

log = logging.getLogger("cutover.golive")

UNKNOWN_RETRY = 5.0

__all__ = ["GoLive", "Outcome", "RequestRefused"]


@dataclass(frozen=True)
class Outcome:
    """What a request command produced: a request posted, or a preflight that stopped it."""

    text: str
    preflight: Preflight | None = None


class GoLive:
    def __init__(self, plan: Plan, store: Store, notifier: Notifier, clock: Clock, workers: Workers,
                 failover: Failover, preflights: Preflights, requests: Requests, runs: Runs,
                 after_verified: Callable[[int], None] | None = None, ledger: Ledger | None = None) -> None:
        assert plan.failover is not None
        self.after_verified = after_verified
        self.plan = plan
        self.audit = store.audit
        self.notifier = notifier
        self.clock = clock
        self.workers = workers
        self.failover = failover
        self.preflights = preflights
        self.requests = requests
        self.runs = runs
        self.ledger = ledger
        self.people = plan.people
        self.fresh = FreshPreflights(preflights, requests, self._thread)
        self.approvals = Approvals(plan, requests, notifier, self.audit, workers, show=self._post,
                                   decide=lambda request_id: self._guarded(request_id, self._decided),
                                   refresh=self.fresh.refresh)
        self.stopping = threading.Event()

    # -- commands ----------------------------------------------------------------------------

    def check(self) -> Preflight:
        return self.preflights.run("golive")

    def request(self, user: str, kind: str = "golive") -> Outcome:
        preflight_started = time.monotonic()
        preflight = self.preflights.run(kind)
        if not preflight.ok:
            self.audit(user, kind, "", "refused", {"reason": "preflight failed",
                                                   "failed": [c.name for c in preflight.failed]})
            return Outcome(f"No {WHAT[kind]} was requested: the preflight found problems.", preflight)
        required = self.failover.config.rollback_approvals if kind == "rollback" else self.people.required_approvals
        request_id = self.requests.create(kind, user, required, self.people.approval_ttl, self.people.channel,
                                          preflight)
        self.audit(user, f"{kind}-requested", f"#{request_id}", "ok", {"required": required})
        ts = self._post(request_id)
        if ts is None:
            return self._withdraw_unposted(request_id, kind, user)
        if required == 0:
            self.workers.submit(f"{kind} #{request_id}", self._guarded, request_id, self._decided)
            return Outcome(f"{sentence(WHAT[kind])} #{request_id} needs no approval; going ahead.")
        self.notifier.react(ts, self.people.approval_reaction)
        self._thread_blocks(request_id, f"The preflight of {WHAT[kind]} #{request_id}",
                            request_blocks.preflight_message(preflight, f"The preflight of {WHAT[kind]} #{request_id}"))
        self.fresh.remember(request_id, preflight, preflight_started)
        self.approvals.look_up_approvers()
        return Outcome(f"{sentence(WHAT[kind])} #{request_id} posted; it needs {required} approval(s) "
                       f"within {request_blocks.format_ttl(self.people.approval_ttl)}.")

    def _withdraw_unposted(self, request_id: int, kind: str, user: str) -> Outcome:
        """A request nobody can see cannot be approved: withdraw it at once rather than block every other."""
        error = self.notifier.last_error()
        self.requests.move(request_id, RequestState.OPEN, RequestState.ABORTED,
                           Facts(error=f"its message could not be posted in the launch channel (Slack: {error})"))
        self.audit(user, f"{kind}-withdrawn", f"#{request_id}", "error", {"reason": f"not posted: {error}"})
        hint = (f" Invite the bot to <#{self.people.channel}> (`/invite @cutover`) and ask again."
                if error in ("not_in_channel", "channel_not_found") else " Ask again once Slack takes posts.")
        return Outcome(f"No {WHAT[kind]} was requested: its message could not be posted in the launch channel "
                       f"(Slack said `{error}`), so nobody could approve it; #{request_id} is withdrawn.{hint}")

    # -- what Slack delivers, and the clock's jobs ----------------------------------------------------

    def on_reaction(self, event: dict) -> None:
        self.approvals.on_reaction(event)

    def reconcile(self) -> None:
        self.approvals.reconcile()

    def refresh(self, request_id: int | None = None) -> None:
        self.fresh.refresh(request_id)

    def expire_due(self) -> None:
        for request_id in self.requests.expire_due():
            self.audit("cutover", "request-expired", f"#{request_id}", "expired")
            self._post(request_id)

    def stop(self) -> None:
        """Stop the loops that wait on a host (the requests stay as they are in the store)."""
        self.stopping.set()

    # -- the decision, the flip and the proof ---------------------------------------------------

    def _guarded(self, request_id: int, step: Callable[[int], None]) -> None:
        """Run a step of a request; an unexpected error is said in the request's thread, never swallowed."""
        try:
            step(request_id)
        except Exception:
            ref = error_ref()
            log.exception("request #%d failed (ref %s)", request_id, ref)
            self._thread(request_id, f"⚠️ The bot hit an unexpected error here (ref {ref}); the request is "
                                     f"`{self.requests.get(request_id).state}`. `/cutover check` shows where things "
                                     "stand.")

    def _decided(self, request_id: int) -> None:
        """The threshold was reached (or none was needed): check again, then flip exactly once."""
        kind = self.requests.get(request_id).kind
        if kind == "golive" and self._made_before(request_id):
            return
        preflight, how = self.fresh.recheck(request_id, kind)
        if not preflight.ok:
            reasons = "; ".join(c.detail for c in preflight.failed)
            self.requests.move(request_id, RequestState.DECIDING, RequestState.ABORTED, Facts(stopped_by=preflight),
                               (f"{kind}-aborted", "aborted", {"reason": reasons}))
            self._post(request_id, preflight=preflight)
            self._thread(request_id, "Not switching: " + reasons)
            return
        if not self.requests.move(request_id, RequestState.DECIDING, RequestState.FLIPPING):
            return
        word = "flip" if kind == "golive" else "rollback"
        try:
            if kind == "golive":
                written = self.failover.flip(request_id)
                action = f"wrote `{self.failover.config.unhealthy}` to the old server's health file"
            else:
                saved, written = self.failover.restore(request_id)
                action = f"restored `{saved.path}` on `{saved.host}`"
        except FlipNotMade as exc:
            self.requests.move(request_id, RequestState.FLIPPING, RequestState.ABORTED, Facts(error=str(exc)),
                               (f"{kind}-flip-failed", "error", {"reason": str(exc)}))
            self._post(request_id)
            self._thread(request_id, f"❌ The {word} could not be made: {exc}. Nothing was changed.")
            return
        except FlipUnknown as exc:
            self._unknown(request_id, RequestState.FLIPPING, str(exc))
            return
        self._flipped(request_id, RequestState.FLIPPING, written, action,
                      f"🔀 Approvals complete; checked against {how}. {sentence(action)} at "
                      f"{slack_date(written)} (the host's time). Verifying…")

    def _made_before(self, request_id: int) -> bool:
        """A bot on a restored (older) copy of the database may be deciding a request whose switch an earlier bot
        already made: the old server's record says so. Then it is not made again, only proven."""
        try:
            held = self.failover.held()  # one read on the way to the flip: nothing more when nothing is recorded
            if held is None or held.key != self.failover.key(request_id):
                return False
            if self.failover.witnesses.health(self.failover.config.old) != self.failover.config.unhealthy:
                return False
            written = self.failover.written_at(self.failover.config.old)
        except SSHError:
            return False  # the re-check that follows reads the server again, and says what it finds
        if not self.requests.move(request_id, RequestState.DECIDING, RequestState.FLIPPING):
            return True
        self._flipped(request_id, RequestState.FLIPPING, written, "found made by this request",
                      f"The old server records that this request's switch was already made, {slack_date(written)} "
                      f"(the host's time; {held.said()}), before this bot's database was restored: not switching "
                      "again. Verifying…")
        return True

    def _flipped(self, request_id: int, from_state: RequestState, written: datetime, action: str,
                 say: str) -> None:
        """The switch is known to have been made at ``written`` (the host's time): record it, then prove it."""
        kind = self.requests.get(request_id).kind
        # Every path that learns the switch was made passes here (after a restart too), and before the request is
        # recorded as flipped: a bot stopped in between tells keepalived again when it learns it once more.
        note = self.failover.tell_keepalived(kind)
        forwarding = self.failover.forward(on=kind == "golive")  # the window closes here, not when traffic moves
        facts = Facts(flipped_at=written, action=action)
        if forwarding is not None:
            facts.forwarded_at, facts.forward_error = (forwarding.at, None) if forwarding.done else (None, forwarding.error)
        if not self.requests.move(request_id, from_state, RequestState.FLIPPED, facts,
                                  (f"{kind}-flipped", "ok", {"action": action, "written_at": written.isoformat()})):
            return
        said = [say] + ([f"⚠️ {note}"] if note else []) + ([request_blocks.forwarding(forwarding)] if forwarding else [])
        self._thread(request_id, "\n".join(said))
        self._post(request_id)
        self._verify(request_id)

    def _verify(self, request_id: int) -> None:
        kind = self.requests.get(request_id).kind
        target = self.failover.config.new if kind == "golive" else self.failover.config.old

        def report(witness: Reading) -> None:
            self._thread(request_id, ("✅ " if witness.ok else "❌ ") + witness.detail)

        request = self.requests.get(request_id)
        forwarded = kind == "golive" and request.forwarded_at is not None
        grid = request.preflight.grid if request.preflight else None
        result = self.failover.verify(target, self.failover.config.verify_timeout.total_seconds(), report, forwarded,
                                      sites=grid.sites if grid else ())
        if result.grid is not None:
            self._thread_blocks(request_id, "Every site after the switch", request_blocks.grid_message(
                result.grid, f"Every site after the {_switch(kind)}", result.site_answers, request.flipped_at))
        state = RequestState.VERIFIED if result.ok else RequestState.UNVERIFIED
        self.requests.move(request_id, RequestState.FLIPPED, state, Facts(verification=result),
                           (f"{kind}-{state}", "ok" if result.ok else state, {"failed": [w.name for w in result.failed]}))
        self._post(request_id)
        if kind == "golive":
            self._close_window(request_id)
        if result.ok and kind == "golive" and self.after_verified is not None:
            self.workers.submit(f"the report after #{request_id}", self.after_verified, request_id)
        if not result.ok and kind == "golive":
            self._thread(request_id, "Verification failed: " + "; ".join(w.detail for w in result.failed).rstrip(".")
                         + ". `/cutover rollback` switches back to the old server.")

    def _close_window(self, request_id: int) -> None:
        """Once traffic has moved, count what the old server took over the whole window, with the rows."""
        if self.ledger is None or not self.ledger.watching:
            return
        request = self.requests.get(request_id)
        v = request.verification
        if request.forwarded_at is not None:
            until, how = request.forwarded_at, "when the old server began forwarding to the new one"
        elif v is not None and v.ok and v.first_answer_at is not None:
            until, how = v.first_answer_at, "at the first answer from the new server"
        else:
            self._thread(request_id, "📒 No final count of the data window: traffic has not been shown to have moved, "
                                     "so the old server may still be taking writes. `/cutover losses` counts them now.")
            return
        tally = self.ledger.count("final", until=until, request_id=request_id)
        self._thread_blocks(request_id, *ledger_blocks.closed(tally, how))

    # -- when the bot cannot know ---------------------------------------------------------------------

    def _unknown(self, request_id: int, from_state: RequestState, reason: str) -> None:
        """The write may or may not have landed: say so, and keep asking the old server until it can tell."""
        kind = self.requests.get(request_id).kind
        if not self.requests.move(request_id, from_state, RequestState.UNKNOWN, Facts(unknown=reason),
                                  (f"{kind}-flip-unknown", "unknown", {"reason": reason})):
            return
        self._post(request_id)
        self._thread(request_id, f"❓ Whether the {_switch(kind)} was made is *unknown*: {reason}. The bot reads the "
                                 f"old server's health file every {UNKNOWN_RETRY:.0f} s and will say here which it "
                                 "is; meanwhile no other request can be made.")
        self.workers.submit(f"settling #{request_id}", self._guarded, request_id, self._settle_unknown)

    def _settle_unknown(self, request_id: int) -> None:
        """Ask the witness that decides — the old server's health file — until it answers."""
        kind = self.requests.get(request_id).kind
        old = self.failover.config.old
        while self.requests.get(request_id).state == RequestState.UNKNOWN:
            try:
                landed, value = self._flip_landed(kind, request_id)
                written = self.failover.written_at(old) if landed else None
            except FlipRefused as exc:
                if self.requests.move(request_id, RequestState.UNKNOWN, RequestState.ABORTED, Facts(error=str(exc)),
                                      (f"{kind}-flip-failed", "error", {"reason": str(exc)})):
                    self._post(request_id)
                    self._thread(request_id, f"✅ Now known: this request did *not* make the {_switch(kind)}: "
                                             f"{exc}. Nothing was changed by it.")
                return
            except SSHError as exc:
                log.info("request #%d still unknown: %s", request_id, exc)
                if self.stopping.wait(UNKNOWN_RETRY):
                    return
                continue
            path = self.plan.health_file(old)
            if landed and written is not None:
                action = ("wrote the health file on the old server" if kind == "golive"
                          else "restored the health file on the old server")
                self._flipped(request_id, RequestState.UNKNOWN, written, action,
                              f"✅ Now known: the {_switch(kind)} was made. `{path}` on `{old}` holds `{value}`, "
                              f"written {slack_date(written)} (the host's time). Verifying…")
                return
            if self.requests.move(request_id, RequestState.UNKNOWN, RequestState.ABORTED,
                                  Facts(error=f"the write did not land: `{path}` on `{old}` still holds `{value}`"),
                                  (f"{kind}-flip-failed", "error",
                                   {"reason": f"did not land; the health file holds {value}"})):
                self._post(request_id)
                self._thread(request_id, f"✅ Now known: the {_switch(kind)} was *not* made. `{path}` on `{old}` "
                                         f"still holds `{value}`; nothing was changed. Ask again if it should still "
                                         "happen.")
            return

    # -- restarts ----------------------------------------------------------------------------------------

    def resume(self) -> None:
        """After a restart: never flip on our own; find out what happened and say exactly that."""
        self.reconcile()
        self._count_missed_window()  # before any verification below can end in a count of its own
        for request in self.requests.in_state(RequestState.DECIDING, RequestState.FLIPPING, RequestState.FLIPPED,
                                              RequestState.UNKNOWN):
            if request.state == RequestState.DECIDING:
                self._interrupted(request.id, RequestState.DECIDING,
                                  "The bot restarted before the switch was made (while checking again after the "
                                  "approvals), so nothing was changed. Ask again if it should still happen.")
            elif request.state == RequestState.FLIPPING:
                self.workers.submit(f"settling #{request.id}", self._guarded, request.id, self._after_restart)
            elif request.state == RequestState.UNKNOWN:
                self.workers.submit(f"settling #{request.id}", self._guarded, request.id, self._settle_unknown)
            else:
                self._thread(request.id, "The bot restarted during verification; verifying again.")
                self.workers.submit(f"verification of #{request.id}", self._guarded, request.id, self._verify)

    def _count_missed_window(self) -> None:
        """A bot stopped between a verified go-live and its final count counts the window now, over the same
        bounds: the copy to the moment the old server stopped serving."""
        if self.ledger is None or not self.ledger.watching:
            return
        golives = [r for r in self.requests.in_state(RequestState.VERIFIED) if r.kind == "golive"]
        if golives and not self.ledger.counts.final(golives[-1].id):
            request_id = golives[-1].id
            self.workers.submit(f"the final count of #{request_id}", self._guarded, request_id, self._close_window)

    def _after_restart(self, request_id: int) -> None:
        """A restart found the write under way: the old server's health file says whether it landed."""
        kind = self.requests.get(request_id).kind
        old = self.failover.config.old
        try:
            landed, value = self._flip_landed(kind, request_id)
            written = self.failover.written_at(old) if landed else None
        except FlipRefused as exc:
            self._interrupted(request_id, RequestState.FLIPPING, f"The bot restarted while this request was switching, "
                                                                 f"and {exc}: this request did not switch, and nothing "
                                                                 "was changed by it.")
            return
        except SSHError as exc:
            self._unknown(request_id, RequestState.FLIPPING, f"the bot restarted while writing the health file, "
                                                             f"and cannot read it now ({exc})")
            return
        path = self.plan.health_file(old)
        if landed and written is not None:
            self._flipped(request_id, RequestState.FLIPPING, written, "found written after a restart",
                          f"The bot restarted just after writing the health file and before confirming it: `{path}` "
                          f"on `{old}` holds `{value}`, written {slack_date(written)} (the host's time), so the "
                          f"{_switch(kind)} was made. Verifying…")
            return
        self._interrupted(request_id, RequestState.FLIPPING,
                          f"The bot restarted before the write landed: `{path}` on `{old}` still holds `{value}`, so "
                          "nothing was changed. Ask again if it should still happen.")

    def _flip_landed(self, kind: str, request_id: int) -> tuple[bool, str | None]:
        """Whether the old server's health file holds what this request's flip (or rollback) writes, and its value.
        A go-live the server's record gives to another request is not this one's (FlipRefused says whose)."""
        value = self.failover.witnesses.health(self.failover.config.old)
        if kind == "golive":
            if value != self.failover.config.unhealthy:
                return False, value
            held = self.failover.held()
            if held is not None and held.key != self.failover.key(request_id):
                raise FlipRefused(f"the server's record says {held.said()}", held)
            return True, value
        saved = self.failover.backup()
        return saved is not None and value == saved.content.strip(), value

    def _interrupted(self, request_id: int, state: RequestState, say: str) -> None:
        if not self.requests.move(request_id, state, RequestState.INTERRUPTED):
            return
        self.audit("cutover", "request-interrupted", f"#{request_id}", "interrupted")
        self._post(request_id)
        self._thread(request_id, say)

    # -- the request's message ----------------------------------------------------------------------------

    def _post(self, request_id: int, preflight: Preflight | None = None) -> str | None:
        """Post the request message the first time, update it in place after that."""
        request = self.requests.get(request_id)
        witnesses = self.failover.witnesses
        view = request_blocks.RequestView(
            id=request.id, kind=request.kind, state=request.state, requested_by=request.requested_by,
            created_at=request.created_at, expires_at=request.expires_at, required=request.required,
            approvers=self.people.approvers, reaction=self.people.approval_reaction,
            approvals=[(a.user, a.at) for a in self.requests.approvals(request_id)],
            preflight=preflight or request.preflight, decided_at=request.decided_at, failover=self.failover.config,
            droplets=(witnesses.droplet_of(self.failover.config.old), witnesses.droplet_of(self.failover.config.new)),
            last_sync=self.runs.last_succeeded(), flipped_at=request.flipped_at, verification=request.verification,
            abort_reason=request.abort_reason, unknown_reason=request.unknown, forwards=bool(self.plan.data.forward),
            forwarded_at=request.forwarded_at)
        text, blocks = request_blocks.text(view), request_blocks.request_message(view)
        if request.message_ts:
            self.notifier.update(request.message_ts, text, blocks)
            return request.message_ts
        ts = self.notifier.post(text, blocks)
        if ts:
            self.requests.posted(request_id, ts)
        return ts

    def _thread(self, request_id: int, text: str) -> None:
        ts = self.requests.get(request_id).message_ts
        if ts:
            self.notifier.post(text, thread_ts=ts)

    def _thread_blocks(self, request_id: int, text: str, blocks: list[dict]) -> None:
        ts = self.requests.get(request_id).message_ts
        if ts:
            self.notifier.post(text, blocks, thread_ts=ts)


def _switch(kind: str) -> str:
    return "switch" if kind == "golive" else "rollback"
