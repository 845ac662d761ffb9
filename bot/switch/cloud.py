"""DigitalOcean's view of the reserved (formerly floating) IP, through python-digitalocean, within a deadline.

``DIGITALOCEAN_END_POINT`` (the library's own variable, carried in Settings)
points it at a stand-in in tests and the demo. Every failure of a call —
an HTTP error, a body that is not JSON, a refused or reset connection, an
answer that never comes — becomes a ``CloudError`` with a reason a person
can read and whether trying again may help. That is decided by the HTTP
status and DigitalOcean's error ``id``, never by the wording of its message.

The library reads its timeout only from an environment variable, so a call
runs on a small pool of its own and the caller stops waiting at the
deadline whatever the server does; the socket timeout ends the abandoned
request soon after.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

import digitalocean
import requests
from digitalocean.baseapi import JSONReadError

log = logging.getLogger("cutover.cloud")

DEFAULT_END_POINT = "https://api.digitalocean.com/v2/"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
NOT_RETRYABLE_IDS = {"unauthorized", "forbidden", "not_found", "unprocessable_entity"}
T = TypeVar("T")


class CloudError(Exception):
    def __init__(self, message: str, retryable: bool, status: int | None = None, error_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.error_id = error_id
        self.retry_after = retry_after


class _HTTPError(Exception):
    """Raised from the response hook so that the status and error id reach us intact."""

    def __init__(self, status: int, error_id: str | None, message: str | None, retry_after: float | None) -> None:
        super().__init__(status)
        self.status, self.error_id, self.message, self.retry_after = status, error_id, message, retry_after


def _check_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code < 400:
        return
    error_id = message = None
    try:
        body = response.json()
        if isinstance(body, dict):
            error_id, message = body.get("id"), body.get("message")
    except ValueError:
        pass
    retry_after = None
    try:
        retry_after = float(response.headers.get("Retry-After", ""))
    except ValueError:
        pass
    raise _HTTPError(response.status_code, error_id, message, retry_after)


class _OnOurTerms:
    """A python-digitalocean object with our timeout, and our response check on its own session."""

    _session: requests.Session

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self._cutover_timeout = timeout
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self._session.hooks["response"].append(_check_response)

    def get_timeout(self) -> float:
        return self._cutover_timeout


class _IPs(_OnOurTerms, digitalocean.baseapi.BaseAPI):
    """Reserved (or floating) IPs through python-digitalocean's own request layer, which has no class for
    ``/v2/reserved_ips``."""

    def assignment(self, endpoint: str, ip: str) -> dict:
        data = self.get_data(f"{endpoint}/{ip}")
        body = data.get("reserved_ip" if endpoint == "reserved_ips" else "floating_ip")
        if not isinstance(body, dict):
            raise ValueError(f"no {endpoint} object in the answer")
        return body


    def actions(self, endpoint: str, ip: str) -> list:
        data = self.get_data(f"{endpoint}/{ip}/actions")
        actions = data.get("actions")
        if not isinstance(actions, list):
            raise ValueError(f"no actions list for {endpoint}/{ip}")
        return actions


@dataclass(frozen=True)
class AssignAction:
    """DigitalOcean's own record of an assignment of the reserved IP: when it started and completed."""

    id: int
    status: str
    started_at: datetime | None
    completed_at: datetime | None


class _Account(_OnOurTerms, digitalocean.Account):
    """Whose token this is."""


class _Droplet(_OnOurTerms, digitalocean.Droplet):
    """One droplet, as the token sees it."""


