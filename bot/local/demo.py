"""``cutover demo``: the whole launch night against local stand-ins, printed as the channel reads it.

Freezes are scheduled and announced, the clock jumps to their reminders and
start, the stages run over SSH with live progress, a go-live is requested,
the requester's own approval is refused, two people approve, the floating IP
moves and the bot proves it, then rolls back. Where the machine allows (root,
network namespaces, keepalived, sshd) the servers are the real keepalived lab;
with sshd alone, the servers run on 127.0.0.1 and a stand-in, labelled as one,
moves the VIP in keepalived's place. Each step is checked and the exit code is
0 only if every step did what it should.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from bot.clock import JumpClock
from bot.local.bot import LocalBot, start_local_bot
from bot.local.terminal import ChannelView, plain, render_blocks
from bot.night.report import write_report
from bot.plan import parse_plan
from bot.runbook.blocks import DONE_ACTION
from bot.standins.digitalocean import DigitalOceanStandIn
from bot.standins.keepalived_pair import KeepalivedPairStandIn, pair_unavailable
from bot.standins.lab import FLOATING_IP, SITES, TUNED, KeepalivedLab, lab_unavailable
from bot.standins.site import Site
from bot.standins.slack import Envelope, SlackStandIn
from bot.standins.sshd import LocalSshd, find_sshd
from bot.states import RequestState
from bot.switch.blocks import APPROVE_ACTION
from bot.switch.requests import Request
from bot.waiting import wait_until

PEOPLE = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave", "U0EVE": "eve",
          "U0CUTBOT": "cutover"}
OK = "white_check_mark"

IMPORT = ("total=600; i=0; while [ $i -le $total ]; do echo \"Processed $i/$total rows of node_revision\"; "
          "i=$((i+60)); sleep 0.5; done; echo 'import complete'")
REINDEX = "echo 'reindexing 1200 documents'; sleep 1; echo 'WARNING: 2 documents skipped'; echo done"
SYNC = "echo 'syncing sites/default/files'; sleep 2; echo '4,812 files, 1.2 GB'"
FREEZES_IN = timedelta(hours=25)
CONTENT_CHECK = {"name": "content-check", "owner": "U0EVE", "planned": "2s",
                 "instructions": "Editors' lead: confirm in the CMS that nobody has published since the content "
                                 "freeze began, then press Done."}

BASE_PLAN = {
    "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"],
              "approvers": ["U0BOB", "U0CAROL", "U0DAVE"], "required_approvals": 2,
              "approval_reaction": OK, "approval_ttl": "15m"},
    "freezes": {"reminders": ["24h", "1h", "10m"]},
}


@dataclass
class Demo:
    slack: SlackStandIn
    view: ChannelView
    clock: JumpClock
    bot: LocalBot | None = None
    lab: KeepalivedLab | KeepalivedPairStandIn | None = None
    site: Site | None = None  # the demo site's data, on the old server
    do: DigitalOceanStandIn | None = None
    results: list[tuple[str, bool]] = field(default_factory=list)

    def say(self, who: str, text: str) -> Envelope:
        self.view.line(f"\n▸ {who}: {text}")
        user = next(u for u, n in PEOPLE.items() if n == who)
        return self.slack.command(user, text.removeprefix("/cutover").strip())

    def reply(self, env: Envelope, timeout: float = 60.0) -> str:
        self.slack.wait_ack(env, timeout)
        if env.ack_payload and env.ack_payload.get("text"):
            return plain(env.ack_payload["text"], PEOPLE)
        responses = self.slack.wait_for(lambda: self.slack.responses_for(env), timeout, "a reply")
        return render_blocks(responses[-1]["blocks"], responses[-1]["text"], PEOPLE)

    def react(self, who: str, ts: str, name: str = OK) -> None:
        self.view.line(f"\n▸ {who} reacts :{name}: on the request")
        user = next(u for u, n in PEOPLE.items() if n == who)
        self.slack.react(user, name, "C0LAUNCH", ts)

    def jump(self, delta: timedelta, why: str) -> None:
        self.clock.jump(delta)
        self.view.line(f"\n⏩ the demo's clock jumps {why}")
        assert self.bot is not None
        self.bot.services.freezes.tick()

    def latest_request(self) -> tuple[Request, str]:
        """The newest go-live or rollback request, once its message is posted."""
        assert self.bot is not None
        requests = self.bot.services.records.requests
        request = requests.every()[-1]
        ts = self.slack.wait_for(lambda: requests.get(request.id).message_ts, 10, "the request message")
        return request, ts

    def check(self, what: str, ok: bool) -> None:
        self.results.append((what, ok))
        self.view.line(f"  {'✔' if ok else '✘ FAILED:'} {what}")

    def wait(self, what: str, condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
        try:
            self.slack.wait_for(condition, timeout, what)
            return True
        except TimeoutError:
            return False

    def settled(self, request_id: int, timeout: float = 90) -> RequestState:
        """The state a request ends in, once it has left the in-flight states."""
        assert self.bot is not None
        requests = self.bot.services.records.requests

        def final() -> RequestState | None:
            state = requests.get(request_id).state
            return None if state.in_flight else state

        return wait_until(final, timeout, f"request #{request_id} to settle")

    def channel_text(self) -> str:
        return "\n".join(render_blocks(m.get("blocks"), m["text"], PEOPLE) for m in self.slack.all_messages())


def run_demo(out: TextIO = sys.stdout) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cutover-demo-"))
    why_no_lab = lab_unavailable()
    with ExitStack() as stack:
        slack = stack.enter_context(SlackStandIn())
        view = ChannelView(out, started, PEOPLE)
        slack.on_post(view)
        # The clock starts a day and an hour back and jumps to the freezes' reminders and start, which arrive at
        # the real time: from then on the bot's clock and the servers' agree, as they do on a real night.
        demo = Demo(slack, view, JumpClock(-FREEZES_IN))
        plan = copy.deepcopy(BASE_PLAN)
        stage_host = "new"
        if why_no_lab is None:
            demo.do = stack.enter_context(DigitalOceanStandIn(action_delay=0.5))
            demo.lab = stack.enter_context(KeepalivedLab(work / "lab", demo.do, TUNED))
            plan = demo.lab.plan(plan)
            view.line("cutover demo — real: the Bolt app and its services, SQLite, paramiko over SSH, and a lab of two\n"
                      "servers in network namespaces, each with keepalived (VRRP), sshd and a web server. Stand-ins:\n"
                      "Slack (Web API + Socket Mode on 127.0.0.1) and the DigitalOcean API. The clock jumps ahead to\n"
                      "reach the freeze reminders.")
        elif (why_no_pair := pair_unavailable()) is None:
            demo.do = stack.enter_context(DigitalOceanStandIn(action_delay=0.5))
            demo.lab = stack.enter_context(KeepalivedPairStandIn(work / "pair", demo.do, TUNED))
            plan = demo.lab.plan(plan)
            view.line("cutover demo — real: the Bolt app and its services, SQLite, paramiko over SSH to two servers on\n"
                      "127.0.0.1, each with sshd and a web server. Stand-ins: Slack (Web API + Socket Mode), the\n"
                      "DigitalOcean API, and KEEPALIVED: the real keepalived lab cannot run here\n"
                      f"({why_no_lab}), so {KeepalivedPairStandIn.label}.\n"
                      "The clock jumps ahead to reach the freeze reminders.")
        elif find_sshd() is not None:
            sshd = LocalSshd(work / "sshd").start()
            stack.callback(sshd.stop)
            plan["hosts"] = {"new": sshd.host_entry()}
            view.line(f"cutover demo — real: the Bolt app, SQLite, paramiko to an sshd on 127.0.0.1. Stand-in: Slack.\n"
                      f"The go-live is skipped: the keepalived lab cannot run here ({why_no_lab}), nor its stand-in\n"
                      f"({why_no_pair}).")
        else:
            stage_host = ""
            view.line(f"cutover demo — real: the Bolt app and SQLite. Stand-in: Slack. Stages and the go-live need sshd\n"
                      f"(Debian package openssh-server) and {why_no_lab}; both are skipped.")
        # The night starts when the freezes do (the clock jumps 25 h to them); two steps may run side by side.
        plan["schedule"] = {"start": (demo.clock.now() + FREEZES_IN).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "max_parallel": 2}
        plan["stages"] = [CONTENT_CHECK]
        if stage_host:
            plan["stages"] += [
                {"name": "db-import", "host": stage_host, "command": IMPORT, "timeout": "10m", "planned": "4s",
                 "progress": r"Processed (?P<done>\d+)/(?P<total>\d+)", "depends_on": ["content-check"]},
                {"name": "files-sync", "host": stage_host, "command": SYNC, "planned": "3s",
                 "depends_on": ["content-check"]},
                {"name": "solr-reindex", "host": stage_host, "command": REINDEX, "depends_on": ["db-import"],
                 "notable": r"WARNING|ERROR", "planned": "2s"},
            ]
        if demo.lab is not None:
            plan["failover"]["require_freezes"] = ["content", "registration"]
            demo.site = _site(demo.lab, plan)
        demo.bot = start_local_bot(slack, parse_plan(plan, "demo plan"), str(work / "cutover.db"), clock=demo.clock,
                                   digitalocean_end_point=demo.do.end_point if demo.do else None)
        stack.callback(demo.bot.stop)
        try:
            _freezes(demo)
            _stages(demo, bool(stage_host))
            _home(demo)
            if demo.lab is not None and _golive(demo):
                _rollback(demo)
            _audit(demo)
            _report(demo, work)
        except Exception as exc:  # a broken demo must end in a summary, not a traceback
            demo.check(f"the demo ran to the end (stopped by {exc.__class__.__name__}: {exc})", False)
    failed = [w for w, ok in demo.results if not ok]
    out.write(f"\nSummary: {len(demo.results) - len(failed)}/{len(demo.results)} checks passed in "
              f"{time.monotonic() - started:.0f}s" + ("" if demo.lab is not None else " (go-live skipped)")
              + (" (keepalived was a stand-in)" if isinstance(demo.lab, KeepalivedPairStandIn) else "") + ".\n")
    for what in failed:
        out.write(f"  ✘ {what}\n")
    return 0 if not failed else 1


SITE_SCRIPT = Path(__file__).resolve().parents[1] / "standins" / "site.py"


def _site(lab: KeepalivedLab | KeepalivedPairStandIn, plan: dict) -> Site:
    """The demo site on the old server (its data in SQLite), frozen by the plan's own stages and read back by its
    checks, its data window watched, and its web tier forwarding to the new server at the flip."""
    db = lab.servers["old"].dir / "site.db"
    site = Site(db)
    script = f"{sys.executable} {SITE_SCRIPT} --db {db}"
    plan["stages"] = [
        {"name": "maintenance-on", "host": "old", "command": f"{script} set maintenance 1", "planned": "1s"},
        {"name": "registration-off", "host": "old", "command": f"{script} set registration admin_only",
         "planned": "1s"}] + plan["stages"]
    plan["freezes"]["content"] = {"start_stage": "maintenance-on", "check": f"{script} get maintenance",
                                  "frozen": "1"}
    plan["freezes"]["registration"] = {"start_stage": "registration-off", "check": f"{script} get registration",
                                       "frozen": "admin_only"}
    plan["sites"] = lab.sites()  # the multisite's three hostnames over HTTPS, with the lab's own CA
    plan["data"] = {"copy_stage": "db-import", **lab.forwarding(), "watches": [
        {"name": "sessions", "host": "old", "losses": "accepted", "command": f"{script} count sessions"},
        {"name": "saved-forms", "label": "saved forms", "host": "old", "losses": "accepted",
         "command": f"{script} count saved-forms"},
        {"name": "profile-edits", "label": "profile edits", "host": "old", "losses": "accepted",
         "command": f"{script} count profile-edits"},
        {"name": "content-edits", "label": "content edits", "host": "old", "losses": "must-be-zero",
         "freeze": "content", "command": f"{script} count content-edits"}]}
    site.session(3, int(time.time()) - 3600)  # before the copy: the new server has it
    return site


def _visitors(d: Demo) -> None:
    """While the data is copied, the old server keeps taking what the freezes let through: logins, a half-filled
    form, profile edits. No content edit: the content freeze holds."""
    if d.site is None:
        return
    d.view.line("\n▸ on the old server, visitors log in (3), fill in a form (1) and edit profiles (2) after the copy")
    for uid in (5, 6, 7):
        d.site.session(uid)
    d.site.saved_form("contact_form_a1b2")
    for uid in (8, 9):
        d.site.profile_edit(uid)


def _freezes(d: Demo) -> None:
    d.reply(d.say("alice", "/cutover freeze content at in 25h until in 30h -- editors: publish before Friday"))
    d.reply(d.say("alice", "/cutover freeze registration at in 25h until in 30h"))
    d.check("both freezes are announced", d.wait("announcements", lambda: "Registration freeze* scheduled" in d.channel_text()))
    text = d.reply(d.say("eve", "/cutover freeze content at in 1h"))
    d.check("only operators schedule freezes", text.startswith("Only operators may"))
    for step, why, expected in (
            (timedelta(hours=1), "1 hour ahead, to 24 hours before the freezes", "(in 24h 00m)"),
            (timedelta(hours=23), "23 hours ahead, to 1 hour before", "(in 1h 00m)"),
            (timedelta(minutes=50), "50 minutes ahead, to 10 minutes before", "(in 10m 00s)")):
        d.jump(step, why)
        d.check(f"both reminders {expected} go out, on time", d.channel_text().count(expected) == 2
                and "Posted late" not in d.channel_text())
    d.jump(timedelta(minutes=10), "to the start of the freezes")
    d.check("both freezes are in effect", d.channel_text().count("is now in effect") == 2)
    if d.site is not None:
        d.check("both freezes read back as holding, by the plan's own checks",
                d.wait("the read-backs", lambda: all(f"The {k} freeze holds" in d.channel_text()
                                                     for k in ("content", "registration")), 30))


def _stages(d: Demo, on_hosts: bool) -> None:
    assert d.bot is not None
    runs = d.bot.services.records.runs
    if on_hosts:
        text = d.reply(d.say("bob", "/cutover run solr-reindex"))
        d.check("a stage whose dependency has not run refuses to start", "needs `db-import`" in text)
    d.reply(d.say("alice", "/cutover run all"))
    ts = d.slack.wait_for(lambda: getattr(runs.latest().get("content-check"), "message_ts", None), 10,
                          "the person's step")
    d.wait("its Done button",
           lambda: "[ Done ]" in render_blocks(d.slack.message("C0LAUNCH", ts).get("blocks")), 5)
    time.sleep(0.5)
    d.check("run all waits for eve's step before anything that depends on it",
            runs.latest()["content-check"].state == "running" and "db-import" not in runs.latest())
    d.view.line("\n▸ eve presses Done on content-check")
    d.slack.click("U0EVE", "C0LAUNCH", ts, DONE_ACTION)
    if d.site is not None:
        d.wait("the copy to start", lambda: runs.latest().get("db-import") is not None
               and runs.latest()["db-import"].host_started_at is not None, 30)
        _visitors(d)
    d.wait("the run all summary", lambda: "`run all` by @alice finished" in d.channel_text(), 120)
    latest = runs.latest()
    d.check("eve's step is done, by eve", latest["content-check"].state == "succeeded"
            and latest["content-check"].completed_by == "U0EVE")
    if not on_hosts:
        return
    d.check("db-import, files-sync and solr-reindex succeeded over SSH",
            all(s in latest and latest[s].state == "succeeded" for s in ("db-import", "files-sync", "solr-reindex")))
    a, b = latest["db-import"], latest["files-sync"]
    d.check("db-import and files-sync ran side by side",
            a.started_at < b.ended_at and b.started_at < a.ended_at)  # type: ignore[operator]
    d.check("progress and an ETA were shown while db-import ran",
            d.wait("progress", lambda: any("left" in u and "%" in u for u in d.view.updates), 5))
    d.check("the full logs were uploaded to the threads",
            d.wait("uploads", lambda: len([f for f in d.slack.files.values() if f.get("completed")]) >= 3, 10))
    text = d.reply(d.say("eve", "/cutover status"))
    d.check("status tells the truth, against the plan's times",
            "*db-import* on `new` — succeeded" in text and "exit 0" in text and "*content* in effect" in text
            and "a step for @eve — succeeded" in text and "planned" in text and "Every step is done" in text)


def _home(d: Demo) -> None:
    """eve opens the app's Home tab: the runbook as it stands."""
    d.view.line("\n▸ eve opens the cutover app's Home tab")
    d.slack.open_home("U0EVE")
    shown = d.wait("the Home tab", lambda: "U0EVE" in d.slack.home_views, 10)
    if shown:
        d.view.line(indent_home(render_blocks(d.slack.home_views["U0EVE"]["blocks"], "", PEOPLE)))
    d.check("the Home tab shows the runbook: steps, times, freezes, go-live",
            shown and "content-check" in render_blocks(d.slack.home_views["U0EVE"]["blocks"]))


