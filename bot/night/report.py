"""The night's report for the retrospective: a Markdown document and a PNG timeline, from the records and the plan.

Everything in it is read back from what the bot recorded: the steps' runs,
the freezes, the requests with their approvals, the switch and the
witnesses that verified it, and the whole audit log, one line per entry.
Nothing here talks to Slack or to a host; ``cutover report --db`` writes
the same two files a ``/cutover report`` uploads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bot.durations import format_duration
from bot.freezes.model import Freeze
from bot.ledger.model import Count
from bot.night.records import Records
from bot.night.timetable import Timetable, build_timetable, lateness
from bot.plan import Plan
from bot.plan.model import PATH_WORDS
from bot.states import NOT_RUN, FreezeState, RequestState, RunState
from bot.switch.model import Verification
from bot.switch.requests import Request

MARKDOWN_NAME = "cutover-report.md"
CHART_NAME = "cutover-timeline.png"
ROW_INCHES = 0.38
MAX_CHART_INCHES = 60


@dataclass(frozen=True)
class StepRow:
    name: str
    who: str  # "on `host`" or "for <owner>"
    state: str
    started_at: datetime | None
    ended_at: datetime | None
    started_by: str | None
    completed_by: str | None
    detail: str | None


@dataclass(frozen=True)
class ReportData:
    plan_path: str
    now: datetime
    timetable: Timetable
    steps: list[StepRow]
    freezes: list[Freeze]
    switches: list[Request]
    approvals: dict[int, list[tuple[str, datetime]]]  # request id -> who approved it, when
    audit: list[dict]
    last_stage: tuple[str, datetime] | None  # the stage that succeeded last before the first switch
    finals: dict[int, list[Count]] = field(default_factory=dict)  # go-live -> its closed data window, per watch


def collect(plan: Plan, records: Records, now: datetime) -> ReportData:
    runs = records.runs
    latest = runs.latest()
    steps = []
    for stage in plan.stages:
        run = latest.get(stage.name)
        steps.append(StepRow(
            name=stage.name, who=f"for {stage.owner}" if stage.manual else f"on `{stage.host}`",
            state=run.state if run else NOT_RUN, started_at=run.started_at if run else None,
            ended_at=run.ended_at if run else None, started_by=run.started_by if run else None,
            completed_by=run.completed_by if run else None, detail=run.detail if run else None))
    switches = records.requests.every()
    first_flip = next((s.flipped_at for s in switches if s.kind == "golive" and s.flipped_at), None)
    return ReportData(plan_path=plan.path, now=now,
                      timetable=build_timetable(plan, latest, runs.last_durations(), now), steps=steps,
                      freezes=records.freezes.every(), switches=switches,
                      approvals={r.id: [(a.user, a.at) for a in records.requests.approvals(r.id)] for r in switches},
                      audit=records.store.audit_log(), last_stage=runs.last_succeeded(before=first_flip),
                      finals={r.id: records.counts.final(r.id) for r in switches if r.kind == "golive"})


# -- Markdown ------------------------------------------------------------------------------------------------


def _t(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "—"


def _cell(text: object) -> str:
    """A value fit for a Markdown table cell: Slack's mention markup as plain @ids, no pipes or line breaks."""
    if text is None:
        return "—"
    return _MENTION.sub(r"@\1", str(text)).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_MENTION = re.compile(r"<@([A-Z0-9]+)>")


def audit_line(event: dict) -> str:
    """One audit entry as the report shows it: every field, in the table's order."""
    detail = f" · {event['detail']}" if event["detail"] else ""
    return (f"- `{event['at']}` · {_cell(event['actor'])} · {_cell(event['action'])} · "
            f"{_cell(event['target']) or '—'} · {_cell(event['outcome'])}{_cell(detail) if detail else ''}")


