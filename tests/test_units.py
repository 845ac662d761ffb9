"""The pure parts, tested without servers: WHEN, the notice planner, the redactor, the output scanner,
the router's parser, and the README's command table against the router."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.freezes.model import Freeze, notices_for
from bot.redact import KEEP, LONG_LINE, MARK, Redactor
from bot.runbook.grep import GrepNotable, grep_available
from bot.runbook.scan import NOTABLE_LIMIT, OutputScanner
from bot.states import FreezeState
from bot.when import WhenError, parse_when
from commands import ROUTER, UsageError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
README = Path(__file__).resolve().parent.parent / "README.md"


# -- WHEN ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2026-12-01T18:00Z", datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)),
    ("2026-12-01 18:00 Europe/Berlin", datetime(2026, 12, 1, 17, 0, tzinfo=timezone.utc)),
    ("2026-12-01T18:00+02:00", datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)),
    ("in 2h", T0 + timedelta(hours=2)),
    ("in 1h30m", T0 + timedelta(minutes=90)),
])
def test_when_accepts_zoned_times_and_durations(text, expected):
    assert parse_when(text, T0) == expected


@pytest.mark.parametrize("text, says", [
    ("2026-12-01 18:00", "has no time zone"),
    ("2026-12-01 18:00 Mars/Olympus", "is not a time zone"),
    ("2026-02-30 18:00Z", "is not a real date and time"),
    ("tomorrow", "is not a time"),
    ("in soon", "is not a duration"),
    ("", "a time is missing"),
])
def test_when_refuses_with_the_reason(text, says):
    with pytest.raises(WhenError, match=re.escape(says)):
        parse_when(text, T0)


# -- the notice planner ---------------------------------------------------------------------------------

def freeze(start: datetime, end: datetime | None = None, created: datetime = T0) -> Freeze:
    return Freeze(id=1, kind="content", state=FreezeState.SCHEDULED, start_at=start, end_at=end, note=None,
                  created_by="U0ALICE", created_at=created)


def test_notices_in_order_with_every_reminder_still_ahead():
    f = freeze(T0 + timedelta(days=2), T0 + timedelta(days=3))
    notices = notices_for(f, (timedelta(hours=24), timedelta(hours=1), timedelta(minutes=10)))
    assert [n.name for n in notices] == ["announce", "remind-24h", "remind-1h", "remind-10m", "start", "end"]
    assert [n.due for n in notices] == sorted(n.due for n in notices)


def test_reminders_already_past_when_scheduled_are_left_out():
    f = freeze(T0 + timedelta(minutes=30))
    names = [n.name for n in notices_for(f, (timedelta(hours=24), timedelta(hours=1), timedelta(minutes=10)))]
    assert names == ["announce", "remind-10m", "start"]


# -- the redactor -----------------------------------------------------------------------------------------

SECRET = "xoxb-very-secret-token"


def test_redacts_text_blocks_and_bytes_keeping_invalid_utf8():
    r = Redactor([SECRET], [re.compile(r"password=\S+")])
    assert r.text(f"token {SECRET} password=hunter2") == f"token {MARK} {MARK}"
    assert r.deep({"blocks": [{"text": SECRET}]}) == {"blocks": [{"text": MARK}]}
    raw = b"\xff\xfe " + SECRET.encode() + b" \xc3("
    assert r.bytes(raw) == b"\xff\xfe " + MARK.encode() + b" \xc3("


def test_the_stream_redacts_a_secret_split_across_chunks_and_in_a_line_without_newline():
    r = Redactor([SECRET])
    head = b"a" * (LONG_LINE + KEEP // 2 - 5)  # puts the secret across the first cut inside one long line
    src = head + SECRET.encode() + b"b" * (3 * (1 << 20)) + b"\n" + b"x" * 100 + SECRET.encode()
    out = io.BytesIO()
    r.copy(io.BytesIO(src), out)
    assert SECRET.encode() not in out.getvalue()
    assert out.getvalue() == src.replace(SECRET.encode(), MARK.encode())


def test_the_stream_copies_unchanged_when_there_is_nothing_to_redact():
    out = io.BytesIO()
    Redactor().copy(io.BytesIO(b"\xffplain\n"), out)
    assert out.getvalue() == b"\xffplain\n"


# -- the output scanner ---------------------------------------------------------------------------------------

def test_scanner_keeps_the_last_lines_and_the_latest_progress():
    s = OutputScanner(re.compile(r"Processed (?P<done>\d+)/(?P<total>\d+)"))
    scan = s.feed(b"start\nProcessed 1/10\nProcessed 2/10\nhalf a li")
    assert scan.last_lines == ("start", "Processed 1/10", "Processed 2/10")
    assert scan.progress == {"done": "2", "total": "10"}
    scan = s.feed(b"ne\nProcessed 3/10\n")
    assert scan.last_lines == ("half a line", "Processed 3/10")
    assert scan.progress == {"done": "3", "total": "10"}


def test_scanner_finds_progress_far_back_in_a_big_chunk():
    s = OutputScanner(re.compile(r"(?P<percent>\d+)%"))
    scan = s.feed(b"40%\n" + b"noise\n" * 500)
    assert scan.progress == {"percent": "40"}


def test_scanner_caps_notable_lines_and_says_so():
    s = OutputScanner(None)
    scan = s.feed(b"".join(b"ERROR number %d\n" % i for i in range(NOTABLE_LIMIT + 5)) + b"fine\n")
    assert len(scan.notable) == NOTABLE_LIMIT and scan.overflow
    assert s.feed(b"another error\n").notable == ()


def test_scanner_ignores_words_inside_other_words_and_keeps_the_unfinished_line():
    s = OutputScanner(None)
    assert s.feed(b"terrorism, errors and failedness\n").notable == ()
    assert s.feed(b"no newline yet").last_lines == ()
    assert s.flush() == "no newline yet"


# -- the router's parser ----------------------------------------------------------------------------------------

class _Plan:
    stages = ()


class _Services:
    plan = _Plan()


def test_a_mistyped_command_gets_a_suggestion():
    with pytest.raises(UsageError, match=re.escape("Did you mean `/cutover status`?")):
        ROUTER.parse("stauts", _Services())  # type: ignore[arg-type]


def test_an_empty_command_is_help_and_extra_words_are_refused():
    assert ROUTER.parse("", _Services())[0].name == "help"  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="takes no arguments"):
        ROUTER.parse("status now", _Services())  # type: ignore[arg-type]


# -- the README ---------------------------------------------------------------------------------------------------------

def test_every_command_of_the_router_is_in_the_readme_table():
    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    documented = {re.match(r"\| `(\w+)", line).group(1) for line in table}  # type: ignore[union-attr]
    documented |= {m for line in table for m in re.findall(r"/ `(\w+)", line)}
    assert set(ROUTER.commands) <= documented, set(ROUTER.commands) - documented


# -- notable lines found by grep in the local copy ----------------------------------------------------------------

@pytest.fixture
def log(tmp_path):
    """Where a grep scan reads a run's log; grep itself is needed."""
    if not grep_available():
        pytest.skip("grep is not installed")
    return tmp_path / "run.log"