def indent_home(text: str) -> str:
    return "\n".join("  │ " + line for line in text.splitlines())


def _report(d: Demo, work: Path) -> None:
    text = d.reply(d.say("alice", "/cutover report"), 60)
    d.check("the report (Markdown) and its timeline (PNG) are uploaded",
            text.startswith("The report (Markdown) and its timeline chart (PNG) are in the channel"))
    assert d.bot is not None
    md, png, drawn = write_report(d.bot.services.plan, d.bot.services.records, d.clock.now(), work / "report")
    d.view.line(f"\nThe report is also written here: {md}\n  and its chart: {png}")
    d.check("the report has every step and the whole audit log",
            all(f"| {name} |" in md.read_text() for name in drawn)
            and md.read_text().count("\n- `") == len(d.bot.services.store.audit_log()))
    if d.site is not None:
        d.check("the report has the data window, with every row", "What the old server took after the copy" in
                md.read_text() and "  - sessions (accepted): 3" in md.read_text() and "uid 9 edited at" in md.read_text())


def _golive(d: Demo) -> bool:
    """The go-live, approved and verified; False when there is nothing to roll back."""
    assert d.bot is not None and d.lab is not None and d.do is not None
    text = d.reply(d.say("alice", "/cutover golive"))
    posted = "posted; it needs 2 approval(s)" in text
    d.check("the preflight passed and the request is posted", posted)
    if not posted:
        return False
    request, ts = d.latest_request()
    card = render_blocks(d.slack.message("C0LAUNCH", ts).get("blocks"))
    if d.site is not None:
        d.check("the card says what will be lost: 3 sessions, 1 saved form, 2 profile edits; content edits 0",
                "losing 3 sessions, 1 saved form, 2 profile edits; content edits since the copy: 0" in card)
    d.react("alice", ts)
    d.check("the requester's own approval is refused",
            d.wait("a note", lambda: any("so your approval does not count" in e["text"] for e in d.slack.ephemerals)))
    d.react("bob", ts)
    d.wait("bob's approval", lambda: "(1/2)" in render_blocks(d.slack.message("C0LAUNCH", ts).get("blocks")))
    d.view.line("\n▸ carol presses Approve on the request, and confirms")
    d.slack.click("U0CAROL", "C0LAUNCH", ts, APPROVE_ACTION)
    state = d.settled(request.id)
    d.wait("the final message", lambda: "verified" in render_blocks(d.slack.message("C0LAUNCH", ts).get("blocks")))
    d.check("the switch is verified: probe, keepalived and DigitalOcean agree", state == "verified")
    d.check(f"{_keepalived(d)} moved the VIP to the new server", d.lab.vip_holder() == "new")
    d.check("DigitalOcean shows the new droplet", d.do.holder(FLOATING_IP) == d.lab.plan({})["digitalocean"]["new_droplet"])
    if d.site is not None:
        thread = "\n".join(render_blocks(m.get("blocks"), m["text"], PEOPLE) for m in d.slack.messages("C0LAUNCH", ts))
        d.check("the old server forwarded to the new one at the flip", "forwards every request to the new server" in thread)
        d.check("every site (3 hostnames, HTTPS) answers from the new server, shown as a grid",
                "every site answers from `new` through the reserved IP" in thread and "*Every site after the switch*"
                in thread and all(f"`{name}` old ✅ `new` · new ✅ · reserved IP ✅ `new`" in thread for name in SITES))
        d.check("the go-live thread gives the final count, with the rows",
                d.wait("the final count", lambda: "the old server took 3 sessions, 1 saved form, 2 profile edits "
                                                  "(accepted); content edits: 0" in "\n".join(
                           m["text"] for m in d.slack.messages("C0LAUNCH", ts)), 20)
                and "uid 5 active at" in "\n".join(render_blocks(m.get("blocks"), m["text"], PEOPLE)
                                                   for m in d.slack.messages("C0LAUNCH", ts)))
    return state == "verified"


def _keepalived(d: Demo) -> str:
    return "the keepalived stand-in" if isinstance(d.lab, KeepalivedPairStandIn) else "keepalived"


def _rollback(d: Demo) -> None:
    assert d.bot is not None and d.lab is not None
    text = d.reply(d.say("alice", "/cutover rollback"))
    d.check("a rollback is requested", "needs 1 approval(s)" in text)
    request, ts = d.latest_request()
    d.react("dave", ts)
    state = d.settled(request.id)
    d.wait("the final message", lambda: "verified" in render_blocks(d.slack.message("C0LAUNCH", ts).get("blocks")))
    d.check("the rollback is verified and the old server serves again", state == "verified" and d.lab.vip_holder() == "old")


def _audit(d: Demo) -> None:
    text = d.reply(d.say("carol", "/cutover audit 12"))
    lines = [ln for ln in text.splitlines() if " UTC " in ln]
    d.check("the audit shows who did what, newest last", len(lines) == 12 and "@carol *audit*" in lines[-1])