class Cloud:
    def __init__(self, token: str | None, end_point: str | None, timeout: float = 10.0) -> None:
        self.token = token
        self.end_point = end_point or DEFAULT_END_POINT
        if not self.end_point.endswith("/"):
            self.end_point += "/"
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digitalocean")
        self._endpoint: str | None = None  # reserved_ips, or floating_ips where the API predates the rename

    def _call(self, what: str, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run one request, waiting at most ``timeout`` seconds for it, and translate every failure."""
        if not self.token:
            raise CloudError("DIGITALOCEAN_ACCESS_TOKEN is not set, so DigitalOcean cannot be asked", False)
        limit = timeout if timeout is not None else self.timeout
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            future.cancel()
            raise CloudError(f"DigitalOcean: {what}: no answer within {limit:g}s", True) from None
        except _HTTPError as exc:
            raise _http_error(what, exc) from None
        except digitalocean.NotFoundError:
            raise CloudError(f"DigitalOcean: {what}: not found (HTTP 404)", False, 404, "not_found") from None
        except JSONReadError:
            raise CloudError(f"DigitalOcean: {what}: the answer was not JSON (a gateway or proxy page?)",
                             True) from None
        except requests.Timeout:
            raise CloudError(f"DigitalOcean: {what}: no answer within {limit:g}s", True) from None
        except requests.ConnectionError as exc:
            raise CloudError(f"DigitalOcean: {what}: {_connection_reason(exc)}", True) from None
        except (requests.RequestException, digitalocean.Error, OSError, ValueError, KeyError, TypeError) as exc:
            raise CloudError(f"DigitalOcean: {what}: an answer the bot could not read "
                             f"({exc.__class__.__name__})", True) from None

    def _options(self) -> dict:
        return {"token": self.token, "end_point": self.end_point}

    def account(self) -> str:
        """The account the token belongs to, as DigitalOcean names it (its email); CloudError if refused."""
        def load() -> str:
            account = _Account(self.timeout, **self._options())
            account.load()
            return str(getattr(account, "email", "") or getattr(account, "uuid", "") or "an account")

        return self._call("account", load)

    def droplet(self, droplet_id: int) -> str:
        """The droplet's name, if the token can see it; CloudError (404) if it cannot."""
        def load() -> str:
            droplet = _Droplet(self.timeout, id=droplet_id, **self._options())
            droplet.load()
            return str(getattr(droplet, "name", "") or droplet_id)

        return self._call(f"droplet {droplet_id}", load)

    def holder(self, ip: str, timeout: float | None = None) -> int | None:
        """The droplet the reserved (formerly floating) IP is assigned to now, or None when it is unassigned.

        Asked at ``/v2/reserved_ips``; ``/v2/floating_ips`` only if that endpoint is not found (an API that
        predates the rename). Once one has answered, it is the one asked.
        """
        limit = timeout if timeout is not None else self.timeout

        def load() -> int | None:
            api = _IPs(limit, **self._options())
            if self._endpoint is not None:
                body = api.assignment(self._endpoint, ip)
            else:
                try:
                    body = api.assignment("reserved_ips", ip)
                    self._endpoint = "reserved_ips"
                except _HTTPError as exc:
                    if exc.status != 404:
                        raise
                    body = api.assignment("floating_ips", ip)
                    self._endpoint = "floating_ips"
                    log.info("DigitalOcean has no /v2/reserved_ips here; using /v2/floating_ips")
            droplet = body.get("droplet")
            if droplet is None:
                return None
            if not isinstance(droplet, dict) or not isinstance(droplet.get("id"), int):
                raise ValueError("droplet without an id")
            return int(droplet["id"])

        return self._call(f"reserved IP {ip}", load, limit)

    def last_assign(self, ip: str, timeout: float | None = None) -> AssignAction | None:
        """The newest assign action of the reserved IP, as DigitalOcean lists them; None when there is none."""
        limit = timeout if timeout is not None else self.timeout

        def load() -> AssignAction | None:
            api = _IPs(limit, **self._options())
            for action in api.actions(self._endpoint or "reserved_ips", ip):
                if isinstance(action, dict) and action.get("type") == "assign_ip":
                    return AssignAction(int(action["id"]), str(action.get("status")), _when(action.get("started_at")),
                                        _when(action.get("completed_at")))
            return None

        return self._call(f"reserved IP {ip}'s actions", load, limit)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _http_error(what: str, exc: _HTTPError) -> CloudError:
    said = f"{exc.message} ({exc.error_id}, HTTP {exc.status})" if exc.message else f"HTTP {exc.status}"
    if exc.status == 401:
        said += " — check DIGITALOCEAN_ACCESS_TOKEN"
    elif exc.status == 403:
        said += " — the token lacks a scope; it needs reserved_ip:read and droplet:read"
    retryable = exc.status in RETRYABLE_STATUS and exc.error_id not in NOT_RETRYABLE_IDS
    return CloudError(f"DigitalOcean: {what}: {said}", retryable, exc.status, exc.error_id, exc.retry_after)


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "aborted" in text or "remotedisconnected" in text:
        return "the connection was reset"
    if "timed out" in text or "timeout" in text:
        return "no answer in time"
    return "could not connect"
