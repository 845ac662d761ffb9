"""Go-live and rollback requests, the record: every write to ``golive_requests``, ``approvals`` and
``health_backups``, and every read of them, as typed ``Request``s.

Each step of a request is one conditional update in one transaction (``move``):
only the thread whose update finds the state it expects takes the step, so two
threads, or two processes, can never both take it. An approval and the
decision it triggers are one write too. A request's stored preflight and
result are decoded here, once, into the switch's model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlite_utils.db import NotFoundError

from bot.clock import Clock, parse_optional_time, parse_time
from bot.refusals import Refused
from bot.slackapi.blocks import sentence
from bot.states import IN_FLIGHT, RequestState, sql_in
from bot.store import Store
from bot.switch.model import WHAT, Preflight, Verification

BUTTON = "button"  # an approval's "reaction" when it was given with the Approve button
SWITCHED = (RequestState.FLIPPING, RequestState.FLIPPED, RequestState.VERIFIED, RequestState.UNVERIFIED,
            RequestState.UNKNOWN)


class RequestRefused(Refused):
    """Why a go-live or rollback request cannot be made now, worded for the operator."""


@dataclass(frozen=True)
class Request:
    id: int
    kind: str  # golive or rollback
    state: RequestState
    requested_by: str
    created_at: datetime
    expires_at: datetime
    required: int
    channel: str | None = None
    message_ts: str | None = None
    decided_at: datetime | None = None
    preflight: Preflight | None = None  # the one that let it be posted
    flipped_at: datetime | None = None  # when the old server says the switch was written
    action: str | None = None
    verification: Verification | None = None
    error: str | None = None  # why the write did not happen
    unknown: str | None = None  # why it cannot yet be told whether it happened
    stopped_by: Preflight | None = None  # the preflight at the threshold that stopped it
    forwarded_at: datetime | None = None  # when the old server began forwarding to the new one, by its clock
    forward_error: str | None = None  # why it did not

    @property
    def what(self) -> str:
        return WHAT[self.kind]

    @property
    def abort_reason(self) -> str | None:
        """Why it stopped before the switch: the preflight's failed checks, or the error of the write."""
        if self.stopped_by is not None:
            return "; ".join(c.detail for c in self.stopped_by.failed)
        return self.error

    @classmethod
    def from_row(cls, row: dict) -> "Request":
        result = json.loads(row["result"] or "{}")
        verification = result.get("verification")
        return cls(id=row["id"], kind=row["kind"], state=RequestState(row["state"]), requested_by=row["requested_by"],
                   created_at=parse_time(row["created_at"]), expires_at=parse_time(row["expires_at"]),
                   required=row["required"], channel=row["channel"], message_ts=row["message_ts"],
                   decided_at=parse_optional_time(row["decided_at"]),
                   preflight=Preflight.from_json(json.loads(row["preflight"])) if row["preflight"] else None,
                   flipped_at=parse_optional_time(result.get("flipped_at")), action=result.get("action"),
                   verification=Verification.from_json(verification) if verification else None,
                   error=result.get("error"), unknown=result.get("unknown"),
                   stopped_by=Preflight.from_json(result["preflight"]) if result.get("preflight") else None,
                   forwarded_at=parse_optional_time(result.get("forwarded_at")),
                   forward_error=result.get("forward_error"))


@dataclass(frozen=True)
class Approval:
    user: str
    reaction: str
    at: datetime


@dataclass(frozen=True)
class Backup:
    """What the old server's health file held before a flip, so that a rollback restores exactly that."""

    request_id: int
    host: str
    path: str
    content: str
    saved_at: datetime


