"""The real Bolt app behind ``cutover run --http``: signed requests only."""

import json
import time
import urllib.parse

import pytest

from bot.app import build_app, serve_http
from bot.local import local_settings
from bot.services import build_services
from tests.conftest import OPERATOR, OUTSIDER, reply_text


@pytest.fixture
def http_bot(slack, plan, tmp_path):
    services = build_services(local_settings(slack, str(tmp_path / "cutover.db")), plan)
    server = serve_http(build_app(services), services, 0, host="127.0.0.1")
    slack.use_http(f"http://127.0.0.1:{server.server_port}/slack/events")
    yield services
    server.shutdown()
    services.close()


def command_body(slack, text="status", user=OPERATOR):
    return urllib.parse.urlencode({"command": "/cutover", "text": text, "user_id": user, "channel_id": "C0LAUNCH",
                                   "team_id": slack.team_id, "trigger_id": "1.2.3",
                                   "response_url": f"{slack.url}/response/x"})


def test_signed_commands_work(slack, http_bot):
    env = slack.command(OPERATOR, "help")
    assert env.http_status == 200 and env.ack_seconds < 3
    assert "/cutover audit [N]" in reply_text(slack, env)
    assert "*db-import* on `new` — not run" in reply_text(slack, slack.command(OUTSIDER, "status"))


def test_a_bad_signature_is_rejected(slack, http_bot):
    body = command_body(slack)
    headers = slack.signed_headers(body, secret="not-the-signing-secret")
    status, _ = slack.post_http(body, "application/x-www-form-urlencoded", headers)
    assert status == 401
    assert http_bot.store.recent_audit() == []
    assert slack.responses == []


def test_a_stale_timestamp_is_rejected_even_when_signed(slack, http_bot):
    body = command_body(slack)
    headers = slack.signed_headers(body, timestamp=int(time.time()) - 600)
    status, _ = slack.post_http(body, "application/x-www-form-urlencoded", headers)
    assert status == 401
    assert http_bot.store.recent_audit() == []


def test_a_tampered_body_is_rejected(slack, http_bot):
    headers = slack.signed_headers(command_body(slack, "status"))
    status, _ = slack.post_http(command_body(slack, "audit"), "application/x-www-form-urlencoded", headers)
    assert status == 401


def test_slack_retries_act_once(slack, http_bot):
    env = slack.command(OPERATOR, "status")
    reply_text(slack, env)
    again = slack.redeliver(env)
    assert again.http_status == 200
    time.sleep(0.5)
    assert len(slack.responses_for(env)) == 1
    ts = http_bot.notifier.post("react to me")
    first = slack.react(OPERATOR, "eyes", "C0LAUNCH", ts)
    retry = slack.redeliver(first)
    assert first.http_status == retry.http_status == 200
    key = "event:" + first.payload["event_id"]

    def recorded():
        return [r["key"] for r in http_bot.store.query("SELECT key FROM processed_events")].count(key)

    slack.wait_for(recorded, 10, "the delivery recorded")
    assert recorded() == 1


def test_url_verification_challenge(slack, http_bot):
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
    status, text = slack.post_http(body, "application/json", slack.signed_headers(body))
    assert status == 200 and "abc123" in text
