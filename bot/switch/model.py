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
    grid: "Grid | None" = None  # every site on every path, when the plan lists them

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.blocking)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.blocking and not c.ok]

    @property
    def passed(self) -> list[Check]:
        return [c for c in self.checks if c.ok]

    def to_json(self) -> dict:
        return {"purpose": self.purpose, "at": self.at.isoformat(), "checks": [asdict(c) for c in self.checks],
                "tally": self.tally.to_json() if self.tally else None,
                "grid": self.grid.to_json() if self.grid else None}

    @classmethod
    def from_json(cls, data: dict) -> "Preflight":
        return cls(data["purpose"], datetime.fromisoformat(data["at"]),
                   tuple(Check(c["name"], c["ok"], c["detail"], c.get("blocking", True)) for c in data["checks"]),
                   Tally.from_json(data["tally"]) if data.get("tally") else None,
                   Grid.from_json(data["grid"]) if data.get("grid") else None)


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
    grid: "Grid | None" = None  # every site on every path at the end of the verification
    site_answers: dict[str, datetime] = field(default_factory=dict)  # site -> first answer from the target
    action_started_at: datetime | None = None  # DigitalOcean's assign action, by its own record
    action_completed_at: datetime | None = None
    master_at: datetime | None = None  # when keepalived on the target entered MASTER, by its host's clock

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
                "witnesses": [w.to_json() for w in self.witnesses],
                "grid": self.grid.to_json() if self.grid else None,
                "site_answers": {k: v.isoformat() for k, v in self.site_answers.items()},
                "action_started_at": iso(self.action_started_at), "action_completed_at": iso(self.action_completed_at),
                "master_at": iso(self.master_at)}

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
                                              isinstance(data.get("cloud_errors"), int) else 0),
                   grid=Grid.from_json(data["grid"]) if data.get("grid") else None,
                   site_answers={k: datetime.fromisoformat(v) for k, v in (data.get("site_answers") or {}).items()},
                   action_started_at=when(data.get("action_started_at")),
                   action_completed_at=when(data.get("action_completed_at")), master_at=when(data.get("master_at")))


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


@dataclass(frozen=True)
class Cell:
    """One site on one path: whether the server expected there served it, and if not, why, in a few words."""

    site: str
    path: str  # old, new, reserved_ip, vip
    expected: str  # the server that should answer there: old or new
    ok: bool
    reason: str
    server: str | None = None  # whose marker the answer carried
    at: datetime | None = None
    status: int | None = None
    expires: datetime | None = None  # the certificate's end, when one was shown

    def to_json(self) -> dict:
        return {"site": self.site, "path": self.path, "expected": self.expected, "ok": self.ok,
                "reason": self.reason, "server": self.server, "at": self.at.isoformat() if self.at else None,
                "status": self.status, "expires": self.expires.isoformat() if self.expires else None}

    @classmethod
    def from_json(cls, data: dict) -> "Cell":
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(site=data["site"], path=data["path"], expected=data["expected"], ok=data["ok"],
                   reason=data.get("reason", ""), server=data.get("server"), at=when(data.get("at")),
                   status=data.get("status"), expires=when(data.get("expires")))


@dataclass(frozen=True)
class Grid:
    """Sites × paths, as probed at one moment (the preflight, or the end of a verification)."""

    sites: tuple[str, ...]
    paths: tuple[str, ...]
    cells: tuple[Cell, ...]
    at: datetime | None = None
    problem: str = ""  # why the sites could not be probed at all

    def cell(self, site: str, path: str) -> Cell | None:
        return next((c for c in self.cells if c.site == site and c.path == path), None)

    def failed(self, path: str | None = None) -> list[Cell]:
        return [c for c in self.cells if not c.ok and (path is None or c.path == path)]

    def merged(self, other: "Grid") -> "Grid":
        """This grid with ``other``'s cells in place of its own where both have one; ``other``'s paths added."""
        theirs = {(c.site, c.path): c for c in other.cells}
        paths = tuple(dict.fromkeys(self.paths + other.paths))
        sites = tuple(dict.fromkeys(self.sites + other.sites))
        mine = {(c.site, c.path): c for c in self.cells}
        cells = tuple(theirs.get((s, p)) or mine[(s, p)] for s in sites for p in paths
                      if (s, p) in theirs or (s, p) in mine)
        return Grid(sites, paths, cells, other.at or self.at, self.problem or other.problem)

    def to_json(self) -> dict:
        return {"sites": list(self.sites), "paths": list(self.paths), "cells": [c.to_json() for c in self.cells],
                "at": self.at.isoformat() if self.at else None, "problem": self.problem}

    @classmethod
    def from_json(cls, data: dict) -> "Grid":
        return cls(tuple(data.get("sites") or ()), tuple(data.get("paths") or ()),
                   tuple(Cell.from_json(c) for c in data.get("cells") or ()),
                   datetime.fromisoformat(data["at"]) if data.get("at") else None, data.get("problem", ""))
