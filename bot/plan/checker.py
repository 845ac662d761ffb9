"""Reading typed values out of a plan's nested TOML tables, collecting every problem instead of stopping at the
first: each names the file, the key, the bad value and what was expected, with a near miss when there is one."""

from __future__ import annotations

import difflib
import ipaddress
import re
from datetime import timedelta
from typing import Any, Iterable
from urllib.parse import urlparse

from bot.durations import EXPECTED as DURATION_EXPECTED
from bot.durations import parse_duration

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
EMOJI = re.compile(r"^[a-z0-9_+\-']+$")


class PlanError(Exception):
    """Every problem found in a plan file, each a complete sentence."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: {len(errors)} problem(s)\n" + "\n".join(errors))


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for a near miss among ``choices``; empty when nothing is close."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


class Checker:
    """Collects errors while reading typed values out of nested TOML tables."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []

    def error(self, key: str, value: Any, expected: str) -> None:
        shown = "missing" if value is MISSING else f"got {value!r}"
        self.errors.append(f"{self.path}: {key}: {shown}; expected {expected}")

    def table(self, data: dict, key: str, name: str, required: bool = True) -> dict | None:
        value = data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.error(key, value, "a table")
            return None
        if not isinstance(value, dict):
            self.error(key, value, "a table")
            return None
        return value

    def only(self, data: dict, prefix: str, allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                self.errors.append(
                    f"{self.path}: {prefix}{name}: unknown key{did_you_mean(name, allowed)}; expected one of "
                    + ", ".join(sorted(allowed))
                )

    def string(self, data: dict, key: str, name: str, required: bool = True,
               pattern: re.Pattern[str] | None = None, expected: str = "a non-empty string") -> str | None:
        value = data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.error(key, value, expected)
            return None
        if not isinstance(value, str) or not value.strip() or (pattern and not pattern.match(value)):
            self.error(key, value, expected)
            return None
        return value

    def integer(self, data: dict, key: str, name: str, required: bool = True, default: int | None = None,
                low: int | None = None, high: int | None = None) -> int | None:
        value = data.get(name, MISSING)
        expected = "a whole number" + (
            f" from {low} to {high}" if low is not None and high is not None
            else f" of at least {low}" if low is not None else "")
        if value is MISSING:
            if required:
                self.error(key, value, expected)
            return default
        if isinstance(value, bool) or not isinstance(value, int) or \
                (low is not None and value < low) or (high is not None and value > high):
            self.error(key, value, expected)
            return default
        return value

    def duration(self, data: dict, key: str, name: str, required: bool = True) -> timedelta | None:
        value = data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.error(key, value, DURATION_EXPECTED)
            return None
        try:
            return parse_duration(value)
        except ValueError:
            self.error(key, value, DURATION_EXPECTED)
            return None

    def string_list(self, data: dict, key: str, name: str, pattern: re.Pattern[str] | None = None,
                    expected: str = "a list of strings", required: bool = True) -> tuple[str, ...]:
        value = data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.error(key, value, expected)
            return ()
        if not isinstance(value, list):
            self.error(key, value, expected)
            return ()
        good = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern and not pattern.match(item)):
                self.error(f"{key}[{i}]", item, expected)
            else:
                good.append(item)
        return tuple(good)

    def regex(self, data: dict, key: str, name: str) -> re.Pattern[str] | None:
        value = data.get(name, MISSING)
        if value is MISSING:
            return None
        if not isinstance(value, str):
            self.error(key, value, "a regular expression string")
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.error(key, value, f"a valid regular expression ({exc})")
            return None


MISSING = object()


def compiled(c: Checker, key: str, value: str) -> re.Pattern[str] | None:
    try:
        return re.compile(value)
    except re.error as exc:
        c.error(key, value, f"a valid regular expression ({exc})")
        return None


def absolute(c: Checker, t: dict, table: str, name: str) -> str | None:
    value = c.string(t, f"{table}.{name}", name, required=False, expected="an absolute path")
    if value is not None and not value.startswith("/"):
        c.error(f"{table}.{name}", value, "an absolute path")
        return None
    return value


def ipv4(c: Checker, t: dict, name: str, required: bool, table: str = "failover") -> str | None:
    value = c.string(t, f"{table}.{name}", name, required=required, expected="an IPv4 address")
    if value is None:
        return None
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        c.error(f"{table}.{name}", value, "an IPv4 address")
        return None
    return value


def url(c: Checker, t: dict, name: str, required: bool) -> str | None:
    value = c.string(t, f"failover.{name}", name, required=required, expected="an http:// or https:// URL")
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        c.error(f"failover.{name}", value, "an http:// or https:// URL")
        return None
    return value
