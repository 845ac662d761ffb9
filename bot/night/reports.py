"""``/cutover report``: the night's report written from the store and uploaded to the channel, honestly reported.

The report is also posted by itself once a go-live is verified. Each file is
uploaded on its own; the answer says which arrived and, for one that did
not, what Slack said, and that ``/cutover report`` tries again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.clock import Clock
from bot.night.records import Records
from bot.night.report import write_report
from bot.plan import Plan
from bot.redact import Redactor
from bot.slackapi.notifier import Notifier

log = logging.getLogger("cutover.report")


class Reports:
    def __init__(self, plan: Plan, records: Records, notifier: Notifier, clock: Clock, redactor: Redactor,
                 out_dir: Path) -> None:
        self.plan = plan
        self.records = records
        self.notifier = notifier
        self.clock = clock
        self.redactor = redactor
        self.out_dir = out_dir

    def post(self, user: str, why: str) -> tuple[bool, str]:
        """Write the report and upload both files to the channel; whether both arrived, and what to say."""
        now = self.clock.now()
        out = self.out_dir / f"report-{now:%Y%m%dT%H%M%S}"
        md, png, drawn = write_report(self.plan, self.records, now, out)
        md.write_text(self.redactor.text(md.read_text(encoding="utf-8")), encoding="utf-8")
        sent, failed = [], []
        for path, title, comment in (
                (md, "Cutover report", f"📋 The night's report ({why}): every step planned against actual, the "
                                       "freezes, the approvals, the switch and its witnesses, and the audit log."),
                (png, "Cutover timeline", None)):
            if self.notifier.upload(path, path.name, title=title, comment=comment) is not None:
                sent.append(path.name)
            else:
                failed.append(f"`{path.name}` ({self.notifier.last_error()})")
        self.records.store.audit(user, "report", why, "posted" if not failed else "failed" if not sent else "partly",
                         {"sent": sent, "failed": failed, "steps": len(drawn)})
        if failed:
            log.warning("the report was not all uploaded: %s", "; ".join(failed))
            got = f"{', '.join(f'`{n}`' for n in sent)} is in the channel; " if sent else ""
            return False, (f"{got}Slack did not take {', '.join(failed)}. `/cutover report` tries again; the bot "
                           "keeps a copy on its disk.")
        return True, "The report (Markdown) and its timeline chart (PNG) are in the channel."

    def after_verified(self, request_id: int) -> None:
        """A verified go-live ends the night's main work: the report follows by itself."""
        complete, text = self.post("cutover", f"after go-live #{request_id} was verified")
        if not complete:
            self.notifier.post(f"The report after go-live #{request_id} did not upload: {text}")
