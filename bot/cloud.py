"""DigitalOcean's view of the floating IP, through python-digitalocean.

``DIGITALOCEAN_END_POINT`` (the library's own variable, carried in Settings)
points it at a stand-in in tests and the demo. Errors come back as CloudError
with DigitalOcean's own message and whether trying again may help.
"""

from __future__ import annotations

import logging

import digitalocean
import requests

log = logging.getLogger("cutover.cloud")

DEFAULT_END_POINT = "https://api.digitalocean.com/v2/"


class CloudError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Cloud:
    def __init__(self, token: str | None, end_point: str | None, timeout: float = 10.0) -> None:
        self.token = token
        self.end_point = end_point or DEFAULT_END_POINT
        if not self.end_point.endswith("/"):
            self.end_point += "/"
        self.timeout = timeout

    def _call(self, what: str, fn):  # type: ignore[no-untyped-def]
        if not self.token:
            raise CloudError("DIGITALOCEAN_ACCESS_TOKEN is not set, so DigitalOcean cannot be asked", False)
        try:
            return fn()
        except digitalocean.NotFoundError:
            raise CloudError(f"DigitalOcean: {what}: not found", False) from None
        except digitalocean.DataReadError as exc:
            message = str(exc)
            retryable = "rate limit" in message.lower() or "unable to give you a response" in message.lower() \
                or "temporarily" in message.lower()
            if "authenticate" in message.lower():
                message += " (check DIGITALOCEAN_ACCESS_TOKEN)"
            raise CloudError(f"DigitalOcean: {what}: {message}", retryable) from None
        except digitalocean.JSONReadError:
            raise CloudError(f"DigitalOcean: {what}: the answer was not JSON (a gateway error?)", True) from None
        except (requests.RequestException, OSError) as exc:
            raise CloudError(f"DigitalOcean: {what}: {exc.__class__.__name__}", True) from None

    def _options(self) -> dict:
        return {"token": self.token, "end_point": self.end_point, "timeout": self.timeout}

    def holder(self, ip: str) -> int | None:
        """The droplet the floating IP is assigned to now, or None when it is unassigned."""
        def load() -> int | None:
            fip = digitalocean.FloatingIP(ip=ip, **self._options())
            fip.load()
            droplet = getattr(fip, "droplet", None)
            return int(droplet["id"]) if droplet else None

        return self._call(f"floating IP {ip}", load)
