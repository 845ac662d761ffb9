"""HTTP probes: who answers at a URL right now, and for a hostname on one server (pinned: the TLS name and the
Host header are the site's, the connection goes to the address the plan gives, the certificate is verified)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone


BODY_LIMIT = 4096


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    body: str
    error: str | None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def shows(self, marker: str) -> bool:
        return self.status == 200 and marker in self.body

    def describe(self) -> str:
        if self.error:
            return f"no answer ({self.error})"
        return f"HTTP {self.status} `{self.body.strip()[:80]}`"


def probe(url: str, timeout: float = 2.0) -> ProbeResult:
    """One GET, over within about ``timeout`` seconds whatever the server does (slow headers or a trickled body)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "cutover-probe", "Cache-Control": "no-cache",
                                                   "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return ProbeResult(response.status, _body(response, deadline), None)
    except urllib.error.HTTPError as exc:
        return ProbeResult(exc.code, _body(exc, deadline), None)
    except _Late:
        return ProbeResult(None, "", f"the answer took longer than {timeout:g}s")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(None, "", str(reason) or exc.__class__.__name__)


class _Late(Exception):
    pass


def _body(response, deadline: float) -> str:  # type: ignore[no-untyped-def]
    """Up to 4 KiB of the body, read in small pieces so that the deadline holds for a trickle too."""
    data = b""
    while len(data) < BODY_LIMIT:
        if time.monotonic() > deadline:
            raise _Late()
        piece = response.read1(BODY_LIMIT - len(data)) if hasattr(response, "read1") else response.read(
            BODY_LIMIT - len(data))
        if not piece:
            break
        data += piece
    return data.decode("utf-8", "replace")


# -- pinned probes: one hostname, on one address, as strict as a browser ----------------------------------------


@dataclass(frozen=True)
class SiteAnswer:
    """What one server said for one hostname: the HTTP answer, the certificate it showed, or why there was none."""

    name: str  # the hostname asked for (SNI and Host)
    address: str  # where the probe connected, ADDRESS:PORT
    at: datetime
    status: int | None = None
    body: str = ""
    error: str | None = None  # no answer, or a certificate the probe refused
    location: str | None = None  # a redirect's target: reported, not followed
    cert_names: tuple[str, ...] = ()
    cert_expires: datetime | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.location is not None:
            return f"HTTP {self.status} redirect to {self.location[:120]}"
        return f"HTTP {self.status} `{self.body.strip()[:60]}`"


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to ``address`` that speaks to ``name``: the TLS server name, the certificate's name and the Host
    header are the site's, the TCP connection goes where the plan says."""

    def __init__(self, name: str, address: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(name, port, context=context, timeout=timeout)
        self._address = address
        self._tls = context
        self.peer_cert: dict = {}

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.peer_cert = self.sock.getpeercert() or {}  # kept: the socket goes with a closing response


class _Plain(http.client.HTTPConnection):
    def __init__(self, name: str, address: str, port: int, timeout: float) -> None:
        super().__init__(name, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificates verified, and for the name asked: the system's CAs, or only ``ca_file``'s when given."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def pinned(name: str, address: str, port: int, path: str, scheme: str, context: ssl.SSLContext | None,
           timeout: float = 3.0) -> SiteAnswer:
    """One GET of ``path`` for hostname ``name`` on ``address:port``, over within about ``timeout`` seconds.
    Redirects are answers, not followed; a certificate that fails verification is the answer's error."""
    deadline = time.monotonic() + timeout
    where = f"{address}:{port}"
    now = datetime.now(timezone.utc)
    if scheme == "https":
        assert context is not None
        conn: http.client.HTTPConnection = _Pinned(name, address, port, context, timeout)
    else:
        conn = _Plain(name, address, port, timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "cutover-probe", "Cache-Control": "no-cache",
                                           "Connection": "close"})
        names, expires = _certificate(getattr(conn, "peer_cert", {}))
        response = conn.getresponse()
        body = _body(response, deadline)
        location = response.getheader("Location") if 300 <= response.status < 400 else None
        return SiteAnswer(name, where, now, response.status, body, None, location, names, expires)
    except ssl.SSLCertVerificationError as exc:
        return SiteAnswer(name, where, now, error=f"certificate refused: {_verify_reason(exc, name)}")
    except ssl.SSLError as exc:
        return SiteAnswer(name, where, now, error=f"TLS failed: {exc.reason or exc.__class__.__name__}")
    except _Late:
        return SiteAnswer(name, where, now, error=f"the answer took longer than {timeout:g}s")
    except (OSError, http.client.HTTPException) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError | socket.timeout) else (
            str(exc) or exc.__class__.__name__)
        return SiteAnswer(name, where, now, error=f"no answer ({reason})")
    finally:
        conn.close()


def _certificate(cert: dict) -> tuple[tuple[str, ...], datetime | None]:
    names = tuple(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
    expires = None
    if cert.get("notAfter"):
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), timezone.utc)
    return names, expires


def _verify_reason(exc: ssl.SSLCertVerificationError, name: str) -> str:
    """The verification's own reason, said for a person: a name the certificate does not cover, an expired or
    unknown issuer."""
    message = (exc.verify_message or exc.reason or str(exc)).rstrip(".")
    if "Hostname mismatch" in message or "IP address mismatch" in message:
        return f"it does not cover {name}"
    return message
