"""What the stage tests share: a plan of stages on the test's sshd, and ways to wait for a run's end."""

from __future__ import annotations

import copy
import subprocess
import uuid

from bot.standins.slack import blocks_text
from bot.waiting import wait_until
from tests.conftest import PLAN
from tests.helpers import latest_runs

SLOW_LINES = 40
SLOW = f"i=0; while [ $i -lt {SLOW_LINES} ]; do echo \"line $i of the slow stage\"; i=$((i+1)); sleep 0.1; done"
SLOW_OUTPUT = "".join(f"line {i} of the slow stage\n" for i in range(SLOW_LINES))


def stage_plan(sshd, tmp_path, **overrides) -> dict:
    seconds = 300 + uuid.uuid4().int % 600
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry()}
    plan["stages"] = [
        {"name": "quick", "host": "new", "command": "echo hello; echo 'Processed 1/2'; echo 'Processed 2/2'; echo done",
         "progress": r"Processed (?P<done>\d+)/(?P<total>\d+)"},
        {"name": "fails", "host": "new", "command": "echo about to fail; echo 'ERROR: disk full' >&2; exit 3"},
        {"name": "slow", "host": "new", "command": SLOW, "workdir": str(tmp_path)},
        {"name": "hang", "host": "new", "command": f"echo waiting; sleep {seconds} & sleep {seconds}; wait",
         "timeout": "2s"},
        {"name": "hold", "host": "new", "command": f"echo waiting; sleep {seconds} & sleep {seconds}; wait"},
        {"name": "after-quick", "host": "new", "command": "echo second", "depends_on": ["quick"]},
        {"name": "after-fails", "host": "new", "command": "echo never", "depends_on": ["fails"]},
    ]
    plan.update(overrides)
    return plan


def group_gone(slack, pgid):
    return slack.wait_for(lambda: subprocess.run(["kill", "-0", "--", f"-{pgid}"], capture_output=True).returncode,
                          15, f"process group {pgid} to be gone")


def finished(bot, name, timeout=30):
    store = bot.services.store

    def done():
        run = latest_runs(store).get(name)
        return run if run and run["state"] not in ("starting", "running") and run["log_uploaded"] else None

    try:
        return wait_until(done, timeout, f"{name} to finish", interval=0.05)
    except TimeoutError:
        raise TimeoutError(f"{name} did not finish: {latest_runs(store).get(name)}") from None


def uploaded(slack, run):
    files = [f for f in slack.files.values() if f.get("thread_ts") == run["message_ts"] and f.get("completed")]
    return files


def updates_of(slack, ts) -> list[dict]:
    """Every chat.update the stand-in was asked for on the message ``ts``, refused ones too."""
    return [c for c in slack.calls_of("chat.update") if c["params"].get("ts") == ts]


def message_text(slack, ts):
    msg = slack.message("C0LAUNCH", ts)
    return blocks_text(msg.get("blocks")) or msg["text"]
