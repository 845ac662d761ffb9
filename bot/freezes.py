"""Freezes: announced when scheduled, reminded ahead, started and lifted on time — even across restarts.

SQLite is the source of truth. Each freeze has a list of notices (announce,
one reminder per offset still ahead when it was scheduled, start, end), and a
notice is claimed by inserting its row — with the freeze's state change, in
one transaction — before it is posted, so no restart posts it twice. APScheduler
only wakes ``tick()`` up at the right moments; its jobs are rebuilt from the
store at start, and a slow interval job catches anything missed. A notice
posted more than a minute after it was due says it is late; a reminder whose
freeze has already started is skipped, and that is said once.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import sqlite_utils
from apscheduler.schedulers.base import BaseScheduler

from bot import freeze_messages as fm
from bot.clock import Clock, parse_time
from bot.freeze_plan import Freeze, FreezeListing, Notice, notices_for
from bot.notifier import Notifier
from bot.plan import Plan
from bot.refusals import Refused
from bot.stages import StageRunner
from bot.states import FreezeState, RunState
from bot.store import Store
from bot.workers import Workers

log = logging.getLogger("cutover.freezes")

LATE_AFTER = timedelta(minutes=1)
RETRY_PENDING_AFTER = timedelta(minutes=1)
CATCH_UP_SECONDS = 15
NOTICE_EVENT = "cutover_freeze_notice"


class FreezeRefused(Refused):
    """Why a freeze cannot be scheduled, cancelled or lifted now."""


class Freezes:
    def __init__(self, plan: Plan, store: Store, notifier: Notifier, clock: Clock, scheduler: BaseScheduler,
                 workers: Workers, stages: StageRunner) -> None:
        self.plan = plan
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.scheduler = scheduler
        self.workers = workers
        self.stages = stages
        self._tick_lock = threading.Lock()

    # -- commands -------------------------------------------------------------------------

    def schedule(self, kind: str, start: datetime, end: datetime | None, note: str | None, user: str) -> Freeze:
        now = self.clock.now()
        if kind not in self.plan.freezes.kinds:
            raise FreezeRefused(f"`{kind}` is not a freeze kind; the plan has "
                                + ", ".join(f"`{k}`" for k in self.plan.freezes.kinds) + ".")
        with self.store.transaction() as db:
            clash = list(db["freezes"].rows_where("kind = ? AND state IN (?, ?)",
                                                  [kind, FreezeState.SCHEDULED.value, FreezeState.ACTIVE.value]))
            if clash:
                c = clash[0]
                raise FreezeRefused(f"A {fm.title(kind)} is already {c['state']} (from "
                                    f"{fm.slack_date(parse_time(c['start_at']))}); "
                                    + (f"`freeze cancel {kind}`" if c["state"] == FreezeState.SCHEDULED
                                       else f"`unfreeze {kind}`")
                                    + " first.")
            freeze_id = db["freezes"].insert({
                "kind": kind, "start_at": start.isoformat(), "end_at": end.isoformat() if end else None,
                "note": note, "state": FreezeState.SCHEDULED.value, "created_by": user, "created_at": now.isoformat()}).last_pk
        self.store.audit(user, "freeze-scheduled", kind, "ok",
                            {"start": start.isoformat(), "end": end.isoformat() if end else None})
        self.tick()
        self.rebuild_jobs()
        return self._freeze(freeze_id)

    def lift(self, kind: str, user: str) -> str:
        now = self.clock.now()
        with self.store.transaction() as db:
            rows = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.ACTIVE.value]))
            if not rows:
                scheduled = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.SCHEDULED.value]))
                hint = f" It is only scheduled: `freeze cancel {kind}` cancels it." if scheduled else ""
                raise FreezeRefused(f"No {fm.title(kind)} is in effect.{hint}")
            freeze = rows[0]
            db["freezes"].update(freeze["id"], {"state": FreezeState.LIFTED.value, "lifted_at": now.isoformat()})
            claimed = self._claim(db, freeze["id"], "end", now, now)
        self.store.audit(user, "unfreeze", kind, "ok")
        if claimed:
            self._post_notice(freeze["id"], Notice("end", now, "end"), now, by=user)
        self.rebuild_jobs()
        return f"The {fm.title(kind)} is lifted."

    def cancel(self, kind: str, user: str) -> str:
        with self.store.transaction() as db:
            rows = list(db["freezes"].rows_where("kind = ? AND state = ?", [kind, FreezeState.SCHEDULED.value]))
            if not rows:
                raise FreezeRefused(f"No {fm.title(kind)} is scheduled"
                                    + (f"; one is in effect: `unfreeze {kind}` lifts it." if self._active(kind) else "."))
            db["freezes"].update(rows[0]["id"], {"state": FreezeState.CANCELLED.value})
        self.store.audit(user, "freeze-cancelled", kind, "ok")
        start = parse_time(rows[0]["start_at"])
        self.notifier.post(*fm.cancelled(kind, start, user))
        for channel in self.plan.freezes.kinds[kind].announce_to:  # they heard of it: they hear it is off
            if self.notifier.post(*fm.cancelled(kind, start, user), channel=channel) is None:
                self.store.audit("cutover", "freeze-cancel-notice", kind, "failed",
                                 {"channel": channel, "error": self.notifier.last_error()})
        self.rebuild_jobs()
        return f"The {fm.title(kind)} planned for {fm.slack_date(start)} is cancelled."

    def listing(self) -> list[FreezeListing]:
        out = []
        for freeze in self.current():
            done = {r["notice"] for r in self.store.query(
                "SELECT notice FROM freeze_notices WHERE freeze_id = ?", [freeze.id])}
            pending = tuple(n for n in notices_for(freeze, self.plan.freezes.reminders) if n.name not in done)
            out.append(FreezeListing(freeze, pending))
        return out

    def notice_outcome(self, freeze_id: int, notice: str) -> str | None:
        """What became of a notice: pending, posted, late, failed, skipped or merged; None if not claimed."""
        rows = self.store.query("SELECT outcome FROM freeze_notices WHERE freeze_id = ? AND notice = ?",
                                [freeze_id, notice])
        return rows[0]["outcome"] if rows else None

    def current(self) -> list[Freeze]:
        return [Freeze.from_row(r) for r in self.store.current_freezes()]

    def _active(self, kind: str) -> bool:
        return bool(self.store.query("SELECT id FROM freezes WHERE kind = ? AND state = ?",
                                     [kind, FreezeState.ACTIVE.value]))

    def _freeze(self, freeze_id: int) -> Freeze:
        return Freeze.from_row(self.store.get("freezes", freeze_id))

    # -- time ---------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Post whatever is due now; safe to call at any time, from any job, any number of times."""
        with self._tick_lock:
            now = self.clock.now()
            for freeze in self.current():
                self._tick_freeze(freeze, now)
            self._retry_pending(now)

    def _tick_freeze(self, freeze: Freeze, now: datetime) -> None:
        skipped: list[str] = []
        notices = notices_for(freeze, self.plan.freezes.reminders)
        due_reminders = [n for n in notices if n.kind == "remind" and n.due <= now]
        for notice in notices:
            if notice.due > now:
                break
            if notice.kind == "remind" and now < freeze.start_at and notice is not due_reminders[-1]:
                # Down across several reminders: one notice, timed from now, stands for all of them.
                with self.store.transaction() as db:
                    self._claim(db, freeze.id, notice.name, notice.due, now, outcome="merged")
                continue
            with self.store.transaction() as db:
                state = db["freezes"].get(freeze.id)["state"]
                if notice.kind == "remind" and now >= freeze.start_at:
                    if self._claim(db, freeze.id, notice.name, notice.due, now, outcome="skipped"):
                        skipped.append(notice.name.removeprefix("remind-"))
                    continue
                if notice.kind == "start" and state != FreezeState.SCHEDULED \
                        or notice.kind == "end" and state != FreezeState.ACTIVE:
                    continue
                if not self._claim(db, freeze.id, notice.name, notice.due, now):
                    continue
                if notice.kind == "start":
                    db["freezes"].update(freeze.id, {"state": FreezeState.ACTIVE.value})
                elif notice.kind == "end":
                    db["freezes"].update(freeze.id, {"state": FreezeState.ENDED.value})
            self._say_skipped(freeze, skipped)
            self._post_notice(freeze.id, notice, now)
        self._say_skipped(freeze, skipped)

    def _say_skipped(self, freeze: Freeze, skipped: list[str]) -> None:
        """One note for the reminders skipped in this pass, before whatever is posted next."""
        if skipped:
            self.notifier.post(*fm.skipped(freeze.kind, skipped))
            self.store.audit("cutover", "reminders-skipped", freeze.kind, "skipped", {"reminders": skipped})
            skipped.clear()

    def _claim(self, db: sqlite_utils.Database, freeze_id: int, notice: str, due: datetime, now: datetime,
               outcome: str = "pending") -> bool:
        return db.execute("INSERT OR IGNORE INTO freeze_notices (freeze_id, notice, due_at, posted_at, outcome) "
                          "VALUES (?, ?, ?, ?, ?)", [freeze_id, notice, due.isoformat(), now.isoformat(),
                                                     outcome]).rowcount == 1

    def _post_notice(self, freeze_id: int, notice: Notice, now: datetime, by: str | None = None) -> None:
        """A claimed notice in the launch channel, then in each ``announce_to`` channel, then its stage if any."""
        freeze = self._freeze(freeze_id)
        ts = self._say(freeze_id, notice, now, by)
        for channel in self.plan.freezes.kinds[freeze.kind].announce_to:
            # the same notice for the people outside the launch channel; each channel's notice is its own record
            elsewhere = Notice(f"{notice.name}@{channel}", notice.due, notice.kind)
            with self.store.transaction() as db:
                claimed = self._claim(db, freeze_id, elsewhere.name, notice.due, now)
            if claimed:
                self._say(freeze_id, elsewhere, now, by)
        if ts and notice.kind in ("start", "end"):
            stage = getattr(self.plan.freezes.kinds[freeze.kind], f"{notice.kind}_stage")
            if stage:
                self.workers.submit(f"{notice.kind} stage of the {freeze.kind} freeze",
                                    self._run_stage, freeze.kind, notice.kind, stage)

    def _say(self, freeze_id: int, notice: Notice, now: datetime, by: str | None = None) -> str | None:
        """Post one claimed notice and record what became of it; ``NAME@CHANNEL`` is a notice in another channel
        (``announce_to``), a bare name one in the launch channel. Returns the message's ts, None if refused."""
        freeze = self._freeze(freeze_id)
        name, _, channel = notice.name.partition("@")
        late = now - notice.due > LATE_AFTER
        text, blocks = fm.notice(freeze, notice.kind, name, now, late=late, due=notice.due, by=by,
                                 reminders=self.plan.freezes.reminders)
        ts = self.notifier.post(text, blocks, channel=channel or None, metadata=_mark(freeze_id, notice.name))
        outcome = ("late" if late else "posted") if ts else "failed"
        with self.store.transaction() as db:
            db.execute("UPDATE freeze_notices SET outcome = ?, posted_at = ? WHERE freeze_id = ? AND notice = ?",
                       [outcome, now.isoformat(), freeze_id, notice.name])
        where = {"channel": channel, **({} if ts else {"error": self.notifier.last_error()})} if channel else {}
        self.store.audit("cutover", f"freeze-{notice.kind}", freeze.kind, outcome, {"notice": notice.name, **where})
        return ts

    def _retry_pending(self, now: datetime) -> None:
        """A notice claimed but not confirmed (a failed post, or a bot that died mid-post) is tried again,
        unless the channel shows it was posted after all: each notice's message carries a marker in its
        metadata, looked for before posting again, so a notice is posted at most once."""
        cutoff = (now - RETRY_PENDING_AFTER).isoformat()
        for row in self.store.query(
                "SELECT * FROM freeze_notices WHERE outcome IN ('pending', 'failed') AND posted_at <= ?", [cutoff]):
            name, _, channel = row["notice"].partition("@")
            found = self.notifier.find_marked(NOTICE_EVENT, _mark(row["freeze_id"], row["notice"])["event_payload"],
                                              channel=channel or None)
            if found is None:
                log.warning("cannot tell whether notice %s of freeze %d was posted (Slack's history did not "
                            "answer); asking again later", row["notice"], row["freeze_id"])
                continue
            if found:
                with self.store.transaction() as db:
                    db.execute("UPDATE freeze_notices SET outcome = ? WHERE freeze_id = ? AND notice = ?",
                               ["posted", row["freeze_id"], row["notice"]])
                self.store.audit("cutover", f"freeze-{name.split('-')[0]}",
                                 self._freeze(row["freeze_id"]).kind, "posted",
                                 {"notice": row["notice"], "reason": "found in the channel after a restart",
                                  "ts": found})
                continue
            notice = Notice(row["notice"], parse_time(row["due_at"]), name.split("-")[0])
            if channel:
                self._say(row["freeze_id"], notice, now)  # that channel alone
            else:
                self._post_notice(row["freeze_id"], notice, now)

    def _run_stage(self, kind: str, when: str, stage: str) -> None:
        try:
            run_id = self.stages.start(stage, "cutover")
        except Refused as exc:
            self.notifier.post(f"The {when} stage `{stage}` of the {fm.title(kind)} did not start: {exc}")
            return
        state = self.stages.wait(run_id)
        self.notifier.post(f"{'✅' if state == RunState.SUCCEEDED else '❌'} The {when} stage `{stage}` of the "
                                    f"{fm.title(kind)} {state}.")

    # -- jobs ------------------------------------------------------------------------------------------------

    def rebuild_jobs(self) -> None:
        """One APScheduler job per notice still ahead, from the store; plus a catch-up tick."""
        scheduler = self.scheduler
        for job in scheduler.get_jobs():
            if job.id.startswith("freeze-"):
                job.remove()
        scheduler.add_job(self.tick, "interval", seconds=CATCH_UP_SECONDS, id="freeze-catch-up",
                          max_instances=1, coalesce=True, replace_existing=True)
        now = self.clock.now()
        for item in self.listing():
            for notice in item.pending:
                if notice.due > now:
                    scheduler.add_job(self.tick, "date", run_date=notice.due, id=f"freeze-{item.freeze.id}-{notice.name}",
                                      misfire_grace_time=None, replace_existing=True)


def _mark(freeze_id: int, notice: str) -> dict:
    """The metadata that marks a notice's message, so that a restart can tell it was posted."""
    return {"event_type": NOTICE_EVENT, "event_payload": {"freeze_id": freeze_id, "notice": notice}}
