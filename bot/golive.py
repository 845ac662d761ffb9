"""Go-live and rollback requests: two-person approval by reaction, one flip, a verified switch.

A request moves through states, each change a conditional UPDATE inside one
transaction, so that only one thread ever takes a step:

    open ─► deciding ─► flipping ─► flipped ─► verified | unverified
      │         │           ├─► aborted (the write was refused: nothing changed)
      │         │           └─► unknown ─► flipped | aborted (once the old server answers)
      │         └─► aborted (preflight worse at the threshold)
      └─► expired

Approvals are rows keyed by (request, user): a person counts once, a removed
reaction deletes the row, and the approval that reaches the threshold is the
one that moves ``open`` to ``deciding``. A bot restarted mid-way never flips
on its own: it reads the old server's health file and finishes a flip that
happened, says nothing changed when the file says so, and says *unknown* —
and keeps asking — while it cannot read it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from bot import golive_messages as gm
from bot.blocks import sentence
from bot.clock import Clock, parse_optional_time, parse_time
from bot.failover import Failover, FlipNotMade, FlipUnknown, Verification
from bot.notifier import Notifier
from bot.plan import Plan
from bot.preflight import Preflight, Preflights
from bot.refusals import Refused
from bot.ssh import SSHError
from bot.states import IN_FLIGHT, RequestState, RunState, sql_in
from bot.store import Store
from bot.witnesses import Reading
from bot.workers import Workers, error_ref

log = logging.getLogger("cutover.golive")

UNKNOWN_RETRY = 5.0
FRESH_EVERY = 5.0  # while a request is open, its full preflight is run again this often, and on each approval
FRESH_FOR = 10.0  # at the threshold, a passed full preflight this recent needs only a fast confirmation


class RequestRefused(Refused):
    """Why a go-live or rollback request cannot be made now, worded for the operator."""


@dataclass(frozen=True)
class Outcome:
    """What a request command produced: a request posted, or a preflight that stopped it."""

    text: str
    preflight: Preflight | None = None


class GoLive:
    def __init__(self, plan: Plan, store: Store, notifier: Notifier, clock: Clock, workers: Workers,
                 failover: Failover, preflights: Preflights,
                 after_verified: Callable[[int], None] | None = None) -> None:
        assert plan.failover is not None
        self.after_verified = after_verified
        self.plan = plan
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.workers = workers
        self.failover = failover
        self.preflights = preflights
        self.people = plan.people
        self._is_bot: dict[str, bool] = {}
        self._bot_lock = threading.Lock()
        self._fresh: dict[int, tuple[float, Preflight]] = {}  # request -> (monotonic, its last full preflight)
        self._fresh_lock = threading.Lock()
        self.stopping = threading.Event()

    # -- commands ----------------------------------------------------------------------------

    def check(self) -> Preflight:
        return self.preflights.run("golive")

    def request(self, user: str, kind: str = "golive") -> Outcome:
        preflight_started = time.monotonic()
        preflight = self.preflights.run(kind)
        if not preflight.ok:
            self.store.audit(user, kind, "", "refused", {"reason": "preflight failed",
                                                            "failed": [c.name for c in preflight.failed]})
            return Outcome(f"No {gm.WHAT[kind]} was requested: the preflight found problems.", preflight)
        required = self._required(kind)
        now = self.clock.now()
        with self.store.transaction() as db:
            busy = list(db.query(f"SELECT id, kind, requested_by FROM golive_requests WHERE state IN "
                                 f"{sql_in(IN_FLIGHT)}"))
            if busy:
                raise RequestRefused(f"{sentence(gm.WHAT[busy[0]['kind']])} request #{busy[0]['id']} by "
                              f"<@{busy[0]['requested_by']}> is still in progress; one at a time.")
            request_id = db["golive_requests"].insert({
                "kind": kind, "state": RequestState.OPEN.value, "requested_by": user, "created_at": now.isoformat(),
                "expires_at": (now + self.people.approval_ttl).isoformat(), "required": required,
                "channel": self.people.channel, "preflight": json.dumps(preflight.to_json())}).last_pk
        self.store.audit(user, f"{kind}-requested", f"#{request_id}", "ok", {"required": required})
        ts = self._post(request_id)
        if ts is None:
            return self._withdraw_unposted(request_id, kind, user)
        if required == 0:
            self.workers.submit(f"{kind} #{request_id}", self._guarded, request_id, self._decided)
            return Outcome(f"{sentence(gm.WHAT[kind])} #{request_id} needs no approval; going ahead.")
        self.notifier.react(ts, self.people.approval_reaction)
        self._remember(request_id, preflight, preflight_started)
        for approver in self.people.approvers:  # so that no approval waits on Slack's users.info
            self.workers.submit(f"who is {approver}", self._is_a_bot, approver)
        return Outcome(f"{sentence(gm.WHAT[kind])} #{request_id} posted; it needs {required} approval(s) "
                       f"within {gm.format_ttl(self.people.approval_ttl)}.")

    def _withdraw_unposted(self, request_id: int, kind: str, user: str) -> Outcome:
        """A request nobody can see cannot be approved: withdraw it at once rather than block every other."""
        error = self.notifier.last_error()
        self._move(request_id, RequestState.OPEN, RequestState.ABORTED,
                   {"error": f"its message could not be posted in the launch channel (Slack: {error})"})
        self.store.audit(user, f"{kind}-withdrawn", f"#{request_id}", "error", {"reason": f"not posted: {error}"})
        hint = (f" Invite the bot to <#{self.people.channel}> (`/invite @cutover`) and ask again."
                if error in ("not_in_channel", "channel_not_found") else " Ask again once Slack takes posts.")
        return Outcome(f"No {gm.WHAT[kind]} was requested: its message could not be posted in the launch channel "
                       f"(Slack said `{error}`), so nobody could approve it; #{request_id} is withdrawn.{hint}")

    def _required(self, kind: str) -> int:
        if kind == "rollback":
            return self.failover.config.rollback_approvals
        return self.people.required_approvals

    # -- reactions ------------------------------------------------------------------------------

    def on_reaction(self, event: dict) -> None:
        item = event.get("item") or {}
        user, name = event.get("user", ""), event.get("reaction", "")
        if item.get("type") != "message" or item.get("channel") != self.people.channel:
            return
        if not user or user == self.notifier.bot_user_id():
            return
        rows = self.store.query("SELECT * FROM golive_requests WHERE channel = ? AND message_ts = ?",
                                [item.get("channel"), item.get("ts")])
        if event.get("type") == "reaction_removed":
            if rows and self.people.approves(name) and not self._still_approves(rows[0], user):
                self._withdraw(rows[0], user)  # withdrawing is always safe: no need to know who it is
            return
        is_bot = self._is_a_bot(user)
        if is_bot:
            return
        approver = self.plan.is_approver(user)
        if not rows:
            self._elsewhere(user, name, approver)
            return
        request = rows[0]
        if not self.people.approves(name):
            if approver:
                self._note(user, f"Only :{self.people.approval_reaction}: counts as an approval of "
                                 f"{gm.WHAT[request['kind']]} #{request['id']}; :{name}: does not.")
            return
        if user == request["requested_by"]:
            self._refuse(request, user, "the requester",
                         f"You asked for {gm.WHAT[request['kind']]} #{request['id']}, so your approval does not "
                         f"count: it needs {request['required']} other approver(s).")
            return
        if not approver:
            self._refuse(request, user, "not an approver",
                         f"Your :{name}: does not count: only the plan's approvers may approve "
                         f"({gm.people_list(self.people.approvers)}).")
            return
        if is_bot is None:
            self._refuse(request, user, "identity unconfirmed",
                         f"Your :{name}: was not counted: Slack did not confirm that you are a person (its "
                         "`users.info` answer failed), and an approval must come from a person. Remove your "
                         "reaction and add it again in a minute.")
            return
        self._approve(request, user, name)

    def reconcile(self) -> None:
        """Approvals as the open requests' messages show them now, under the same rules as a reaction event.

        An approval whose event was lost (the bot down, or killed between Slack's delivery and the store) is
        counted; one whose reaction is gone is withdrawn. Those who may not approve are left out silently:
        they were told when their reaction arrived.
        """
        for request in self.store.query("SELECT * FROM golive_requests WHERE state = ? AND message_ts IS NOT NULL",
                                        [RequestState.OPEN.value]):
            reactions = self.notifier.reactions(request["message_ts"], channel=request["channel"])
            if reactions is None:
                continue
            shown = list(dict.fromkeys(u for r in reactions if self.people.approves(str(r.get("name", "")))
                                       for u in r.get("users") or []))
            counted = {a["user"] for a in self.store.query("SELECT user FROM approvals WHERE request_id = ?",
                                                            [request["id"]])}
            for user in shown:
                if user in counted or user == request["requested_by"] or not self.plan.is_approver(user):
                    continue
                if user == self.notifier.bot_user_id() or self._is_a_bot(user) is not False:
                    continue
                log.info("request #%d: counting %s's approval, which Slack shows but the bot had missed",
                         request["id"], user)
                self._approve(request, user, self.people.approval_reaction, reconciled=True)
                if self._state(request["id"]) != RequestState.OPEN:
                    break
            for user in counted - set(shown):
                self._withdraw(request, user)

    def _still_approves(self, request: dict, user: str) -> bool:
        """Whether ``user`` still shows the approval reaction on the request in another skin tone (they took one
        of two back); False when Slack does not say, which withdraws: the reconciliation counts it again if it is
        there."""
        reactions = self.notifier.reactions(request["message_ts"], channel=request["channel"]) or []
        return any(self.people.approves(str(r.get("name", ""))) and user in (r.get("users") or [])
                   for r in reactions)

    def _elsewhere(self, user: str, name: str, approver: bool) -> None:
        if not approver or not self.people.approves(name):
            return
        open_ = [r for r in self.store.open_requests() if r["state"] == RequestState.OPEN]
        if open_:
            self._note(user, f"That message is not a request; approve {gm.WHAT[open_[0]['kind']]} "
                             f"#{open_[0]['id']} by reacting on its message.")

    def _is_a_bot(self, user: str) -> bool | None:
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

    def _note(self, user: str, text: str) -> None:
        self.notifier.ephemeral(user, text)

    def _refuse(self, request: dict, user: str, reason: str, text: str) -> None:
        self.store.audit(user, "approval", f"#{request['id']}", "refused", {"reason": reason})
        self._note(user, text)

    def _approve(self, request: dict, user: str, reaction: str, reconciled: bool = False) -> None:
        now = self.clock.now()
        with self.store.transaction() as db:
            row = db["golive_requests"].get(request["id"])
            if row["state"] != RequestState.OPEN:
                verdict = "closed"
            elif now >= parse_time(row["expires_at"]):
                db.execute("UPDATE golive_requests SET state = ? WHERE id = ? AND state = ?",
                           [RequestState.EXPIRED.value, row["id"], RequestState.OPEN.value])
                verdict = "expired"
            else:
                db.execute("INSERT OR IGNORE INTO approvals (request_id, user, reaction, approved_at) "
                           "VALUES (?, ?, ?, ?)", [row["id"], user, reaction, now.isoformat()])
                count = db.execute("SELECT COUNT(*) FROM approvals WHERE request_id = ?", [row["id"]]).fetchone()[0]
                verdict = "counted"
                if count >= row["required"]:
                    taken = db.execute("UPDATE golive_requests SET state = ?, decided_at = ? WHERE id = ? AND state = ?",
                                       [RequestState.DECIDING.value, now.isoformat(), row["id"],
                                        RequestState.OPEN.value]).rowcount
                    verdict = "threshold" if taken else "closed"
        if verdict == "expired":
            self._refuse(request, user, "expired", f"{sentence(gm.WHAT[request['kind']])} #{request['id']} "
                                                   "expired before your approval; ask for a new one.")
            self._post(request["id"])
            return
        if verdict == "closed":
            self._note(user, f"{sentence(gm.WHAT[request['kind']])} #{request['id']} is no longer open "
                             f"({self._state(request['id'])}); your approval was not needed.")
            return
        self.store.audit(user, "approval", f"#{request['id']}", "ok",
                         {"reason": "found on the message after a restart"} if reconciled else None)
        if verdict == "threshold":
            self._guarded(request["id"], self._decided)  # every outcome of the decision updates the message
            return
        self._post(request["id"])
        self.workers.submit(f"preflight for #{request['id']}", self.refresh, request["id"])

    def _guarded(self, request_id: int, step: Callable[[int], None]) -> None:
        """Run a step of a request; an unexpected error is said in the request's thread, never swallowed."""
        try:
            step(request_id)
        except Exception:
            ref = error_ref()
            log.exception("request #%d failed (ref %s)", request_id, ref)
            self._thread(request_id, f"⚠️ The bot hit an unexpected error here (ref {ref}); the request is "
                                     f"`{self._state(request_id)}`. `/cutover check` shows where things stand.")

    def _withdraw(self, request: dict, user: str) -> None:
        with self.store.transaction() as db:
            gone = db.execute("DELETE FROM approvals WHERE request_id = ? AND user = ? AND EXISTS "
                              "(SELECT 1 FROM golive_requests WHERE id = ? AND state = ?)",
                              [request["id"], user, request["id"], RequestState.OPEN.value]).rowcount
        if gone:
            self.store.audit(user, "approval-withdrawn", f"#{request['id']}", "ok")
            self._post(request["id"])
            return
        counted = self.store.query("SELECT approved_at FROM approvals WHERE request_id = ? AND user = ?",
                                   [request["id"], user])
        state = self._state(request["id"])
        if counted and state != RequestState.OPEN:
            self.store.audit(user, "approval-withdrawn", f"#{request['id']}", "too-late", {"state": state.value})
            self._note(user, f"Your approval of {gm.WHAT[request['kind']]} #{request['id']} still stands: the "
                             f"decision was already taken when you removed your reaction, and the request is now "
                             f"`{state}` ({gm.STATE_WORDS.get(state, state)}). To undo a go-live, use "
                             "`/cutover rollback`.")

    # -- keeping the preflight fresh while a request is open ---------------------------------------------

    def _remember(self, request_id: int, preflight: Preflight, started: float) -> None:
        """Keep ``preflight`` (begun at ``started``, monotonic) unless a later-begun one is already kept."""
        with self._fresh_lock:
            kept = self._fresh.get(request_id)
            if kept is None or kept[0] < started:
                self._fresh[request_id] = (started, preflight)

    def _fresh_preflight(self, request_id: int) -> tuple[float, Preflight] | None:
        """The request's last full preflight, with its age in seconds, if it passed within FRESH_FOR."""
        with self._fresh_lock:
            fresh = self._fresh.get(request_id)
        if fresh is None or not fresh[1].ok or time.monotonic() - fresh[0] > FRESH_FOR:
            return None
        return time.monotonic() - fresh[0], fresh[1]

    def refresh(self, request_id: int | None = None) -> None:
        """Run the full preflight again for the open request(s), so that the threshold finds it fresh."""
        for request in self.store.query("SELECT id, kind FROM golive_requests WHERE state = ?",
                                        [RequestState.OPEN.value]):
            if request_id is not None and request["id"] != request_id:
                continue
            started = time.monotonic()
            self._remember(request["id"], self.preflights.run(request["kind"], ignore_request=request["id"]),
                           started)
        with self._fresh_lock:  # forget closed requests
            open_ids = {r["id"] for r in self.store.open_requests()}
            for gone in [r for r in self._fresh if r not in open_ids]:
                del self._fresh[gone]

    def _recheck(self, request_id: int, kind: str) -> tuple[Preflight, str]:
        """The check at the threshold: a fast confirmation beside a fresh full preflight, else a full one."""
        fresh = self._fresh_preflight(request_id)
        if fresh is not None:
            started = time.monotonic()
            confirmation = self.preflights.confirm(kind, ignore_request=request_id)
            took = (time.monotonic() - started) * 1000
            merged = {c.name: c for c in fresh[1].checks}
            merged.update({c.name: c for c in confirmation.checks})
            how = (f"the preflight of {fresh[0]:.0f} s ago, confirmed in {took:.0f} ms (health files, keepalived, "
                   "VIP, stages, freezes)")
            return Preflight(kind, confirmation.at, tuple(merged.values())), how
        self._thread(request_id, f"Approvals complete. Running the preflight again before the "
                                 f"{'flip' if kind == 'golive' else 'rollback'}…")
        return self.preflights.run(kind, ignore_request=request_id), "a full preflight"

    # -- the decision, the flip and the proof ---------------------------------------------------

    def _decided(self, request_id: int) -> None:
        """The threshold was reached (or none was needed): check again, then flip exactly once."""
        request = self._row(request_id)
        kind = request["kind"]
        preflight, how = self._recheck(request_id, kind)
        if not preflight.ok:
            self._move(request_id, RequestState.DECIDING, RequestState.ABORTED, {"preflight": preflight.to_json()},
                       (f"{kind}-aborted", "aborted", {"reason": "; ".join(c.detail for c in preflight.failed)}))
            self._post(request_id, preflight=preflight)
            self._thread(request_id, "Not switching: " + "; ".join(c.detail for c in preflight.failed))
            return
        if not self._move(request_id, RequestState.DECIDING, RequestState.FLIPPING):
            return
        word = "flip" if kind == "golive" else "rollback"
        try:
            if kind == "golive":
                written = self.failover.flip(request_id)
                action = f"wrote `{self.failover.config.unhealthy}` to the old server's health file"
            else:
                saved, written = self.failover.restore()
                action = f"restored `{saved['path']}` on `{saved['host']}`"
        except FlipNotMade as exc:
            self._move(request_id, RequestState.FLIPPING, RequestState.ABORTED, {"error": str(exc)},
                       (f"{kind}-flip-failed", "error", {"reason": str(exc)}))
            self._post(request_id)
            self._thread(request_id, f"❌ The {word} could not be made: {exc}. Nothing was changed.")
            return
        except FlipUnknown as exc:
            self._unknown(request_id, RequestState.FLIPPING, str(exc))
            return
        self._flipped(request_id, RequestState.FLIPPING, written, action,
                      f"🔀 Approvals complete; checked against {how}. {sentence(action)} at "
                      f"{gm.slack_date(written)} (the host's time). Verifying…")

    def _flipped(self, request_id: int, from_state: RequestState, written: datetime, action: str,
                 say: str) -> None:
        """The switch is known to have been made at ``written`` (the host's time): record it, then prove it."""
        kind = self._row(request_id)["kind"]
        # Every path that learns the switch was made passes here (after a restart too), and before the request is
        # recorded as flipped: a bot stopped in between tells keepalived again when it learns it once more.
        note = self.failover.tell_keepalived(kind)
        if not self._move(request_id, from_state, RequestState.FLIPPED,
                          {"flipped_at": written.isoformat(), "action": action},
                          (f"{kind}-flipped", "ok", {"action": action, "written_at": written.isoformat()})):
            return
        self._thread(request_id, say + (f"\n⚠️ {note}" if note else ""))
        self._post(request_id)
        self._verify(request_id)

    # -- when the bot cannot know ---------------------------------------------------------------------

    def _unknown(self, request_id: int, from_state: RequestState, reason: str) -> None:
        """The write may or may not have landed: say so, and keep asking the old server until it can tell."""
        kind = self._row(request_id)["kind"]
        if not self._move(request_id, from_state, RequestState.UNKNOWN, {"unknown": reason},
                          (f"{kind}-flip-unknown", "unknown", {"reason": reason})):
            return
        self._post(request_id)
        self._thread(request_id, f"❓ Whether the {'switch' if kind == 'golive' else 'rollback'} was made is "
                                 f"*unknown*: {reason}. The bot reads the old server's health file every "
                                 f"{UNKNOWN_RETRY:.0f} s and will say here which it is; meanwhile no other request "
                                 "can be made.")
        self.workers.submit(f"settling #{request_id}", self._guarded, request_id, self._settle_unknown)

    def _settle_unknown(self, request_id: int) -> None:
        """Ask the witness that decides — the old server's health file — until it answers."""
        kind = self._row(request_id)["kind"]
        old = self.failover.config.old
        while self._state(request_id) == RequestState.UNKNOWN:
            try:
                landed, value = self._flip_landed(kind)
                written = self.failover.written_at(old) if landed else None
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
                              f"✅ Now known: the {'switch' if kind == 'golive' else 'rollback'} was made. `{path}` "
                              f"on `{old}` holds `{value}`, written {gm.slack_date(written)} (the host's time). "
                              "Verifying…")
                return
            if self._move(request_id, RequestState.UNKNOWN, RequestState.ABORTED,
                          {"error": f"the write did not land: `{path}` on `{old}` still holds `{value}`"},
                          (f"{kind}-flip-failed", "error", {"reason": f"did not land; the health file holds {value}"})):
                self._post(request_id)
                self._thread(request_id, f"✅ Now known: the {'switch' if kind == 'golive' else 'rollback'} was "
                                         f"*not* made. `{path}` on `{old}` still holds `{value}`; nothing was "
                                         "changed. Ask again if it should still happen.")
            return

    def stop(self) -> None:
        """Stop the loops that wait on a host (the requests stay as they are in the store)."""
        self.stopping.set()

    def _verify(self, request_id: int) -> None:
        request = self._row(request_id)
        target = self.failover.config.new if request["kind"] == "golive" else self.failover.config.old

        def report(witness: Reading) -> None:
            self._thread(request_id, ("✅ " if witness.ok else "❌ ") + witness.detail)

        result = self.failover.verify(target, self.failover.config.verify_timeout.total_seconds(), report)
        state = RequestState.VERIFIED if result.ok else RequestState.UNVERIFIED
        self._move(request_id, RequestState.FLIPPED, state, {"verification": result.to_json()},
                   (f"{request['kind']}-{state}", "ok" if result.ok else state,
                    {"failed": [w.name for w in result.failed]}))
        self._post(request_id)
        if result.ok and request["kind"] == "golive" and self.after_verified is not None:
            self.workers.submit(f"the report after #{request_id}", self.after_verified, request_id)
        if not result.ok and request["kind"] == "golive":
            self._thread(request_id, "Verification failed: " + "; ".join(w.detail for w in result.failed).rstrip(".")
                         + ". `/cutover rollback` switches back to the old server.")

    # -- time and restarts ----------------------------------------------------------------------------

    def expire_due(self) -> None:
        now = self.clock.now().isoformat()
        with self.store.transaction() as db:
            due = [r["id"] for r in db["golive_requests"].rows_where("state = ? AND expires_at <= ?",
                                                                       [RequestState.OPEN.value, now])]
            for request_id in due:
                db.execute("UPDATE golive_requests SET state = ? WHERE id = ? AND state = ?",
                           [RequestState.EXPIRED.value, request_id, RequestState.OPEN.value])
        for request_id in due:
            self.store.audit("cutover", "request-expired", f"#{request_id}", "expired")
            self._post(request_id)

    def resume(self) -> None:
        """After a restart: never flip on our own; find out what happened and say exactly that."""
        self.reconcile()
        in_flight = (RequestState.DECIDING, RequestState.FLIPPING, RequestState.FLIPPED, RequestState.UNKNOWN)
        for request in self.store.query(f"SELECT * FROM golive_requests WHERE state IN {sql_in(in_flight)}"):
            request_id, state = request["id"], RequestState(request["state"])
            if state == RequestState.DECIDING:
                self._interrupted(request_id, RequestState.DECIDING,
                                  "The bot restarted before the switch was made (while checking again after the "
                                  "approvals), so nothing was changed. Ask again if it should still happen.")
            elif state == RequestState.FLIPPING:
                self.workers.submit(f"settling #{request_id}", self._guarded, request_id, self._after_restart)
            elif state == RequestState.UNKNOWN:
                self.workers.submit(f"settling #{request_id}", self._guarded, request_id, self._settle_unknown)
            else:
                self._thread(request_id, "The bot restarted during verification; verifying again.")
                self.workers.submit(f"verification of #{request_id}", self._guarded, request_id, self._verify)

    def _after_restart(self, request_id: int) -> None:
        """A restart found the write under way: the old server's health file says whether it landed."""
        kind = self._row(request_id)["kind"]
        old = self.failover.config.old
        try:
            landed, value = self._flip_landed(kind)
            written = self.failover.written_at(old) if landed else None
        except SSHError as exc:
            self._unknown(request_id, RequestState.FLIPPING, f"the bot restarted while writing the health file, "
                                                             f"and cannot read it now ({exc})")
            return
        path = self.plan.health_file(old)
        if landed and written is not None:
            self._flipped(request_id, RequestState.FLIPPING, written, "found written after a restart",
                          f"The bot restarted just after writing the health file and before confirming it: `{path}` "
                          f"on `{old}` holds `{value}`, written {gm.slack_date(written)} (the host's time), so the "
                          f"{'switch' if kind == 'golive' else 'rollback'} was made. Verifying…")
            return
        self._interrupted(request_id, RequestState.FLIPPING,
                          f"The bot restarted before the write landed: `{path}` on `{old}` still holds `{value}`, so "
                          "nothing was changed. Ask again if it should still happen.")

    def _flip_landed(self, kind: str) -> tuple[bool, str | None]:
        """Whether the old server's health file holds what the flip (or the rollback) writes, and its value."""
        value = self.failover.witnesses.health(self.failover.config.old)
        if kind == "golive":
            return value == self.failover.config.unhealthy, value
        saved = self.failover.backup()
        return saved is not None and value == saved["content"].strip(), value

    def _interrupted(self, request_id: int, state: RequestState, say: str) -> None:
        if not self._move(request_id, state, RequestState.INTERRUPTED):
            return
        self.store.audit("cutover", "request-interrupted", f"#{request_id}", "interrupted")
        self._post(request_id)
        self._thread(request_id, say)

    # -- plumbing ---------------------------------------------------------------------------------------

    def _row(self, request_id: int) -> dict:
        return self.store.get("golive_requests", request_id)

    def _state(self, request_id: int) -> RequestState:
        return RequestState(self._row(request_id)["state"])

    def _move(self, request_id: int, from_state: RequestState, to_state: RequestState,
              result: dict | None = None, audit: tuple[str, str, dict] | None = None) -> bool:
        """One step of the state machine; False if another thread took it first. ``audit`` (action, outcome,
        detail) is recorded in the same transaction, so the audit log never lags the state."""
        with self.store.transaction() as db:
            row = db["golive_requests"].get(request_id)
            merged = {**json.loads(row["result"] or "{}"), **(result or {})}
            moved = db.execute("UPDATE golive_requests SET state = ?, result = ? WHERE id = ? AND state = ?",
                               [to_state.value, json.dumps(merged), request_id, from_state.value]).rowcount == 1
            if moved and audit is not None:
                self.store.audit("cutover", audit[0], f"#{request_id}", audit[1], audit[2], db=db)
            return moved

    def _post(self, request_id: int, preflight: Preflight | None = None) -> str | None:
        """Post the request message the first time, update it in place after that."""
        request = self._row(request_id)
        approvals = self.store.query("SELECT user, approved_at FROM approvals WHERE request_id = ? "
                                              "ORDER BY approved_at", [request_id])
        stored = Preflight.from_json(json.loads(request["preflight"])) if request["preflight"] else None
        result = json.loads(request["result"] or "{}")
        witnesses = self.failover.witnesses
        view = gm.RequestView(
            id=request_id, kind=request["kind"], state=RequestState(request["state"]),
            requested_by=request["requested_by"], created_at=parse_time(request["created_at"]),
            expires_at=parse_time(request["expires_at"]), required=request["required"],
            approvers=self.people.approvers, reaction=self.people.approval_reaction,
            approvals=[(a["user"], parse_time(a["approved_at"])) for a in approvals],
            preflight=preflight or stored, decided_at=parse_optional_time(request["decided_at"]),
            failover=self.failover.config,
            droplets=(witnesses.droplet_of(self.failover.config.old), witnesses.droplet_of(self.failover.config.new)),
            last_sync=self._last_sync(), flipped_at=parse_optional_time(result.get("flipped_at")),
            verification=Verification.from_json(result["verification"]) if result.get("verification") else None,
            abort_reason=_abort_reason(result), unknown_reason=result.get("unknown"))
        text, blocks = gm.text(view), gm.request_message(view)
        if request["message_ts"]:
            self.notifier.update(request["message_ts"], text, blocks)
            return request["message_ts"]
        ts = self.notifier.post(text, blocks)
        if ts:
            with self.store.transaction() as db:
                db.execute("UPDATE golive_requests SET message_ts = ? WHERE id = ?", [ts, request_id])
        return ts

    def _last_sync(self) -> tuple[str, datetime] | None:
        """The stage that finished last with success: the new server holds the old one's data up to then."""
        rows = self.store.query("SELECT stage, ended_at FROM stage_runs WHERE state = ? ORDER BY ended_at DESC LIMIT 1",
                                [RunState.SUCCEEDED.value])
        return (rows[0]["stage"], parse_time(rows[0]["ended_at"])) if rows else None

    def _thread(self, request_id: int, text: str) -> None:
        ts = self._row(request_id)["message_ts"]
        if ts:
            self.notifier.post(text, thread_ts=ts)



def _abort_reason(result: dict) -> str | None:
    """Why a request stopped before the switch: the preflight's failed checks, or the error of the write."""
    if result.get("preflight"):
        return "; ".join(c.detail for c in Preflight.from_json(result["preflight"]).failed)
    return result.get("error")
