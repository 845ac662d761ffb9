"""Every state a stage run, a go-live request or a freeze can be in, spelled once.

``StrEnum`` members are the very strings SQLite stores, so a row read back
compares equal to its member and a member can be written as it is.
"""

from __future__ import annotations

from enum import StrEnum


NOT_RUN = "not run"  # what status says of a step of the plan that has no run yet (no run is in this state)


class RunState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"
    LOST = "lost"

    @property
    def active(self) -> bool:
        return self in ACTIVE_RUNS


ACTIVE_RUNS = (RunState.STARTING, RunState.RUNNING)


class StopState(StrEnum):
    """Where an operator's cancel of a run is: asked for, on the host, or too late (the run had ended)."""

    PENDING = "pending"
    SENT = "sent"
    TOO_LATE = "too late"


class RequestState(StrEnum):
    OPEN = "open"
    DECIDING = "deciding"
    FLIPPING = "flipping"
    FLIPPED = "flipped"
    UNKNOWN = "unknown"  # the write was sent; whether it landed is not known yet
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    ABORTED = "aborted"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT


IN_FLIGHT = (RequestState.OPEN, RequestState.DECIDING, RequestState.FLIPPING, RequestState.FLIPPED,
             RequestState.UNKNOWN)


class FreezeState(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"
    LIFTED = "lifted"
    CANCELLED = "cancelled"


CURRENT_FREEZES = (FreezeState.SCHEDULED, FreezeState.ACTIVE)


def sql_in(states: tuple[StrEnum, ...]) -> str:
    """``('a', 'b')`` for a SQL ``IN``: the states are our own constants, never user text."""
    return "(" + ", ".join(f"'{s.value}'" for s in states) + ")"