@dataclass
class Facts:
    """What a step of a request learned, stored with it: each given one replaces what was there."""

    flipped_at: datetime | None = None
    action: str | None = None
    verification: Verification | None = None
    error: str | None = None
    unknown: str | None = None
    stopped_by: Preflight | None = None
    forwarded_at: datetime | None = None
    forward_error: str | None = None
    extra: dict = field(default_factory=dict)

    def encoded(self) -> dict:
        out: dict = {}
        for name in ("flipped_at", "forwarded_at"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).isoformat()
        for name in ("action", "error", "unknown", "forward_error"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.verification is not None:
            out["verification"] = self.verification.to_json()
        if self.stopped_by is not None:
            out["preflight"] = self.stopped_by.to_json()
        return {**out, **self.extra}


class Requests:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- reading ------------------------------------------------------------------------------------

    def get(self, request_id: int) -> Request:
        try:
            return Request.from_row(self.store.get("golive_requests", request_id))
        except NotFoundError:
            raise LookupError(f"no request #{request_id}") from None

    def _where(self, sql: str, params: list | tuple = ()) -> list[Request]:
        return [Request.from_row(r) for r in self.store.query(f"SELECT * FROM golive_requests WHERE {sql}", params)]

    def on_message(self, channel: str, ts: str) -> Request | None:
        """The request whose message this is, if any."""
        found = self._where("channel = ? AND message_ts = ?", [channel, ts])
        return found[0] if found else None

    def in_flight(self) -> list[Request]:
        """Requests not yet settled: waiting for approvals, or switching and verifying."""
        return self._where(f"state IN {sql_in(IN_FLIGHT)} ORDER BY id")

    def in_state(self, *states: RequestState) -> list[Request]:
        return self._where(f"state IN {sql_in(states)} ORDER BY id")

    def every(self) -> list[Request]:
        return self._where("1 ORDER BY id")

    def last_switch(self) -> Request | None:
        """The last request that made (or may have made) the switch."""
        found = self._where(f"state IN {sql_in(SWITCHED)} ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    # -- a request's life --------------------------------------------------------------------------------

    def create(self, kind: str, user: str, required: int, ttl: timedelta, channel: str,
               preflight: Preflight) -> int:
        """A new open request, unless another is in flight (one at a time: RequestRefused)."""
        now = self.clock.now()
        with self.store.transaction() as db:
            busy = list(db.query(f"SELECT id, kind, requested_by FROM golive_requests WHERE state IN "
                                 f"{sql_in(IN_FLIGHT)}"))
            if busy:
                raise RequestRefused(f"{sentence(WHAT[busy[0]['kind']])} request #{busy[0]['id']} by "
                                     f"<@{busy[0]['requested_by']}> is still in progress; one at a time.")
            return db["golive_requests"].insert({
                "kind": kind, "state": RequestState.OPEN.value, "requested_by": user, "created_at": now.isoformat(),
                "expires_at": (now + ttl).isoformat(), "required": required, "channel": channel,
                "preflight": json.dumps(preflight.to_json())}).last_pk

    def move(self, request_id: int, from_state: RequestState, to_state: RequestState, facts: Facts | None = None,
             audit: tuple[str, str, dict] | None = None) -> bool:
        """One step of the state machine; False if another thread took it first. ``audit`` (action, outcome,
        detail) is recorded in the same transaction, so the audit log never lags the state."""
        with self.store.transaction() as db:
            row = db["golive_requests"].get(request_id)
            merged = {**json.loads(row["result"] or "{}"), **(facts.encoded() if facts else {})}
            moved = db.execute("UPDATE golive_requests SET state = ?, result = ? WHERE id = ? AND state = ?",
                               [to_state.value, json.dumps(merged), request_id, from_state.value]).rowcount == 1
            if moved and audit is not None:
                self.store.audit("cutover", audit[0], f"#{request_id}", audit[1], audit[2], db=db)
            return moved

    def posted(self, request_id: int, ts: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE golive_requests SET message_ts = ? WHERE id = ?", [ts, request_id])

    def expire_due(self) -> list[int]:
        """Open requests whose time is up, now expired; their ids."""
        now = self.clock.now().isoformat()
        with self.store.transaction() as db:
            due = [r["id"] for r in db["golive_requests"].rows_where("state = ? AND expires_at <= ?",
                                                                       [RequestState.OPEN.value, now])]
            for request_id in due:
                db.execute("UPDATE golive_requests SET state = ? WHERE id = ? AND state = ?",
                           [RequestState.EXPIRED.value, request_id, RequestState.OPEN.value])
        return due

    # -- approvals -----------------------------------------------------------------------------------------

    def approve(self, request_id: int, user: str, reaction: str) -> str:
        """Count ``user``'s approval, in one write with its consequence: ``counted``; ``threshold`` (this one
        reached the required number and moved the request to deciding); ``again`` (it was counted already, given
        another way); ``expired`` (the request's time was up: it is expired now); ``closed`` (it was no longer
        open)."""
        now = self.clock.now()
        with self.store.transaction() as db:
            row = db["golive_requests"].get(request_id)
            if row["state"] != RequestState.OPEN:
                return "closed"
            if now >= parse_time(row["expires_at"]):
                db.execute("UPDATE golive_requests SET state = ? WHERE id = ? AND state = ?",
                           [RequestState.EXPIRED.value, request_id, RequestState.OPEN.value])
                return "expired"
            if db.execute("INSERT OR IGNORE INTO approvals (request_id, user, reaction, approved_at) VALUES (?, ?, ?, ?)",
                          [request_id, user, reaction, now.isoformat()]).rowcount == 0:
                return "again"
            count = db.execute("SELECT COUNT(*) FROM approvals WHERE request_id = ?", [request_id]).fetchone()[0]
            if count < row["required"]:
                return "counted"
            taken = db.execute("UPDATE golive_requests SET state = ?, decided_at = ? WHERE id = ? AND state = ?",
                               [RequestState.DECIDING.value, now.isoformat(), request_id,
                                RequestState.OPEN.value]).rowcount
            return "threshold" if taken else "closed"

    def withdraw(self, request_id: int, user: str, by_button: bool) -> bool:
        """Take ``user``'s approval back while the request is open, if it was given the same way (a reaction taken
        back withdraws a reaction's approval, the Withdraw button a button's); False when there was none to take,
        or the decision was already taken."""
        with self.store.transaction() as db:
            return db.execute("DELETE FROM approvals WHERE request_id = ? AND user = ? AND (reaction = ?) = ? AND "
                              "EXISTS (SELECT 1 FROM golive_requests WHERE id = ? AND state = ?)",
                              [request_id, user, BUTTON, int(by_button), request_id,
                               RequestState.OPEN.value]).rowcount == 1

    def approvals(self, request_id: int) -> list[Approval]:
        return [Approval(r["user"], r["reaction"], parse_time(r["approved_at"])) for r in self.store.query(
            "SELECT user, reaction, approved_at FROM approvals WHERE request_id = ? ORDER BY approved_at",
            [request_id])]

    # -- the old server's health file before a flip --------------------------------------------------------------

    def save_backup(self, request_id: int, host: str, path: str, content: str) -> None:
        with self.store.transaction() as db:
            db["health_backups"].insert({"request_id": request_id, "host": host, "path": path, "content": content,
                                         "saved_at": self.clock.now().isoformat()})

    def last_backup(self) -> Backup | None:
        rows = self.store.query("SELECT * FROM health_backups ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        return Backup(r["request_id"], r["host"], r["path"], r["content"], parse_time(r["saved_at"]))
