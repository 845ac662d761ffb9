"""The protocol a stage run speaks with its host: a wrapper script, a stop script, marker files, a log.

Each run gets its own directory under ``~/.cutover/runs`` on the host,
created exclusively with a random part in its name, so two bots (or two
databases) can never share one. The wrapper starts the stage's command in a
session of its own (``setsid``), records that process group in ``pid``,
waits for it and writes ``exit`` (the code and the host's time) by rename.
The wrapper stays outside the group, so a stop can never keep it from
writing the exit file.

Everything that must hold while the bot is away happens on the host: the
stage's timeout (a watchdog in the wrapper), and a stop's escalation from
TERM to KILL (``stop.sh``). A stop leaves its reason in ``stop``, written
only while the run has not ended, so the final state comes from what
happened on the host, not from what the bot asked for.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import paramiko

from bot.plan import Stage
from bot.ssh import SSHError, SSHPool, quote
from bot.waiting import wait_until

log = logging.getLogger("cutover.remote_run")

PID_WAIT = 10.0
CANCEL_GRACE = 10
STOP_REASONS = ("cancelled", "timed out")
PRUNE_AFTER_MINUTES = 10  # a finished run's folder is kept at least this long after its end


@dataclass(frozen=True)
class RemoteState:
    """What the host says about a run at one moment."""

    size: int  # the log's size in bytes
    exit_code: int | None  # from the exit file, once the wrapper wrote it
    group_alive: bool  # some process of the stage's group still runs
    wrapper_alive: bool
    ended_ago: float | None  # seconds between the command's end and this check, by the host's clock
    stop: str | None  # the reason a stop reached the run, if one did
    started: float | None = None  # when the wrapper started the command, epoch seconds by the host's clock

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    @property
    def ended(self) -> bool:
        """The command ended, or nothing is left that could still end it (the wrapper was killed)."""
        return self.exited or not (self.group_alive or self.wrapper_alive)


def wrapper(stage: Stage, remote_dir: str, env: dict[str, int | str] | None = None) -> bytes:
    """The script that runs on the host: it outlives the SSH connection and the bot. ``env``: variables the
    command finds set (a salvage run's window), given as values, never pasted into its text."""
    d = quote(remote_dir)
    body = []
    if stage.workdir:
        workdir = stage.workdir
        target = '"$HOME"' + quote(workdir[1:]) if workdir.startswith("~") else quote(workdir)
        body.append(f"cd {target} || {{ echo {quote('cutover: cannot change to ' + workdir)}; exit 126; }}")
    body.append(stage.command or "")
    lines = ["#!/bin/sh", f"# cutover: stage {stage.name}", f"D={d}", "trap '' HUP",
             'echo $$ > "$D/wrapper"',
             *[f"export {name}={quote(str(value))}" for name, value in sorted((env or {}).items())],
             'date +%s.%N > "$D/started.tmp" && mv "$D/started.tmp" "$D/started"',
             f"setsid sh -c {quote(chr(10).join(body))} < /dev/null &",
             "G=$!",
             'echo $G > "$D/pid.tmp" && mv "$D/pid.tmp" "$D/pid"']
    if stage.timeout:
        seconds = max(1, math.ceil(stage.timeout.total_seconds()))
        lines.append(f'( end=$(( $(date +%s) + {seconds} )); '
                     'while [ ! -e "$D/exit" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 1; done; '
                     '[ -e "$D/exit" ] || sh "$D/stop.sh" "timed out" ) > /dev/null 2>&1 < /dev/null &')
    lines += ['wait "$G"', "code=$?",
              'echo "$code $(date +%s)" > "$D/exit.tmp" && mv "$D/exit.tmp" "$D/exit"', ""]
    return "\n".join(lines).encode()


def stop_script(remote_dir: str) -> bytes:
    """``stop.sh REASON``: TERM the group now, KILL what is left after the grace period, the bot or not.

    It says ``ended`` when the run had already ended (nothing was stopped) and ``sent`` when it signalled.
    The reason is written once, by the first stop that reaches a live run.
    """
    return "\n".join([
        "#!/bin/sh", f"D={quote(remote_dir)}",
        '[ -e "$D/exit" ] && { echo ended; exit 0; }',
        'G=$(cat "$D/pid" 2>/dev/null)',
        '[ -n "$G" ] || { echo starting; exit 0; }',
        '( set -C; echo "$1" > "$D/stop" ) 2>/dev/null',
        'kill -TERM "-$G" 2>/dev/null',
        f"setsid sh -c 'sleep {CANCEL_GRACE}; kill -KILL \"-$1\" 2>/dev/null' sh \"$G\" "
        "> /dev/null 2>&1 < /dev/null &",
        "echo sent", ""]).encode()


def prune_script(stage_name: str, keep: int) -> str:
    """Remove this stage's finished run directories beyond the newest ``keep`` (by time of last change), and
    print ``pruned N``. Only directories named exactly ``<stage>-<run id>-<12 hex>`` whose ``exit`` file is over
    PRUNE_AFTER_MINUTES old are touched: a run without one is running, or ended in a way a bot has still to read,
    and one that just ended may still have its log read by a bot."""
    return ("( cd \"$HOME/.cutover/runs\" 2>/dev/null || exit 0; n=0; gone=0; "
            f"for d in $(ls -1dt -- {quote(stage_name)}-* 2>/dev/null); do "
            f"rest=${{d#{stage_name}-}}; run=${{rest%-*}}; hex=${{rest##*-}}; "
            'case "$run" in ""|*[!0-9]*) continue;; esac; '
            'case "$hex" in *[!0-9a-f]*) continue;; esac; [ ${#hex} -eq 12 ] || continue; '
            '[ -d "$d" ] && [ -e "$d/exit" ] || continue; n=$((n+1)); '
            f'[ -n "$(find "$d/exit" -mmin +{PRUNE_AFTER_MINUTES} 2>/dev/null)" ] || continue; '
            f'if [ $n -gt {int(keep)} ]; then rm -rf -- "./$d" && gone=$((gone+1)); fi; done; '
            'echo "pruned $gone" )')


class RemoteRuns:
    def __init__(self, ssh: SSHPool, keep: int = 10) -> None:
        self.ssh = ssh
        self.keep = keep  # [ssh] keep_runs: finished run directories kept per stage on each host

    def prepare(self, stage: Stage, run_id: int, env: dict[str, int | str] | None = None) -> str:
        """Prune the stage's old finished runs on its host, create this run's own directory (exclusively) and
        write its wrapper; returns the directory."""
        key = f"{stage.name}-{run_id}-{secrets.token_hex(6)}"
        out = self.ssh.check(
            stage.host, 'command -v setsid >/dev/null || { echo "setsid is not installed" >&2; exit 3; }; '
                        f'{prune_script(stage.name, self.keep)}; '
                        f'mkdir -p "$HOME/.cutover/runs" && d="$HOME/.cutover/runs/{key}" && mkdir "$d" '
                        '&& cd "$d" && pwd').strip().splitlines()
        remote_dir = out[-1] if out else ""
        pruned = next((line.split()[1] for line in out if line.startswith("pruned ")), "0")
        if pruned != "0":
            log.info("removed %s finished run folder(s) of `%s` on `%s` (keeping the newest %d: [ssh] keep_runs)",
                     pruned, stage.name, stage.host, self.keep)
        self.ssh.write_file_atomic(stage.host, f"{remote_dir}/stop.sh", stop_script(remote_dir), 0o700)
        self.ssh.write_file_atomic(stage.host, f"{remote_dir}/run.sh", wrapper(stage, remote_dir, env), 0o700)
        return remote_dir

    def launch(self, host: str, remote_dir: str) -> int:
        """Start the wrapper detached; returns its process-group id once it has written it."""
        try:
            # The braces keep the launching shell in the foreground: it returns, and the session ends, at once.
            self.ssh.check(host, f"cd {quote(remote_dir)} && : > log && "
                                 "{ setsid sh ./run.sh > log 2>&1 < /dev/null & }", retry=False)
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
        """Liveness is asked before the exit file is read: the wrapper writes the exit file before it exits,
        so a wrapper seen gone has left its exit file (if it could) by the time the file is read."""
        d = quote(remote_dir)
        result = self.ssh.run(host, "; ".join([
            f"kill -0 -{int(pid)} 2>/dev/null && echo alive || echo gone",
            f'w=$(cat {d}/wrapper 2>/dev/null); [ -n "$w" ] && kill -0 "$w" 2>/dev/null && echo alive || echo gone',
            "date +%s", f"stat -c %s {d}/log",
            f'echo "stop:$(head -c 40 {d}/stop 2>/dev/null)"', f'echo "exit:$(cat {d}/exit 2>/dev/null)"',
            f'echo "started:$(cat {d}/started 2>/dev/null)"']))
        lines = result.stdout.splitlines()
        if len(lines) < 7 or not lines[2].isdigit() or not lines[3].isdigit():
            raise SSHError(f"could not read the state of the run in `{remote_dir}` on `{host}`")
        stop = lines[4].removeprefix("stop:").strip()
        exit_words = lines[5].removeprefix("exit:").split()
        code = int(exit_words[0]) if exit_words and exit_words[0].lstrip("-").isdigit() else None
        ended_ago = None
        if len(exit_words) > 1 and exit_words[1].isdigit():
            ended_ago = max(0, int(lines[2]) - int(exit_words[1]))
        try:
            started = float(lines[6].removeprefix("started:")) or None
        except ValueError:
            started = None  # a wrapper from before the start was recorded, or not written yet
        return RemoteState(size=int(lines[3]), exit_code=code, group_alive=lines[0] == "alive",
                           wrapper_alive=lines[1] == "alive", ended_ago=ended_ago,
                           stop=stop if stop in STOP_REASONS else None, started=started)

    def tail(self, host: str, remote_dir: str, offset: int) -> paramiko.Channel:
        """A stream of the log from byte ``offset`` on, following it as it grows."""
        return self.ssh.open_stream(host, f"exec tail -c +{offset + 1} -f -- {quote(remote_dir + '/log')}")

    def stop(self, host: str, remote_dir: str, reason: str) -> bool:
        """Stop the run on its host (TERM, then KILL after CANCEL_GRACE, carried out there).

        True when the stop reached a live run; False when the run had already ended. Raises SSHError when the
        host cannot be asked, and StopNotYet while the run has not yet recorded its process group. Asking
        twice is harmless: the first reason stays, and a second TERM meets a group already stopping.
        """
        out = self.ssh.check(host, f"sh {quote(remote_dir + '/stop.sh')} {quote(reason)}").strip()
        if out == "starting":
            raise StopNotYet(remote_dir)
        return out == "sent"


class StopNotYet(Exception):
    """The run has not written its process group yet; the stop is delivered once it has."""
