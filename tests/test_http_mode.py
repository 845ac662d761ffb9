"""The real Bolt app behind ``cutover run --http``: signed requests only."""

import json
import time
import urllib.parse

import pytest

from bot.local.bot import local_settings
from bot.services import build_services
from bot.slack.app import build_app, serve_http
from tests.conftest import OPERATOR, OUTSIDER, reply_text
from tests.helpers import latest_runs


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


def test_the_done_button_and_the_home_tab_work_over_http(slack, tmp_path):
    from bot.runbook.blocks import DONE_ACTION
    from bot.plan import parse_plan
    from bot.standins.slack import blocks_text
    from tests.test_runbook import night_plan

    plan = night_plan()
    plan["stages"] = [plan["stages"][0]]
    services = build_services(local_settings(slack, str(tmp_path / "h.db")), parse_plan(plan, "night"))
    server = serve_http(build_app(services), services, 0, host="127.0.0.1")
    slack.use_http(f"http://127.0.0.1:{server.server_port}/slack/events")
    try:
        assert reply_text(slack, slack.command(OPERATOR, "run content-check")).startswith("`content-check` is open")
        ts = slack.wait_for(lambda: latest_runs(services.store)["content-check"]["message_ts"], 10, "the step")
        slack.wait_for(lambda: latest_runs(services.store)["content-check"]["state"] == "running", 10, "open")
        click = slack.click(OUTSIDER, "C0LAUNCH", ts, DONE_ACTION)  # a signed form with payload=<json>
        assert click.http_status == 200
        slack.wait_for(lambda: latest_runs(services.store)["content-check"]["state"] == "succeeded", 10, "done")
        slack.wait_for(lambda: "*done* after" in blocks_text(slack.message("C0LAUNCH", ts)["blocks"]), 10, "shown")
        assert slack.open_home(OUTSIDER).http_status == 200
        slack.wait_for(lambda: "content-check" in blocks_text(slack.home_views.get(OUTSIDER, {}).get("blocks")),
                       10, "the Home tab")
    finally:
        server.shutdown()
        services.close()
