"""The protocol a stage run speaks with its host: a wrapper script, pid and exit files, a log, signals.

Each run gets its own directory under ``~/.cutover/runs`` on the host,
created exclusively with a random part in its name, so two bots (or two
databases) can never share one. The wrapper records its process-group id in
``pid``, runs the stage's command under ``setsid`` with output to ``log``,
and writes the exit code to ``exit`` by rename when the command ends. The
files on the host, not the SSH connection, say whether a run has ended.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

import paramiko

from bot.plan import Stage
from bot.ssh import SSHError, SSHPool, quote
from bot.waiting import wait_until

log = logging.getLogger("cutover.remote_run")

PID_WAIT = 10.0
CANCEL_GRACE = 10.0


@dataclass(frozen=True)
class RemoteState:
    """What the host says about a run: the log's size, the exit code once written, whether its group lives."""

    size: int
    exit_code: int | None
    alive: bool

    @property
    def ended(self) -> bool:
        return self.exit_code is not None or not self.alive


def wrapper(stage: Stage, remote_dir: str) -> bytes:
    """The script that runs on the host: it outlives the SSH connection and the bot."""
    d = quote(remote_dir)
    lines = ["#!/bin/sh", f"# cutover: stage {stage.name}", f"D={d}",
             'echo $$ > "$D/pid.tmp" && mv "$D/pid.tmp" "$D/pid"',
             "trap ':' TERM INT", "trap '' HUP",
             'finish() { echo "$1" > "$D/exit.tmp" && mv "$D/exit.tmp" "$D/exit"; exit "$1"; }']
    if stage.workdir:
        workdir = stage.workdir
        target = '"$HOME"' + quote(workdir[1:]) if workdir.startswith("~") else quote(workdir)
        lines.append(f"cd {target} || {{ echo 'cutover: cannot change to {stage.workdir}'; finish 126; }}")
    lines += [f"sh -c {quote(stage.command or '')}", "finish $?", ""]
    return "\n".join(lines).encode()


class RemoteRuns:
    def __init__(self, ssh: SSHPool) -> None:
        self.ssh = ssh

    def prepare(self, stage: Stage, run_id: int) -> str:
        """Create the run's own directory (exclusively) and write its wrapper; returns the directory."""
        key = f"{stage.name}-{run_id}-{secrets.token_hex(6)}"
        remote_dir = self.ssh.check(
            stage.host, 'command -v setsid >/dev/null || { echo "setsid is not installed" >&2; exit 3; }; '
                        f'mkdir -p "$HOME/.cutover/runs" && d="$HOME/.cutover/runs/{key}" && mkdir "$d" '
                        '&& cd "$d" && pwd').strip()
        self.ssh.write_file_atomic(stage.host, f"{remote_dir}/run.sh", wrapper(stage, remote_dir), 0o700)
        return remote_dir

    def launch(self, host: str, remote_dir: str) -> int:
        """Start the wrapper detached; returns its process-group id once it has written it."""
        try:
            self.ssh.check(host, f"cd {quote(remote_dir)} && : > log && "
                                 "setsid sh ./run.sh > log 2>&1 < /dev/null &", retry=False)
        except SSHError:
            # The connection broke during the launch; only the pid file can tell whether the stage started.
            if self.read_pid(host, remote_dir, wait=2.0) is None:
                raise
        pid = self.read_pid(host, remote_dir, wait=PID_WAIT)
        if pid is None:
            raise SSHError(f"the stage did not report its process id within {PID_WAIT:.0f} s")
        return pid

    def read_pid(self, host: str, remote_dir: str, wait: float) -> int | None:
        """The run's process-group id from its pid file, waiting up to ``wait`` seconds for it."""
        def pid() -> int | None:
            raw = self.ssh.read_file(host, f"{remote_dir}/pid")
            return int(raw) if raw and raw.strip().isdigit() else None

        try:
            return wait_until(pid, wait, f"the pid file in {remote_dir}", interval=0.05)
        except TimeoutError:
            return None

    def state(self, host: str, remote_dir: str, pid: int) -> RemoteState:
        """Whether the group lives is asked first: the wrapper writes the exit file before it exits, so a group
        seen gone has left its exit file (if it could) by the time the file is read."""
        d = quote(remote_dir)
        result = self.ssh.run(host, f"kill -0 -- -{int(pid)} 2>/dev/null && echo alive || echo gone; "
                                    f"cat {d}/exit 2>/dev/null || echo none; stat -c %s {d}/log")
        words = result.stdout.split()
        if len(words) < 3 or not words[2].isdigit():
            raise SSHError(f"could not read the state of the run in `{remote_dir}` on `{host}`")
        code = int(words[1]) if words[1].lstrip("-").isdigit() else None
        return RemoteState(int(words[2]), code, words[0] == "alive")

    def tail(self, host: str, remote_dir: str, offset: int) -> paramiko.Channel:
        """A stream of the log from byte ``offset`` on, following it as it grows."""
        return self.ssh.open_stream(host, f"exec tail -c +{offset + 1} -f -- {quote(remote_dir + '/log')}")

    def signal_group(self, host: str, pgid: int, signal: str) -> None:
        self.ssh.run(host, f"kill -{signal} -- -{int(pgid)} 2>/dev/null; exit 0")

    def group_alive(self, host: str, pgid: int) -> bool:
        return self.ssh.run(host, f"kill -0 -- -{int(pgid)} 2>/dev/null").exit_code == 0

    def stop_group(self, host: str, pgid: int, submit: Callable[[Callable[[], None]], Any]) -> None:
        """TERM the process group now; ``submit`` a job that KILLs what is left of it after CANCEL_GRACE."""
        self.signal_group(host, pgid, "TERM")

        def escalate() -> None:
            deadline = time.monotonic() + CANCEL_GRACE
            while time.monotonic() < deadline:
                if not self.group_alive(host, pgid):
                    return
                time.sleep(0.5)
            log.warning("process group %d on %s ignored SIGTERM; sending SIGKILL", pgid, host)
            self.signal_group(host, pgid, "KILL")

        submit(escalate)
