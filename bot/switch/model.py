"""What the switch found and did, as plain data: the preflight's checks, the witnesses' readings, a
verification, and a request as the record hands it out. Pure: builders and the record import this; it imports
nothing of the services.

The ``to_json``/``from_json`` pairs are how a request's preflight and result are stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from bot.ledger.model import Tally
from bot.states import RequestState

WHAT = {"golive": "go-live", "rollback": "rollback"}
STATE_WORDS = {RequestState.DECIDING: "approved, checking again before switching",
               RequestState.FLIPPING: "switching", RequestState.FLIPPED: "switched, verifying",
               RequestState.VERIFIED: "switched and verified", RequestState.UNVERIFIED: "switched, not verified",
               RequestState.ABORTED: "stopped before the switch", RequestState.EXPIRED: "expired",
               RequestState.INTERRUPTED: "interrupted before the switch",
               RequestState.UNKNOWN: "unknown whether the switch was made"}


@dataclass(frozen=True)
class Reading:
    name: str
    ok: bool
    detail: str
    at: datetime | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "at": self.at.isoformat() if self.at else None}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    blocking: bool = True


@dataclass(frozen=True)
class Preflight:
    purpose: str
    at: datetime
    checks: tuple[Check, ...] = field(default_factory=tuple)
    tally: Tally | None = None  # what the old server took after the copy, when the plan watches it

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.blocking)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.blocking and not c.ok]

    @property
    def passed(self) -> list[Check]:
        return [c for c in self.checks if c.ok]

    @property
    def warnings(self) -> list[Check]:
        """What failed without stopping anything (the old server's own answer, say)."""
        return [c for c in self.checks if not c.ok and not c.blocking]

    def to_json(self) -> dict:
        return {"purpose": self.purpose, "at": self.at.isoformat(), "checks": [asdict(c) for c in self.checks],
                "tally": self.tally.to_json() if self.tally else None}

    @classmethod
    def from_json(cls, data: dict) -> "Preflight":
        return cls(data["purpose"], datetime.fromisoformat(data["at"]),
                   tuple(Check(c["name"], c["ok"], c["detail"], c.get("blocking", True)) for c in data["checks"]),
                   Tally.from_json(data["tally"]) if data.get("tally") else None)


@dataclass
class Verification:
    """What the witnesses said after a switch; stored with the request as JSON."""

    target: str
    witnesses: list[Reading] = field(default_factory=list)
    first_answer_at: datetime | None = None
    cloud_confirmed_at: datetime | None = None
    failed_probes: int = 0
    other_answers: int = 0
    cloud_errors: list[str] = field(default_factory=list)
    cloud_error_count: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.witnesses) and all(w.ok for w in self.witnesses)

    @property
    def failed(self) -> list[Reading]:
        return [w for w in self.witnesses if not w.ok]

    def to_json(self) -> dict:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"target": self.target, "ok": self.ok, "first_answer_at": iso(self.first_answer_at),
                "cloud_confirmed_at": iso(self.cloud_confirmed_at), "failed_probes": self.failed_probes,
                "other_answers": self.other_answers, "cloud_errors": self.cloud_errors[-5:],
                "cloud_error_count": max(self.cloud_error_count, len(self.cloud_errors)),
                "witnesses": [w.to_json() for w in self.witnesses]}

    @classmethod
    def from_json(cls, data: dict) -> "Verification":
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(target=data["target"],
                   witnesses=[Reading(w["name"], w["ok"], w["detail"], when(w.get("at"))) for w in data["witnesses"]],
                   first_answer_at=when(data.get("first_answer_at")),
                   cloud_confirmed_at=when(data.get("cloud_confirmed_at")),
                   failed_probes=data.get("failed_probes", 0), other_answers=data.get("other_answers", 0),
                   cloud_errors=list(data.get("cloud_errors") or []) if isinstance(data.get("cloud_errors"), list) else [],
                   cloud_error_count=data.get("cloud_error_count", data.get("cloud_errors") if
                                              isinstance(data.get("cloud_errors"), int) else 0))


@dataclass(frozen=True)
class Forwarding:
    """What the plan's forward (or unforward) command did on the old server, by its word."""

    on: bool
    host: str
    command: str
    at: datetime | None = None  # when it had taken effect, by the host's clock
    error: str = ""

    @property
    def done(self) -> bool:
        return self.at is not None
