"""The stand-in answers the real slack_sdk client the way Slack does, errors included."""

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError


@pytest.fixture
def client(slack):
    return WebClient(token=slack.bot_token, base_url=slack.api_url)


def error_of(call):
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value.response


def test_auth_and_token_errors(slack, client):
    assert client.auth_test()["user_id"] == slack.bot_user_id
    assert error_of(WebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test)["error"] == "invalid_auth"
    assert error_of(lambda: client.apps_connections_open(app_token=slack.bot_token))["error"] == \
        "not_allowed_token_type"
    assert client.apps_connections_open(app_token=slack.app_token)["url"].startswith(f"ws://127.0.0.1:{slack.port}/link?ticket=")


def test_post_update_thread_and_history(slack, client):
    ts = client.chat_postMessage(channel="C0LAUNCH", text="hello")["ts"]
    client.chat_postMessage(channel="C0LAUNCH", text="in thread", thread_ts=ts)
    client.chat_update(channel="C0LAUNCH", ts=ts, text="hello again")
    history = client.conversations_history(channel="C0LAUNCH")["messages"]
    assert [m["text"] for m in history] == ["hello again"]
    replies = client.conversations_replies(channel="C0LAUNCH", ts=ts)["messages"]
    assert [m["text"] for m in replies] == ["hello again", "in thread"]
    assert error_of(lambda: client.chat_postMessage(channel="C0NOPE", text="x"))["error"] == "channel_not_found"
    assert error_of(lambda: client.chat_update(channel="C0LAUNCH", ts="1.2", text="x"))["error"] == \
        "message_not_found"
    assert client.conversations_info(channel="C0LAUNCH")["channel"]["name"] == "launch"


def test_invalid_blocks(client):
    long_section = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    assert error_of(lambda: client.chat_postMessage(channel="C0LAUNCH", text="t", blocks=long_section))[
        "error"] == "invalid_blocks"
    many = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * 51
    assert error_of(lambda: client.chat_postMessage(channel="C0LAUNCH", text="t", blocks=many))[
        "error"] == "invalid_blocks"


def test_missing_scope(slack, client):
    slack.scopes_missing["reactions.add"] = "reactions:write"
    ts = client.chat_postMessage(channel="C0LAUNCH", text="x")["ts"]
    response = error_of(lambda: client.reactions_add(channel="C0LAUNCH", timestamp=ts, name="eyes"))
    assert response["error"] == "missing_scope" and response["needed"] == "reactions:write"


def test_rate_limit_shape(slack, client):
    slack.fail_next("chat.postMessage", retry_after=7)
    response = error_of(lambda: client.chat_postMessage(channel="C0LAUNCH", text="x"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response["error"] == "ratelimited"


def test_reactions(slack, client):
    ts = client.chat_postMessage(channel="C0LAUNCH", text="go live?")["ts"]
    client.reactions_add(channel="C0LAUNCH", timestamp=ts, name="white_check_mark")
    assert error_of(lambda: client.reactions_add(channel="C0LAUNCH", timestamp=ts,
                                                 name="white_check_mark"))["error"] == "already_reacted"
    reactions = client.reactions_get(channel="C0LAUNCH", timestamp=ts)["message"]["reactions"]
    assert reactions == [{"name": "white_check_mark", "users": [slack.bot_user_id], "count": 1}]
    client.reactions_remove(channel="C0LAUNCH", timestamp=ts, name="white_check_mark")
    assert "reactions" not in client.reactions_get(channel="C0LAUNCH", timestamp=ts)["message"] or \
        not client.reactions_get(channel="C0LAUNCH", timestamp=ts)["message"]["reactions"]


def test_v2_file_upload_in_a_thread(slack, client):
    ts = client.chat_postMessage(channel="C0LAUNCH", text="stage")["ts"]
    result = client.files_upload_v2(channel="C0LAUNCH", thread_ts=ts, filename="db-import.log",
                                    content=b"line 1\nline 2\n", title="db-import log")
    file_id = result["file"]["id"]
    assert slack.files[file_id]["content"] == b"line 1\nline 2\n"
    assert slack.files[file_id]["thread_ts"] == ts
    assert [m.get("files", [{}])[0].get("id") for m in slack.messages("C0LAUNCH", thread_ts=ts)] == [file_id]
    assert [c["method"] for c in slack.calls][-2:] == ["files.getUploadURLExternal", "files.completeUploadExternal"]


def test_ephemeral(slack, client):
    client.chat_postEphemeral(channel="C0LAUNCH", user="U0BOB", text="only you")
    assert slack.ephemerals[-1]["user"] == "U0BOB"


def test_socket_mode_hello_acks_and_redelivery_of_an_unacked_event():
    """A raw WebSocket client that never acks sees Slack's hello, then the event again with retry_attempt."""
    import asyncio
    import json
    import threading

    import aiohttp

    from bot.standins.slack import SlackStandIn

    with SlackStandIn(redeliver_after=0.5) as slack:
        url = WebClient(token=slack.app_token, base_url=slack.api_url).apps_connections_open(
            app_token=slack.app_token)["url"]
        received: list[dict] = []

        async def listen() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                async for msg in ws:
                    data = json.loads(msg.data)
                    received.append(data)
                    if data.get("retry_attempt") == 1:
                        await ws.send_str(json.dumps({"envelope_id": data["envelope_id"]}))
                        return

        thread = threading.Thread(target=asyncio.run, args=(listen(),))
        thread.start()
        slack.wait_connected()
        ts = WebClient(token=slack.bot_token, base_url=slack.api_url).chat_postMessage(
            channel="C0LAUNCH", text="x")["ts"]
        first = slack.react("U0BOB", "eyes", "C0LAUNCH", ts)
        thread.join(10)
        kinds = [(m["type"], m.get("retry_attempt")) for m in received]
        assert kinds[0] == ("hello", None)
        events = [m for m in received if m["type"] == "events_api"]
        assert [e["retry_attempt"] for e in events] == [0, 1]
        assert events[0]["payload"]["event_id"] == events[1]["payload"]["event_id"] == first.payload["event_id"]
        assert first.acked_at is None
        again = next(e for e in slack.envelopes if e.retry_attempt == 1)
        assert again.acked_at is not None


def test_stop_is_bounded_when_a_socket_mode_client_never_answers_the_close(client):
    """A client that stops reading without closing its socket (as the bot's Socket Mode client does while it
    closes on a thread of its own) used to hold stop() for aiohttp's 10 s close timeout, which is all stop()
    allowed: a teardown error."""
    import base64
    import os
    import socket
    import time
    from urllib.parse import urlsplit

    from bot.standins.slack import SlackStandIn

    standin = SlackStandIn().start()
    link = urlsplit(WebClient(base_url=standin.api_url).apps_connections_open(app_token=standin.app_token)["url"])
    silent = socket.create_connection(("127.0.0.1", standin.port))
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        silent.sendall((f"GET {link.path}?{link.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        ).encode())
        assert silent.recv(4096).startswith(b"HTTP/1.1 101")
        standin.wait_connected()
        started = time.monotonic()
        standin.stop()  # the client never sends its close frame, nor reads
        assert time.monotonic() - started < 5
    finally:
        silent.close()
