"""DigitalOcean under faults: every failure is a CloudError with a readable reason, decided by status and id.

The stand-in answers with the bodies of DigitalOcean's published spec, or misbehaves the way networks do:
a gateway's HTML page, a reset, an accepted connection that never answers, a slow answer, a body that is
not JSON. The production client code runs unchanged against it.
"""

from __future__ import annotations

import socket

import pytest

from bot.standins.digitalocean import DigitalOceanStandIn
from bot.switch.cloud import Cloud, CloudError

IP = "203.0.113.10"


@pytest.fixture
def do():
    with DigitalOceanStandIn() as standin:
        standin.add_droplet(3164444, "web-old-01")
        standin.add_ip(IP, 3164444)
        yield standin


def cloud(do, timeout=2.0) -> Cloud:
    return Cloud(do.token, do.end_point, timeout=timeout)


def failure(do, fault, **kw) -> CloudError:
    do.fail_next(fault, path="_ips/", **kw)
    with pytest.raises(CloudError) as caught:
        cloud(do).holder(IP)
    return caught.value


def test_the_holder_is_read():
    with DigitalOceanStandIn() as do:
        do.add_droplet(7, "web")
        do.add_ip(IP, 7)
        assert cloud(do).holder(IP) == 7


@pytest.mark.parametrize("status, retryable, says", [
    (500, True, "Unexpected server-side error (server_error, HTTP 500)"),
    (502, True, "HTTP 502"),
    (503, True, "HTTP 503"),
    (504, True, "HTTP 504"),
    (429, True, "API Rate limit exceeded. (too_many_requests, HTTP 429)"),
    (401, False, "check DIGITALOCEAN_ACCESS_TOKEN"),
    (403, False, "needs reserved_ip:read and droplet:read"),
    (404, False, "could not be found. (not_found, HTTP 404)"),
])
def test_http_errors_are_decided_by_status_and_id(do, status, retryable, says):
    error = failure(do, status, times=2 if status == 404 else 1)  # a 404 of reserved_ips is asked again of floating
    assert error.retryable is retryable and error.status == status
    assert says in str(error), str(error)


def test_retry_after_is_carried_for_a_429(do):
    assert failure(do, 429).retry_after == 1.0


@pytest.mark.parametrize("fault, says", [
    ("html", "HTTP 502"),
    ("garbage", "the answer was not JSON"),
    ("reset", "the connection was reset"),
    ("hang", "no answer within 2s"),
])
def test_network_faults_become_readable_retryable_errors(do, fault, says):
    error = failure(do, fault)
    assert error.retryable and says in str(error), str(error)


def test_a_refused_connection(do):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the call: nothing listens there
    with pytest.raises(CloudError, match="connection refused") as caught:
        Cloud(do.token, f"http://127.0.0.1:{port}/v2/", timeout=2).holder(IP)
    assert caught.value.retryable


def test_a_slow_answer_past_the_deadline_is_given_up_and_a_slow_one_within_it_is_taken(do):
    do.fail_next("slow", path="_ips/", delay=3.0)
    with pytest.raises(CloudError, match="no answer within 1s"):
        cloud(do, timeout=1.0).holder(IP)
    do.fail_next("slow", path="_ips/", delay=0.3)
    assert cloud(do, timeout=5.0).holder(IP) == 3164444


def test_no_token_is_said_plainly():
    with pytest.raises(CloudError, match="DIGITALOCEAN_ACCESS_TOKEN is not set"):
        Cloud(None, "http://127.0.0.1:9/v2/").holder(IP)


def test_reserved_ips_are_asked_and_floating_ips_only_where_the_api_predates_them(do):
    api = cloud(do)
    assert api.holder(IP) == 3164444 and api.holder(IP) == 3164444
    assert [r["path"] for r in do.requests] == [f"/v2/reserved_ips/{IP}"] * 2
    do.requests.clear()
    do.serves_reserved_ips = False
    old = cloud(do)
    assert old.holder(IP) == 3164444 and old.holder(IP) == 3164444
    assert [r["path"] for r in do.requests] == [f"/v2/reserved_ips/{IP}", f"/v2/floating_ips/{IP}",
                                                f"/v2/floating_ips/{IP}"]


def test_an_unknown_reserved_ip_is_not_found_once_the_endpoint_is_known(do):
    api = cloud(do)
    api.holder(IP)
    do.requests.clear()
    with pytest.raises(CloudError) as caught:
        api.holder("203.0.113.99")
    assert caught.value.status == 404 and not caught.value.retryable
    assert [r["path"] for r in do.requests] == ["/v2/reserved_ips/203.0.113.99"]
