"""Freezes and their notices, the record: every write to ``freezes`` and ``freeze_notices``, and every read.

A notice is claimed by inserting its row before it is posted, with the
freeze's own change of state (scheduled → active at its start, active →
ended at its end) in the same transaction: no restart posts a notice twice,
and a start is posted exactly when the freeze takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from bot.clock import Clock, parse_time
from bot.freezes.model import Freeze, Notice
from bot.states import CURRENT_FREEZES, FreezeState, sql_in
from bot.store import Store


class FreezeClash(Exception):
    """A freeze of that kind is already scheduled or in effect."""

    def __init__(self, existing: Freeze) -> None:
        super().__init__(existing.kind)
        self.existing = existing


class NoSuchFreeze(Exception):
    """No freeze of that kind is in the state asked for; ``other`` is one in the other current state, if any."""

    def __init__(self, other: Freeze | None) -> None:
        super().__init__("no such freeze")
        self.other = other


@dataclass(frozen=True)
class Unconfirmed:
    """A notice claimed but not confirmed posted (Slack refused it, or the bot died between the two)."""

    freeze_id: int
    notice: str  # its name; NAME@CHANNEL for an announce_to channel's copy
    due: datetime


class FreezeRecords:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- reading -------------------------------------------------------------------------------------

    def get(self, freeze_id: int) -> Freeze:
        return Freeze.from_row(self.store.get("freezes", freeze_id))

    def current(self) -> list[Freeze]:
        """Scheduled and active freezes, by start."""
        return [Freeze.from_row(r) for r in self.store.query(
            f"SELECT * FROM freezes WHERE state IN {sql_in(CURRENT_FREEZES)} ORDER BY start_at")]

    def every(self) -> list[Freeze]:
        return [Freeze.from_row(r) for r in self.store.query("SELECT * FROM freezes ORDER BY start_at, id")]

    def active_kinds(self) -> set[str]:
        return {f.kind for f in self.current() if f.state == FreezeState.ACTIVE}

    def notices_claimed(self, freeze_id: int) -> set[str]:
        return {r["notice"] for r in self.store.query("SELECT notice FROM freeze_notices WHERE freeze_id = ?",
                                                      [freeze_id])}

    def outcome(self, freeze_id: int, notice: str) -> str | None:
        """What became of a notice: pending, posted, late, failed, skipped or merged; None if not claimed."""
        rows = self.store.query("SELECT outcome FROM freeze_notices WHERE freeze_id = ? AND notice = ?",
                                [freeze_id, notice])
        return rows[0]["outcome"] if rows else None

    def unconfirmed(self, claimed_before: datetime) -> list[Unconfirmed]:
        return [Unconfirmed(r["freeze_id"], r["notice"], parse_time(r["due_at"])) for r in self.store.query(
            "SELECT * FROM freeze_notices WHERE outcome IN ('pending', 'failed') AND posted_at <= ?",
            [claimed_before.isoformat()])]

    # -- a freeze's life ---------------------------------------------------------------------------------

    def add(self, kind: str, start: datetime, end: datetime | None, note: str | None, user: str) -> Freeze:
        """A scheduled freeze; FreezeClash when one of its kind is already scheduled or in effect."""
        now = self.clock.now()
        with self.store.transaction() as db:
            clash = list(db["freezes"].rows_where(f"kind = ? AND state IN {sql_in(CURRENT_FREEZES)}", [kind]))
            if clash:
                raise FreezeClash(Freeze.from_row(clash[0]))
            freeze_id = db["freezes"].insert({
                "kind": kind, "start_at": start.isoformat(), "end_at": end.isoformat() if end else None, "note": note,
                "state": FreezeState.SCHEDULED.value, "created_by": user, "created_at": now.isoformat()}).last_pk
        return self.get(freeze_id)

    def lift(self, kind: str) -> tuple[Freeze, bool]:
        """Lift the freeze of ``kind`` in effect now, claiming its end notice in the same write; the freeze and
        whether the end notice was claimed here. NoSuchFreeze (with a scheduled one, if any) when none is."""
        now = self.clock.now()
        with self.store.transaction() as db:
            rows = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.ACTIVE.value]))
            if not rows:
                scheduled = list(db["freezes"].rows_where("kind = ? AND state = ?",
                                                          [kind, FreezeState.SCHEDULED.value]))
                raise NoSuchFreeze(Freeze.from_row(scheduled[0]) if scheduled else None)
            freeze = Freeze.from_row(rows[0])
            db["freezes"].update(freeze.id, {"state": FreezeState.LIFTED.value, "lifted_at": now.isoformat()})
            return freeze, self._claim(db, freeze.id, "end", now, now)

    def cancel(self, kind: str) -> Freeze:
        """Cancel the scheduled freeze of ``kind``; NoSuchFreeze (with one in effect, if any) when none is."""
        with self.store.transaction() as db:
            rows = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.SCHEDULED.value]))
            if not rows:
                active = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.ACTIVE.value]))
                raise NoSuchFreeze(Freeze.from_row(active[0]) if active else None)
            db["freezes"].update(rows[0]["id"], {"state": FreezeState.CANCELLED.value})
            return Freeze.from_row(rows[0])

    # -- notices --------------------------------------------------------------------------------------------

    def claim(self, freeze_id: int, notice: Notice, now: datetime) -> bool:
        """Claim a notice to post now, with the freeze's change of state it brings: a start only while the
        freeze is scheduled (it becomes active), an end only while it is active (it ends). False when it was
        claimed before, or the freeze is past the state it needs."""
        with self.store.transaction() as db:
            state = db["freezes"].get(freeze_id)["state"]
            if notice.kind == "start" and state != FreezeState.SCHEDULED \
                    or notice.kind == "end" and state != FreezeState.ACTIVE:
                return False
            if not self._claim(db, freeze_id, notice.name, notice.due, now):
                return False
            if notice.kind == "start":
                db["freezes"].update(freeze_id, {"state": FreezeState.ACTIVE.value})
            elif notice.kind == "end":
                db["freezes"].update(freeze_id, {"state": FreezeState.ENDED.value})
            return True

    def claim_alone(self, freeze_id: int, notice: Notice, now: datetime, outcome: str = "pending") -> bool:
        """Claim a notice's row alone, with no change to its freeze: its copy for another channel, or a notice
        passed over (``skipped``: its freeze started; ``merged``: a later one stands for it). False if it was
        claimed before."""
        with self.store.transaction() as db:
            return self._claim(db, freeze_id, notice.name, notice.due, now, outcome=outcome)

    def said(self, freeze_id: int, notice: str, outcome: str, at: datetime | None = None) -> None:
        """What became of a claimed notice: posted, late or failed (``at``: when it was tried)."""
        with self.store.transaction() as db:
            if at is None:
                db.execute("UPDATE freeze_notices SET outcome = ? WHERE freeze_id = ? AND notice = ?",
                           [outcome, freeze_id, notice])
            else:
                db.execute("UPDATE freeze_notices SET outcome = ?, posted_at = ? WHERE freeze_id = ? AND notice = ?",
                           [outcome, at.isoformat(), freeze_id, notice])

    @staticmethod
    def _claim(db: sqlite_utils.Database, freeze_id: int, notice: str, due: datetime, now: datetime,
               outcome: str = "pending") -> bool:
        return db.execute("INSERT OR IGNORE INTO freeze_notices (freeze_id, notice, due_at, posted_at, outcome) "
                          "VALUES (?, ?, ?, ?, ?)", [freeze_id, notice, due.isoformat(), now.isoformat(),
                                                     outcome]).rowcount == 1