def test_grep_finds_the_default_words_as_whole_words_and_looks_again_at_an_unfinished_line(log):
    log.write_bytes(b"ok\nterrorism\nERROR: disk full\n\xff Traceback (most recent call last)\nhalf an err")
    grep = GrepNotable(log, 0)
    complete = log.read_bytes().rfind(b"\n") + 1
    grep.scan(complete)
    assert grep.lines == ["ERROR: disk full", "\ufffd Traceback (most recent call last)"]
    with log.open("ab") as f:
        f.write(b"or is a fatal one\n" + b"x" * 10000 + b" panic " + b"y" * 10000 + b"\n")
    grep.scan(log.stat().st_size)
    assert grep.lines[2] == "half an error is a fatal one" and grep.lines[3].startswith("xxx")
    assert len(grep.lines[3]) == 300


def test_grep_stops_at_the_cap_and_says_so(log):
    log.write_bytes(b"".join(b"failed %d\n" % i for i in range(NOTABLE_LIMIT + 3)))
    grep = GrepNotable(log, 0)
    grep.scan(log.stat().st_size)
    assert len(grep.lines) == NOTABLE_LIMIT and grep.overflow


@pytest.mark.parametrize("text, says", [
    ("in 99999999d", "is out of range"),
    ("in 100000000000000000000s", "is out of range"),
    ("2099-12-01T18:00+99:00", "is not a UTC offset"),
    ("in 0m", "must be in the future"),
    ("2026-03-29 02:30 Europe/Berlin", "does not exist in Europe/Berlin: the clocks skip it"),
    ("2040-01-01T00:00Z", "more than 5 years ahead"),
])
def test_when_refuses_impossible_and_overflowing_times(text, says):
    with pytest.raises(WhenError, match=re.escape(says)):
        parse_when(text, T0)


