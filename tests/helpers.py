"""Helpers for tests: real servers, a clock that moves only when told, waiting for a request to settle."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.standins.sshd import LocalSshd, find_sshd
from bot.states import RequestState
from bot.waiting import wait_until


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


def latest_runs(store) -> dict[str, dict]:
    """Each stage's latest run, as the runs record has it, as a dict with times as the store keeps them
    (``run["state"]``, ``parse_time(run["started_at"])``) for short assertions."""
    from dataclasses import asdict

    from bot.clock import SystemClock
    from bot.runbook.runs import Runs

    def row(run) -> dict:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(run).items()}

    return {name: row(run) for name, run in Runs(store, SystemClock()).latest().items()}


def request_state(services, request_id: int) -> RequestState:
    return RequestState(services.store.get("golive_requests", request_id)["state"])


def wait_settled(services, request_id: int, timeout: float = 60.0) -> RequestState:
    """Wait until a request leaves the in-flight states."""
    def final() -> RequestState | None:
        state = request_state(services, request_id)
        return None if state.in_flight else state

    return wait_until(final, timeout, f"request #{request_id} to settle")


def start_sshd(workdir: Path, **kwargs) -> LocalSshd:
    if find_sshd() is None:
        pytest.skip("sshd is not installed (Debian package openssh-server); .ci/run installs it")
    return LocalSshd(workdir, **kwargs).start()


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(v)


def to_toml(plan: dict) -> str:
    """Enough TOML for a plan: tables, sub-tables, arrays of tables, scalars and lists."""
    out: list[str] = []

    def table(prefix: str, data: dict) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)
                   and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        out.append(f"[{prefix}]")
        out.extend(f"{k} = {_value(v)}" for k, v in scalars.items())
        for k, v in data.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    out.append(f"[[{prefix}.{k}]]")
                    out.extend(f"{ik} = {_value(iv)}" for ik, iv in item.items())

    for key, value in plan.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out.append(f"[[{key}]]")
                out.extend(f"{k} = {_value(v)}" for k, v in item.items())
        elif isinstance(value, dict):
            table(key, value)
        else:
            out.insert(0, f"{key} = {_value(value)}")
    return "\n".join(out) + "\n"


def rss_kb(pid: int | None = None) -> int:
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def start_bot_process(slack, env: dict, cwd: Path, timeout: float = 30.0,  # type: ignore[no-untyped-def]
                      argv: list[str] | None = None):
    """`cutover run` (or ``argv``) as a real process against the Slack stand-in, once it has connected; its log in
    cwd/bot.log."""
    import subprocess
    import sys

    connections = len(slack.calls_of("apps.connections.open"))
    proc = subprocess.Popen(argv or [sys.executable, "-m", "bot.cli", "run"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(Path(cwd) / "bot.log", "ab"))
    slack.wait_for(lambda: len(slack.calls_of("apps.connections.open")) > connections, timeout, "the bot to connect")
    slack.wait_connected()
    return proc


def example_home(tmp_path: Path) -> dict[str, str]:
    """A home holding the SSH key and known_hosts the example plan names: the environment that points at it."""
    ssh = Path(tmp_path) / "home" / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "cutover_ed25519").write_text("a private key\n")
    (ssh / "known_hosts").write_text("")
    return {"HOME": str(ssh.parent)}
