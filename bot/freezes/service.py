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
from dataclasses import replace
from datetime import datetime, timedelta

from typing import Callable

from apscheduler.schedulers.base import BaseScheduler

from bot.clock import Clock
from bot.freezes import blocks as fm
from bot.freezes.model import Freeze, FreezeListing, Notice, ReadBack, notices_for
from bot.freezes.records import FreezeClash, FreezeRecords, NoSuchFreeze
from bot.plan import Plan
from bot.refusals import Refused
from bot.runbook.runner import StageRunner
from bot.slackapi.notifier import Notifier
from bot.ssh import SSHError, SSHPool
from bot.states import FreezeState, RunState
from bot.workers import Workers

log = logging.getLogger("cutover.freezes")

LATE_AFTER = timedelta(minutes=1)
RETRY_PENDING_AFTER = timedelta(minutes=1)
CATCH_UP_SECONDS = 15
NOTICE_EVENT = "cutover_freeze_notice"


class FreezeRefused(Refused):
    """Why a freeze cannot be scheduled, cancelled or lifted now."""


class Freezes:
    def __init__(self, plan: Plan, records: FreezeRecords, audit: Callable[..., object], notifier: Notifier,
                 clock: Clock, scheduler: BaseScheduler, workers: Workers, stages: StageRunner,
                 ssh: SSHPool | None = None) -> None:
        self.ssh = ssh
        self.plan = plan
        self.records = records
        self.audit = audit
        self.notifier = notifier
        self.clock = clock
        self.scheduler = scheduler
        self.workers = workers
        self.stages = stages
        self._tick_lock = threading.Lock()

    # -- commands -------------------------------------------------------------------------

    def schedule(self, kind: str, start: datetime, end: datetime | None, note: str | None, user: str) -> Freeze:
        if kind not in self.plan.freezes.kinds:
            raise FreezeRefused(f"`{kind}` is not a freeze kind; the plan has "
                                + ", ".join(f"`{k}`" for k in self.plan.freezes.kinds) + ".")
        try:
            freeze = self.records.add(kind, start, end, note, user)
        except FreezeClash as clash:
            c = clash.existing
            raise FreezeRefused(f"A {fm.title(kind)} is already {c.state} (from {fm.slack_date(c.start_at)}); "
                                + (f"`freeze cancel {kind}`" if c.state == FreezeState.SCHEDULED
                                   else f"`unfreeze {kind}`") + " first.") from None
        self.audit(user, "freeze-scheduled", kind, "ok",
                   {"start": start.isoformat(), "end": end.isoformat() if end else None})
        self.tick()
        self.rebuild_jobs()
        return self.records.get(freeze.id)

    def lift(self, kind: str, user: str) -> str:
        now = self.clock.now()
        try:
            freeze, claimed = self.records.lift(kind)
        except NoSuchFreeze as none:
            hint = f" It is only scheduled: `freeze cancel {kind}` cancels it." if none.other else ""
            raise FreezeRefused(f"No {fm.title(kind)} is in effect.{hint}") from None
        self.audit(user, "unfreeze", kind, "ok")
        if claimed:
            self._post_notice(freeze.id, Notice("end", now, "end"), now, by=user)
        self.rebuild_jobs()
        return f"The {fm.title(kind)} is lifted."

    def cancel(self, kind: str, user: str) -> str:
        try:
            freeze = self.records.cancel(kind)
        except NoSuchFreeze as none:
            raise FreezeRefused(f"No {fm.title(kind)} is scheduled"
                                + (f"; one is in effect: `unfreeze {kind}` lifts it." if none.other else ".")) from None
        self.audit(user, "freeze-cancelled", kind, "ok")
        start = freeze.start_at
        self.notifier.post(*fm.cancelled(kind, start, user))
        for channel in self.plan.freezes.kinds[kind].announce_to:  # they heard of it: they hear it is off
            if self.notifier.post(*fm.cancelled(kind, start, user), channel=channel) is None:
                self.audit("cutover", "freeze-cancel-notice", kind, "failed",
                                 {"channel": channel, "error": self.notifier.last_error()})
        self.rebuild_jobs()
        return f"The {fm.title(kind)} planned for {fm.slack_date(start)} is cancelled."

    def listing(self) -> list[FreezeListing]:
        out = []
        for freeze in self.records.current():
            done = self.records.notices_claimed(freeze.id)
            pending = tuple(n for n in notices_for(freeze, self.plan.freezes.reminders) if n.name not in done)
            out.append(FreezeListing(freeze, pending))
        return out

    def read_back(self, kind: str) -> ReadBack | None:
        """Run the freeze's check on its host: whether the site reads back as frozen. None when the plan gives the
        kind no check."""
        freeze = self.plan.freezes.kinds[kind]
        if freeze.check is None or freeze.frozen is None or freeze.check_host is None or self.ssh is None:
            return None
        base = ReadBack(kind, freeze.check, freeze.check_host, freeze.frozen, self.clock.now())
        try:
            result = self.ssh.run(freeze.check_host, freeze.check, timeout=freeze.check_timeout.total_seconds())
        except SSHError as exc:
            return replace(base, error=str(exc))
        if result.exit_code != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            return replace(base, error=f"it exited {result.exit_code}" + (f": {said[-1][:200]}" if said else ""))
        return replace(base, printed=result.stdout.strip())

    def notice_outcome(self, freeze_id: int, notice: str) -> str | None:
        """What became of a notice: pending, posted, late, failed, skipped or merged; None if not claimed."""
        return self.records.outcome(freeze_id, notice)

    # -- time ---------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Post whatever is due now; safe to call at any time, from any job, any number of times."""
        with self._tick_lock:
            now = self.clock.now()
            for freeze in self.records.current():
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
                self.records.claim_alone(freeze.id, notice, now, "merged")
                continue
            if notice.kind == "remind" and now >= freeze.start_at:
                if self.records.claim_alone(freeze.id, notice, now, "skipped"):
                    skipped.append(notice.name.removeprefix("remind-"))
                continue
            if not self.records.claim(freeze.id, notice, now):
                continue
            self._say_skipped(freeze, skipped)
            self._post_notice(freeze.id, notice, now)
        self._say_skipped(freeze, skipped)

    def _say_skipped(self, freeze: Freeze, skipped: list[str]) -> None:
        """One note for the reminders skipped in this pass, before whatever is posted next."""
        if skipped:
            self.notifier.post(*fm.skipped(freeze.kind, skipped))
            self.audit("cutover", "reminders-skipped", freeze.kind, "skipped", {"reminders": skipped})
            skipped.clear()

    def _post_notice(self, freeze_id: int, notice: Notice, now: datetime, by: str | None = None) -> None:
        """A claimed notice in the launch channel, then in each ``announce_to`` channel, then its stage if any."""
        freeze = self.records.get(freeze_id)
        ts = self._say(freeze_id, notice, now, by)
        for channel in self.plan.freezes.kinds[freeze.kind].announce_to:
            # the same notice for the people outside the launch channel; each channel's notice is its own record
            elsewhere = Notice(f"{notice.name}@{channel}", notice.due, notice.kind)
            if self.records.claim_alone(freeze_id, elsewhere, now):
                self._say(freeze_id, elsewhere, now, by)
        if ts and notice.kind in ("start", "end"):
            stage = getattr(self.plan.freezes.kinds[freeze.kind], f"{notice.kind}_stage")
            read_back = notice.kind == "start" and self.plan.freezes.kinds[freeze.kind].check is not None
            if stage:
                self.workers.submit(f"{notice.kind} stage of the {freeze.kind} freeze",
                                    self._run_stage, freeze.kind, notice.kind, stage, ts if read_back else None)
            elif read_back:
                self.workers.submit(f"read-back of the {freeze.kind} freeze", self._say_read_back, freeze.kind, ts)

    def _say(self, freeze_id: int, notice: Notice, now: datetime, by: str | None = None) -> str | None:
        """Post one claimed notice and record what became of it; ``NAME@CHANNEL`` is a notice in another channel
        (``announce_to``), a bare name one in the launch channel. Returns the message's ts, None if refused."""
        freeze = self.records.get(freeze_id)
        name, _, channel = notice.name.partition("@")
        late = now - notice.due > LATE_AFTER
        text, blocks = fm.notice(freeze, notice.kind, name, now, late=late, due=notice.due, by=by,
                                 reminders=self.plan.freezes.reminders)
        ts = self.notifier.post(text, blocks, channel=channel or None, metadata=_mark(freeze_id, notice.name))
        outcome = ("late" if late else "posted") if ts else "failed"
        self.records.said(freeze_id, notice.name, outcome, now)
        where = {"channel": channel, **({} if ts else {"error": self.notifier.last_error()})} if channel else {}
        self.audit("cutover", f"freeze-{notice.kind}", freeze.kind, outcome, {"notice": notice.name, **where})
        return ts

    def _retry_pending(self, now: datetime) -> None:
        """A notice claimed but not confirmed (a failed post, or a bot that died mid-post) is tried again,
        unless the channel shows it was posted after all: each notice's message carries a marker in its
        metadata, looked for before posting again, so a notice is posted at most once."""
        for row in self.records.unconfirmed(now - RETRY_PENDING_AFTER):
            name, _, channel = row.notice.partition("@")
            found = self.notifier.find_marked(NOTICE_EVENT, _mark(row.freeze_id, row.notice)["event_payload"],
                                              channel=channel or None)
            if found is None:
                log.warning("cannot tell whether notice %s of freeze %d was posted (Slack's history did not "
                            "answer); asking again later", row.notice, row.freeze_id)
                continue
            if found:
                self.records.said(row.freeze_id, row.notice, "posted")
                self.audit("cutover", f"freeze-{name.split('-')[0]}", self.records.get(row.freeze_id).kind, "posted",
                           {"notice": row.notice, "reason": "found in the channel after a restart", "ts": found})
                continue
            notice = Notice(row.notice, row.due, name.split("-")[0])
            if channel:
                self._say(row.freeze_id, notice, now)  # that channel alone
            else:
                self._post_notice(row.freeze_id, notice, now)

    def _say_read_back(self, kind: str, ts: str) -> None:
        """At the freeze's start (after its start stage, if any, has run), whether the site reads back as frozen."""
        reading = self.read_back(kind)
        if reading is None:
            return
        self.audit("cutover", "freeze-read-back", kind, "frozen" if reading.frozen else
                   "unknown" if reading.printed is None else "not frozen", {"printed": reading.printed,
                                                                           "error": reading.error})
        required = self.plan.failover is not None and kind in self.plan.failover.require_freezes
        self.notifier.post(*fm.read_back(reading, required), thread_ts=ts)

    def _run_stage(self, kind: str, when: str, stage: str, read_back_to: str | None = None) -> None:
        """Run a freeze's start or end stage and say how it ended; then, at the start, read the freeze back (in the
        thread ``read_back_to``)."""
        try:
            run_id = self.stages.start(stage, "cutover")
        except Refused as exc:
            self.notifier.post(f"The {when} stage `{stage}` of the {fm.title(kind)} did not start: {exc}")
        else:
            state = self.stages.wait(run_id)
            self.notifier.post(f"{'✅' if state == RunState.SUCCEEDED else '❌'} The {when} stage `{stage}` of the "
                               f"{fm.title(kind)} {state}.")
        if read_back_to is not None:
            self._say_read_back(kind, read_back_to)

    # -- jobs ------------------------------------------------------------------------------------------------

    def rebuild_jobs(self) -> None:
        """One APScheduler job per notice still ahead, from the record; plus a catch-up tick."""
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