def test_when_says_which_of_a_doubled_wall_clock_time_it_took():
    from bot.when import parse_when_noted

    when, note = parse_when_noted("2026-10-25 02:30 Europe/Berlin", T0)
    assert when == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)
    assert note == ("`2026-10-25 02:30` happens twice in Europe/Berlin (the clocks go back that night); the first "
                    "one was taken: 00:30 UTC (UTC+02:00).")


def test_a_probe_gives_up_on_a_server_that_trickles_its_answer():
    import socket
    import threading

    from bot.switch.probes import probe

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # bounded: 100 bytes, one every 0.3 s, unless the probe leaves first
            if stop.wait(0.3):
                break
            try:
                conn.sendall(b"x")
            except OSError:
                break
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    try:
        result = probe(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=1.0)
    finally:
        stop.set()
        server.close()
    assert result.status is None and result.error == "the answer took longer than 1s"


def test_what_slack_encodes_is_decoded_once_and_hidden_characters_are_named():
    from bot.slackapi.blocks import escape
    from commands.typed import from_slack, invisibles, refusal, visible

    typed = from_slack("R&amp;D &lt;b&gt; \u202eevil\u202c")
    assert typed == "R&D <b> \u202eevil\u202c" and escape(from_slack("R&amp;D &lt;b&gt;")) == "R&amp;D &lt;b&gt;"
    assert [(i.position, i.name) for i in invisibles(typed)] == [
        (9, "U+202E RIGHT-TO-LEFT OVERRIDE"), (14, "U+202C POP DIRECTIONAL FORMATTING")]
    assert visible(typed) == "R&D <b> \\u202eevil\\u202c"
    assert refusal("run \u202esync") == ("Your command holds an invisible character: U+202E RIGHT-TO-LEFT OVERRIDE "
                                         "at character 5, before `sync`. It can make a command read other than "
                                         "it runs; type it again without it.")
    assert "U+0007" in refusal("run sync\x07") and "character 9" in refusal("run sync\x07")
    assert "U+200B ZERO WIDTH SPACE" in refusal("run sy\u200bnc")
    assert refusal("freeze content at in 1h -- tab\there and 👩\u200d💻") is None


def test_terminal_escape_codes_never_reach_a_post():
    s = OutputScanner(None)
    scan = s.feed(b"\x1b[1;31mERROR\x1b[0m: disk \x1b]0;title\x07full\n")
    assert scan.last_lines == ("ERROR: disk full",) and scan.notable == ("ERROR: disk full",)


def test_grep_finds_a_coloured_error_as_a_word(log):
    log.write_bytes(b"\x1b[1;31mERROR\x1b[0m: disk full\nterrorism\n")
    grep = GrepNotable(log, 0)
    grep.scan(log.stat().st_size)
    assert grep.lines == ["ERROR: disk full"]


def test_the_terminal_shows_a_date_for_any_day_but_today():
    from bot.local.terminal import plain

    now = datetime.now(timezone.utc).replace(microsecond=0)
    today = plain(f"<!date^{int(now.timestamp())}^{{time_secs}}|x>")
    assert today == now.strftime("%H:%M:%S UTC")
    for when in (now - timedelta(days=3), now + timedelta(days=1, hours=1)):
        shown = plain(f"from <!date^{int(when.timestamp())}^{{date_short_pretty}}|x>")
        assert shown == "from " + when.strftime("%Y-%m-%d %H:%M UTC")


def test_the_bot_at_work_does_not_load_the_stand_ins_web_server():
    import subprocess
    import sys

    probe = "import sys, bot.cli, bot.slack.app, bot.services, bot.ops.startup; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_local_settings_keep_a_real_digitalocean_token(slack):
    from bot.local.bot import local_settings

    assert local_settings(slack, "c.db", digitalocean_end_point="https://api.example/v2/",
                          digitalocean_token="dop_v1_real").digitalocean_token == "dop_v1_real"
    assert local_settings(slack, "c.db", digitalocean_end_point="http://127.0.0.1:1/").digitalocean_token == \
        "do-standin-token"
    assert local_settings(slack, "c.db").digitalocean_token is None


def test_a_reaction_is_judged_without_its_skin_tone_and_by_slacks_name():
    from bot.plan import parse_plan, reaction_base
    from tests.conftest import PLAN

    assert reaction_base("+1::skin-tone-2") == "+1" == reaction_base("thumbsup") == reaction_base(":thumbsup:")
    people = parse_plan(PLAN, "p").people  # white_check_mark
    assert people.approves("white_check_mark") and not people.approves("+1")
    assert not people.approves("white_check_mark_button")