def markdown(data: ReportData) -> str:
    t = data.timetable
    out = [f"# Cutover report: {data.plan_path}", "", f"Written {_t(data.now)} from the bot's records.", ""]
    if t.start:
        out.append(f"- The night was planned to start {_t(t.start)}"
                   + (f" and reach the go-live {_t(t.planned_end)}." if t.planned_end else "."))
    if t.unknown:
        out.append("- The go-live time cannot be projected: " + ", ".join(f"`{n}`" for n in t.unknown)
                   + " had no planned time and no successful run.")
    elif t.projected_end:
        late = f" ({_late(t.late_by)} against the plan)" if t.late_by is not None else ""
        out.append(f"- Steps done (or projected done) by {_t(t.projected_end)}{late}.")
    out += ["", "## Steps", "",
            "| step | who | state | planned start | planned end | actual start | actual end | took | late | "
            "started by | completed by / detail |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    times = {s.name: s for s in t.steps}
    for s in data.steps:
        plan_t = times[s.name]
        took = format_duration(s.ended_at - s.started_at) if s.started_at and s.ended_at else "—"
        late = _late(s.ended_at - plan_t.planned_end) if s.ended_at and plan_t.planned_end else "—"
        done = ": ".join(filter(None, [s.completed_by, s.detail])) or "—"
        out.append(f"| {_cell(s.name)} | {_cell(s.who)} | {_cell(s.state)} | {_t(plan_t.planned_start)} | "
                   f"{_t(plan_t.planned_end)} | {_t(s.started_at)} | {_t(s.ended_at)} | {took} | {late} | "
                   f"{_cell(s.started_by)} | {_cell(done)} |")
    out += ["", "## Freezes", ""]
    if data.freezes:
        out += ["| kind | state | from | until | scheduled by | note |", "| --- | --- | --- | --- | --- | --- |"]
        for f in data.freezes:
            out.append(f"| {_cell(f.kind)} | {_cell(f.state)} | {_t(f.start_at)} | {_t(f.end_at)} | "
                       f"{_cell(f.created_by)} | {_cell(f.note)} |")
    else:
        out.append("None.")
    out += ["", "## Go-live and rollback", ""]
    if not data.switches:
        out += ["No go-live was requested.", ""]
    for s in data.switches:
        label = "Go-live" if s.kind == "golive" else "Rollback"
        out += [f"### {label} #{s.id}: {s.state}", "",
                f"- Requested by {s.requested_by} at {_t(s.created_at)}."]
        out.append("- Approvals: " + (", ".join(f"{u} at {_t(at)}" for u, at in data.approvals[s.id]) or "none")
                   + ".")
        if s.flipped_at:
            out.append(f"- Switched at {_t(s.flipped_at)} (the old server's health file written).")
        elif s.error or s.unknown:
            out.append(f"- Not switched: {s.error or s.unknown}")
        v = s.verification
        if v:
            out.append(f"- Verification ({'passed' if v.ok else 'failed'}), towards `{v.target}`:")
            for w in v.witnesses:
                at = f" ({w.at.isoformat()})" if w.at else ""
                out.append(f"  - {'✅' if w.ok else '❌'} {w.name}: {_cell(w.detail)}{at}")
        elif s.state in (RequestState.FLIPPED, RequestState.UNKNOWN):
            out.append("- Verification: not finished when this report was written.")
        if v and s.flipped_at:
            out += _timings(s.flipped_at, v)
        if s.kind == "golive" and s.flipped_at and data.last_stage:
            stage, ended = data.last_stage
            first = v.first_answer_at if v else None
            moved = (f", and the first answer from `{v.target}` "
                     f"{format_duration(first - ended, tenths=True)} after it ended" if v and first else "")
            out.append(f"- Data window: the last stage, `{stage}`, ended {_t(ended)}; the switch came "
                       f"{format_duration(s.flipped_at - ended, tenths=True)} later{moved}. Anything written to the "
                       "old server until traffic moved is not on the new one unless a freeze kept it out.")
        out += _window(data.finals.get(s.id) or [])
        out.append("")
    out += ["## Audit log", "", f"Every entry of the audit log ({len(data.audit)}), oldest first: "
            "at · who · action · target · outcome · detail.", ""]
    out += [audit_line(e) for e in data.audit]
    return "\n".join(out) + "\n"


def _timings(flipped: datetime, v: Verification) -> list[str]:
    """The flip as each side saw it, counted from the health-file write: keepalived's move, DigitalOcean's action
    from start to completion, each site's first answer from the target; then the sites grid."""
    def after(at: datetime | None) -> str:
        return f"{_t(at)} (+{(at - flipped).total_seconds():.1f}s)" if at else "—"

    out = [f"- Timings from the flip ({_t(flipped)}):",
           f"  - keepalived on `{v.target}` entered MASTER: {after(v.master_at)}",
           f"  - DigitalOcean's assign action: started {after(v.action_started_at)}, completed "
           f"{after(v.action_completed_at)}"]
    out += [f"  - {site}: first answer from `{v.target}` on every moving path {after(at)}"
            for site, at in sorted(v.site_answers.items(), key=lambda item: item[1])]
    if v.grid is not None and v.grid.cells:
        out += ["", "| site | " + " | ".join(PATH_WORDS[p] for p in v.grid.paths) + " |",
                "| --- |" + " --- |" * len(v.grid.paths)]
        for site in v.grid.sites:
            cells = [v.grid.cell(site, p) for p in v.grid.paths]
            out.append(f"| {_cell(site)} | " + " | ".join(
                "–" if c is None else ("✅ " + (c.server or "") if c.ok else "❌ " + _cell(c.reason)) for c in cells)
                + " |")
        out.append("")
    return out


def _window(counts: list[Count]) -> list[str]:
    """A go-live's closed data window: what the old server took after the copy, per watch, every row."""
    if not counts:
        return []
    c0 = counts[0]
    out = [f"- What the old server took after the copy ({_t(c0.since)} to {_t(c0.until)}), counted {_t(c0.at)}:"]
    for c in counts:
        kind = "must be zero" if c.must_be_zero else "accepted"
        out.append(f"  - {c.label} ({kind}): " + (f"{c.count:,}" if c.known else f"unknown ({_cell(c.error)})"))
        out += [f"    - `{_cell(row)}`" for row in c.rows]
        if c.more:
            out.append(f"    - … and {c.more:,} more the watch printed")
    return out


def _late(delta: timedelta | None) -> str:
    return "—" if delta is None else lateness(delta)


# -- the chart -------------------------------------------------------------------------------------------------

_STATE_COLOURS = {RunState.SUCCEEDED: "#2a9d8f", RunState.FAILED: "#e63946", RunState.RUNNING: "#457b9d",
                  RunState.STARTING: "#457b9d", RunState.CANCELLED: "#8d99ae", RunState.TIMED_OUT: "#f4a261",
                  RunState.LOST: "#6c757d"}


def chart(data: ReportData, path: Path) -> list[str]:
    """Draw the timeline: per step a planned bar and an actual bar, freezes as bands, each switch as a line.
    Returns the steps drawn, top to bottom."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure  # a figure of its own, not pyplot's global state: reports may overlap

    times = {s.name: s for s in data.timetable.steps}
    names = [s.name for s in data.steps]
    rows = max(len(names), 1)
    height = min(MAX_CHART_INCHES, 1.8 + ROW_INCHES * rows)
    fig = Figure(figsize=(11, height), dpi=100)
    ax = fig.subplots()
    span: list[datetime] = []
    for i, s in enumerate(data.steps):
        y = rows - 1 - i
        planned = times[s.name]
        if planned.planned_start and planned.planned_end:
            ax.barh(y + 0.2, planned.planned_end - planned.planned_start, left=planned.planned_start,
                    height=0.35, color="#d9d9d9", edgecolor="#999999")
            span += [planned.planned_start, planned.planned_end]
        if s.started_at:
            end = s.ended_at or data.now
            ax.barh(y - 0.2, max(end - s.started_at, timedelta(seconds=1)), left=s.started_at, height=0.35,
                    color=_STATE_COLOURS.get(s.state, "#457b9d"),
                    hatch=None if s.ended_at else "//")
            span += [s.started_at, end]
    shown = [f for f in data.freezes if f.state != FreezeState.CANCELLED]
    for n, f in enumerate(shown):
        start, end = f.start_at, f.end_at
        right = end or max(span + [start]) + timedelta(minutes=1)
        ax.axvspan(start, right, color="#a8dadc", alpha=0.25, zorder=0)
        ax.text(start, rows - 0.45 - 0.28 * (n % 3), f" {f.kind} freeze", fontsize=8, va="bottom",
                color="#1d3557")  # stacked: freezes that start together stay legible
        span += [start]
    flips = [sw for sw in data.switches if sw.flipped_at]
    for n, sw in enumerate(flips):
        colour = "#1d3557" if sw.kind == "golive" else "#e76f51"
        ax.axvline(sw.flipped_at, color=colour, linewidth=2)
        ax.text(sw.flipped_at, -0.95 + 0.3 * (n % 2), f" {'go-live' if sw.kind == 'golive' else 'rollback'} "
                f"#{sw.id}", fontsize=8, color=colour, va="bottom")  # alternate heights: close flips stay legible
        span.append(sw.flipped_at)
    ax.set_yticks(range(rows))
    ax.set_yticklabels(list(reversed(names)) or ["(no steps)"], fontsize=9)
    ax.set_ylim(-1, rows)
    if span:
        lo, hi = min(span), max(span)
        pad = max((hi - lo) * 0.03, timedelta(seconds=5))
        ax.set_xlim(lo - pad, hi + pad)
    else:
        ax.text(0.5, 0.5, "nothing has run yet", transform=ax.transAxes, ha="center", va="center")
    locator = mdates.AutoDateLocator(tz=data.now.tzinfo)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=data.now.tzinfo))
    ax.set_xlabel("UTC")
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)
    ax.set_title(f"Cutover timeline: {Path(data.plan_path).name}\n", fontsize=11)
    ax.text(0.5, 1.01, "upper bar: planned · lower bar: actual (green succeeded, red failed, blue still open) · "
            "band: freeze · line: switch", transform=ax.transAxes, ha="center", va="bottom", fontsize=8,
            color="#555555")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return names


def write_report(plan: Plan, records: Records, now: datetime, out: Path) -> tuple[Path, Path, list[str]]:
    """Write the Markdown and the PNG into ``out``; returns their paths and the steps drawn."""
    out.mkdir(parents=True, exist_ok=True)
    data = collect(plan, records, now)
    md = out / MARKDOWN_NAME
    md.write_text(markdown(data), encoding="utf-8")
    png = out / CHART_NAME
    drawn = chart(data, png)
    return md, png, drawn
