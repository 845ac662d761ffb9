"""HTTP mode's server under what a public endpoint gets: oversized, unsigned, malformed, slow and simultaneous
requests, and its health endpoints. The bot runs as a real process where memory is measured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bot.local.bot import local_settings
from bot.services import build_services
from bot.slack.app import build_app, serve_http
from bot.slack.front import BODY_LIMIT, IDLE_TIMEOUT
from tests.conftest import OPERATOR, reply_text
from tests.helpers import example_home

SECRET_MARK = "not-for-the-log-7c1f"


@pytest.fixture
def served(slack, plan, tmp_path, caplog):
    caplog.set_level("DEBUG")
    services = build_services(local_settings(slack, str(tmp_path / "cutover.db")), plan)
    server = serve_http(build_app(services), services, 0, host="127.0.0.1")
    slack.use_http(f"http://127.0.0.1:{server.server_port}/slack/events")
    yield services, server.server_port
    server.shutdown()
    services.close()


def raw(port: int, data: bytes, *, timeout: float = 10.0, read: bool = True) -> bytes:
    """Send bytes on a new connection and read the answer until the server closes or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: the answer is still there to read
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def signed_command(slack, text: str = "help") -> tuple[bytes, dict]:
    body = urllib.parse.urlencode({"command": "/cutover", "text": text, "user_id": OPERATOR, "channel_id": "C0LAUNCH",
                                   "team_id": slack.team_id, "trigger_id": "1.2.3",
                                   "response_url": f"{slack.url}/response/x"})
    return body.encode(), slack.signed_headers(body)


def request_bytes(body: bytes, headers: dict, content_type: str = "application/x-www-form-urlencoded") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{head}Connection: close\r\n\r\n").encode() + body


