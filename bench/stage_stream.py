"""Stage output throughput: remote stage → bot's log, beside raw `ssh host cat` on the same sshd.

Prints JSON: bytes/s both ways, the bot's peak RSS growth while following and
while uploading, and the Slack calls made for the run.
Run: python bench/stage_stream.py [--mb 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.local import start_local_bot  # noqa: E402
from bot.plan import parse_plan  # noqa: E402
from bot.standins.slack import SlackStandIn  # noqa: E402
from bot.standins.sshd import LocalSshd  # noqa: E402
from tests.conftest import PLAN  # noqa: E402
from tests.helpers import rss_kb  # noqa: E402


class PeakRss:
    def __init__(self) -> None:
        self.peak = rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kb())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-"))
    data = work / "output.txt"
    line = b"Processed 123456/999999 rows of table node_revision, batch 42, elapsed 0:12:34\n"
    with data.open("wb") as f:
        chunk = line * (1 << 14)
        while f.tell() < args.mb * 1024 * 1024:
            f.write(chunk)
    size = data.stat().st_size

    with LocalSshd(work / "sshd") as sshd:
        cmd = ["ssh", "-q", "-i", str(sshd.client_key), "-p", str(sshd.port), "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               f"{sshd.user}@127.0.0.1", f"cat {data}"]
        started = time.monotonic()
        with open(os.devnull, "wb") as sink:
            subprocess.run(cmd, stdout=sink, check=True)
        raw_seconds = time.monotonic() - started

        plan = copy.deepcopy(PLAN)
        plan["hosts"] = {"new": sshd.host_entry()}
        plan["stages"] = [{"name": "dump", "host": "new", "command": f"cat {data}",
                           "progress": r"Processed (?P<done>\d+)/(?P<total>\d+)"}]
        with SlackStandIn(redeliver_after=None) as slack:
            bot = start_local_bot(slack, parse_plan(plan, "bench"), str(work / "bench.db"))
            runner = bot.services.stages
            baseline = rss_kb()
            with PeakRss() as following:
                started = time.monotonic()
                run_id = runner.start("dump", "U0ALICE")
                store = bot.services.store
                while store.query("SELECT log_offset FROM stage_runs WHERE id = ?", [run_id])[0]["log_offset"] < size:
                    time.sleep(0.02)
                follow_seconds = time.monotonic() - started
            with PeakRss() as uploading:
                runner.wait(run_id, timeout=600)
            total_seconds = time.monotonic() - started
            local_size = (bot.services.settings.log_dir / f"run-{run_id}.log").stat().st_size
            calls: dict[str, int] = {}
            for call in slack.calls:
                calls[call["method"]] = calls.get(call["method"], 0) + 1
            bot.stop()

    print(json.dumps({
        "benchmark": "stage_stream",
        "bytes": size,
        "bot_log_bytes": local_size,
        "raw_ssh_cat": {"seconds": round(raw_seconds, 2), "bytes_per_s": round(size / raw_seconds)},
        "bot_follow": {"seconds": round(follow_seconds, 2), "bytes_per_s": round(size / follow_seconds)},
        "bot_follow_vs_raw": round(raw_seconds / follow_seconds, 3),
        "until_final_message_and_upload_s": round(total_seconds, 2),
        "peak_rss_growth_mb": {"following": round((following.peak - baseline) / 1024, 1),
                               "uploading": round((uploading.peak - baseline) / 1024, 1)},
        "slack_calls": calls,
    }, indent=2))


if __name__ == "__main__":
    main()
