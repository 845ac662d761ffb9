"""Block Kit for the data window: what the old server took after the copy, counted, listed, closed. Pure
functions of the ledger's model."""

from __future__ import annotations

from bot.ledger.model import Count, Tally
from bot.slackapi.blocks import clamp, code, context, escape, header, section, sections, sentence, slack_date

ROWS_SHOWN = 20  # rows of one watch in a message; the report lists them all (up to the plan's show_ids)


def _icon(c: Count) -> str:
    if c.count is None:
        return "❓"
    if c.must_be_zero:
        return "✅" if c.count == 0 else "🛑"
    return "📉" if c.count else "✅"


def count_line(c: Count) -> str:
    """One watch: its count, what the plan says of such losses, and why it is unknown if it is."""
    kind = "must be zero" if c.must_be_zero else "accepted"
    if c.count is None:
        return f"{_icon(c)} *{escape(c.label)}* ({kind}): *unknown*: {escape(c.error)}"
    held = f", {c.freeze} freeze" if c.freeze and c.must_be_zero else ""
    return f"{_icon(c)} *{escape(c.label)}* ({kind}{held}): {c.count:,}"


def rows_block(c: Count, limit: int = ROWS_SHOWN) -> list[str]:
    """The rows of a watch as a code block, the first ``limit`` of them, and how many more there are."""
    if not c.rows:
        return []
    shown = list(c.rows[:limit])
    left = max(0, (c.count or 0) - len(shown))
    return [code("\n".join(shown)) + (f"\n… and {left:,} more" if left else "")]


def losses_message(tally: Tally) -> list[dict]:
    """``/cutover losses``: each watch counted now, the rows where there must be none, when."""
    closed = tally.until is not None
    blocks = [header("The data window: what the old server took " + ("from the copy to the switch" if closed
                                                                     else "since the copy"))]
    if tally.since is None:
        return [*blocks, section(f"Nothing can be counted yet: {escape(tally.problem)}.")]
    lines: list[str] = []
    for c in tally.counts:
        lines.append(count_line(c))
        if c.must_be_zero or c.count is None:
            lines += rows_block(c)
    blocks += sections(lines, budget=40)
    counted = f"counted {slack_date(max(c.at for c in tally.counts))}" if tally.counts else "nothing watched"
    if closed:
        blocks.append(context(f"The window a go-live closed: from the copy {slack_date(tally.since)} to "
                              f"{slack_date(tally.until)}, when the old server stopped serving; {counted}. This count "
                              "is the go-live's final one now (the report shows it)."))
    else:
        blocks.append(context(f"Since the copy {slack_date(tally.since)} ({escape(tally.source)}); {counted}. "
                              "Accepted losses are lost when traffic moves; any must-be-zero row refuses the go-live."))
    return clamp(blocks)


def closed(tally: Tally, how: str) -> tuple[str, list[dict]]:
    """The go-live thread's word once the window has closed: the final count over all of it, with the rows."""
    if tally.since is None or tally.until is None:
        text = f"📒 The data window could not be counted: {tally.problem}"
        return text, [section(escape(text))]
    text = (f"📒 The data window closed {slack_date(tally.until)} ({how}). Since the copy {slack_date(tally.since)}, "
            f"the old server took {summary(tally)}.")
    lines = [text]
    for c in tally.counts:
        if c.count is None:
            lines.append(count_line(c))
        elif c.count:
            lines += [f"*{escape(c.label)}* ({c.count:,}):", *rows_block(c)]
    after = "Every row is in the report."
    if any(c.count is None for c in tally.counts):
        after += " `/cutover losses` counts this window again."
    return text, [*sections(lines, budget=40), context(after)]


def summary(tally: Tally) -> str:
    """``37 sessions, 4 saved forms (accepted); content edits: 0``."""
    accepted = ", ".join(c.phrase() for c in tally.accepted)
    held = "; ".join(f"{c.label}: {c.count if c.known else 'unknown'}" for c in tally.must_be_zero)
    return "; ".join(filter(None, [f"{accepted} (accepted)" if accepted else "", held])) or "nothing watched"


def status_lines(counts: list[Count], source: str) -> list[str]:
    """What status and the Home tab say of the data window: the latest count of each watch, and when."""
    if not counts:
        return []
    since = counts[0].since
    lines = [f"Since the copy {slack_date(since)} ({escape(source)}):"]
    for c in counts:
        line = count_line(c) + f" · counted {slack_date(c.at, '{time_secs}')}"
        if c.must_be_zero and c.count:
            line += ": " + escape("; ".join(c.rows[:3])) + (" …" if c.count > 3 else "")
        lines.append(line)
    return lines


def approval_numbers(tally: Tally) -> str:
    """The numbers an approver accepts, for the card and its confirm dialog."""
    return sentence(tally.losing())