def test_an_oversized_body_is_refused_from_its_headers_without_being_read(served, caplog):
    _, port = served
    head = (f"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: {100 * 1024 * 1024}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode()
    answer = raw(port, head)  # nothing of the body is sent: the answer comes from the headers alone
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    chunked = (b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"10000\r\n" + b"a" * 0x10000 + b"\r\n" for _ in range(BODY_LIMIT // 0x10000 + 2)))
    assert raw(port, chunked).startswith(b"HTTP/1.1 413")
    assert "Traceback" not in caplog.text


def test_unsigned_and_wrongly_signed_requests_get_401_and_their_bodies_stay_out_of_the_log(served, slack, caplog):
    services, port = served
    body, headers = signed_command(slack, f"freeze content -- {SECRET_MARK}")
    for sent_headers in ({}, {**headers, "X-Slack-Signature": "v0=" + "0" * 64},
                         {**headers, "X-Slack-Request-Timestamp": str(int(time.time()) - 3600)}):
        answer = raw(port, request_bytes(body, sent_headers))
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"Traceback" not in answer
    assert services.store.recent_audit() == [] and slack.responses == []
    assert "refused a request without a valid Slack signature" in caplog.text
    assert SECRET_MARK not in caplog.text


@pytest.mark.parametrize("data", [
    b"NONSENSE\r\n\r\n",
    b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: banana\r\n\r\n",
    b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET /slack/events HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n",
], ids=["request line", "content length", "transfer encoding", "GET"])
def test_malformed_http_gets_a_4xx_without_a_traceback(served, caplog, data):
    _, port = served
    answer = raw(port, data)
    assert answer.split(b" ")[1] in (b"400", b"405", b"501"), answer[:200]
    assert b"Traceback" not in answer and "Traceback" not in caplog.text


@pytest.mark.parametrize("body,content_type", [
    ("payload=%7Bnot+json", "application/x-www-form-urlencoded"),
    ("{not json", "application/json"),
    ("\udcff", "application/json"),
], ids=["form payload", "json", "not utf-8"])
def test_a_signed_body_that_does_not_parse_gets_400_and_acts_on_nothing(served, slack, caplog, body, content_type):
    services, port = served
    data = body.encode("utf-8", "surrogateescape")
    text = data.decode("latin-1")
    headers = slack.signed_headers(text) if body != "\udcff" else _signed_bytes(slack, data)
    answer = raw(port, request_bytes(data, headers, content_type))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"Traceback" not in answer and "Traceback" not in caplog.text
    assert services.store.recent_audit() == []


def _signed_bytes(slack, data: bytes) -> dict:
    import hashlib
    import hmac

    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(slack.signing_secret.encode(), f"v0:{ts}:".encode() + data, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def test_half_sent_requests_hold_no_threads_and_are_closed_when_idle(served, slack):
    _, port = served
    before = threading.active_count()
    held = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: 500\r\n\r\nhalf")
        held.append(sock)
    try:
        env = slack.command(OPERATOR, "help")  # a real request still gets through
        assert env.http_status == 200 and "/cutover audit [N]" in reply_text(slack, env)
        assert threading.active_count() - before < 40, "a thread per held connection"
        time.sleep(IDLE_TIMEOUT + 1)
        deadline = time.monotonic() + 30
        open_ones = list(held)
        while open_ones and time.monotonic() < deadline:
            still = []
            for sock in open_ones:
                sock.settimeout(0.01)
                try:
                    if sock.recv(1024) == b"":
                        continue
                except socket.timeout:
                    still.append(sock)
                    continue
                except ConnectionResetError:
                    continue
            open_ones = still
            time.sleep(0.5)
        assert not open_ones, f"{len(open_ones)} idle connections still open"
    finally:
        for sock in held:
            sock.close()


def test_fifty_simultaneous_signed_commands_are_all_answered(served, slack):
    start = threading.Barrier(50)
    results: list[object] = []

    def one() -> None:
        start.wait()
        try:
            results.append(slack.command(OPERATOR, "help").http_status)
        except Exception as exc:  # a reset or refused connection is what this test looks for
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 50, [r for r in results if r != 200][:3]


def test_healthz_answers_and_readyz_says_what_is_not_ready(served):
    services, port = served
    assert get(port, "/healthz") == (200, {"ok": True})
    status, body = get(port, "/readyz")  # the scheduler has not been started in this fixture
    assert status == 503 and body["ready"] is False
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["slack"]["ok"] and checks["database"]["ok"]
    assert not checks["scheduler"]["ok"] and "not running" in checks["scheduler"]["detail"]
    assert get(port, "/nowhere")[0] == 404


def test_readyz_is_ready_when_slack_the_database_and_the_scheduler_are(slack, plan, tmp_path):
    services = build_services(local_settings(slack, str(tmp_path / "cutover.db")), plan)
    services.start()
    server = serve_http(build_app(services), services, 0, host="127.0.0.1")
    try:
        status, body = get(server.server_port, "/readyz")
        assert status == 200 and body["ready"] is True, body
    finally:
        server.shutdown()
        services.close()


def test_readiness_names_a_locked_database_and_an_unreachable_slack(slack, plan, tmp_path):
    import sqlite3

    from bot.ops.health import Readiness
    from bot.store import database_writable

    db = tmp_path / "cutover.db"
    services = build_services(local_settings(slack, str(db)), plan)
    try:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        problem = database_writable(str(db), 2.0)
        holder.execute("ROLLBACK")
        holder.close()
        assert problem is not None and "does not take writes" in problem and "locked" in problem
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            gone = closed.getsockname()[1]
        settings = local_settings(slack, str(db))
        away = Readiness(type(settings)(**{**settings.__dict__, "slack_api_url": f"http://127.0.0.1:{gone}/api/"}),
                         services.scheduler)
        slack_item = away.check()[0]
        assert not slack_item.ok and "gave no answer" in slack_item.detail
    finally:
        services.close()


def test_the_bot_process_stays_small_under_oversized_and_unsigned_floods(slack, tmp_path):
    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
           "CUTOVER_PLAN": str(plan), "CUTOVER_DB": str(tmp_path / "c.db"), **example_home(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--http", "--port", str(port)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "bot.log", "ab"))
    try:
        slack.wait_for(lambda: _answers(port), 30, "the bot to listen")
        before = _rss_kib(proc.pid)
        head = (f"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: {100 * 1024 * 1024}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode()
        filler = b"a" * (4 * 1024 * 1024)
        for _ in range(10):  # 100 MB declared and 4 MB actually sent, each
            raw(port, head + filler)
        unsigned = request_bytes(b"b" * (BODY_LIMIT - 100), {})
        for _ in range(30):
            assert raw(port, unsigned).startswith(b"HTTP/1.1 401")
        grown = _rss_kib(proc.pid) - before
        assert grown < 48 * 1024, f"the process grew by {grown} KiB"
        log = (tmp_path / "bot.log").read_text()
        assert "bbbbbbbbbb" not in log and len(log) < 64 * 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def _answers(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_status_local_reads_the_running_bots_health_and_knows_a_stopped_one(slack, tmp_path):
    from tests.helpers import start_bot_process

    plan = Path(__file__).resolve().parent.parent / "cutover.example.toml"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": slack.app_token, "SLACK_API_URL": slack.api_url,
           "CUTOVER_PLAN": str(plan), "CUTOVER_DB": str(tmp_path / "c.db"), **example_home(tmp_path)}

    def status() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", "status", "--local"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)

    before = status()
    assert before.returncode == 1 and "no health file" in before.stdout
    proc = start_bot_process(slack, env, tmp_path)
    try:
        slack.wait_for(lambda: (tmp_path / "c.db.health.json").exists(), 30, "the health file")
        ready = status()
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "✔ slack:" in ready.stdout and "✔ database:" in ready.stdout and "✔ scheduler:" in ready.stdout
        assert "ready (socket mode" in ready.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    stopped = status()
    assert stopped.returncode == 1 and "the bot has stopped" in stopped.stdout


def test_a_health_file_gone_stale_is_not_ready(tmp_path):
    from datetime import datetime, timedelta, timezone

    from bot.ops.health import Item, read_health, write_health

    path = tmp_path / "h.json"
    write_health(path, [Item("slack", True, "fine")], "http")
    assert read_health(path)[0] is True
    ready, lines = read_health(path, now=datetime.now(timezone.utc) + timedelta(minutes=5))
    assert ready is False and "has stopped, or its watchdog has" in lines[-1]
    path.write_text("{half")
    assert read_health(path) == (False, [f"✘ the health file {path} cannot be read: JSONDecodeError"])
