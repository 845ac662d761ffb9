"""Stage output: following it (remote stage → bot's log) beside raw `ssh host cat`, and uploading it.

Prints JSON:
- follow: bytes/s through the bot (into its local copy of the log) and through `ssh host cat` on the
  same sshd (out of its pipe), each from its first byte to its last, and their ratio; the time to the
  first byte (connecting, launching) and, for the bot, until the offset is recorded and the run is
  final, are reported beside. Sizes are polled every 1 ms with time.monotonic, so the resolution is
  about 1 ms against transfers of seconds. Also the bot's peak RSS growth while following;
- upload: the bot's peak RSS growth while redacting, compressing and uploading a large log and a log
  that is one long line without a newline (sampled every 20 ms), and how long each took.
The Slack stand-in keeps uploads on disk, so its own memory is not counted as the bot's.
Run: python bench/stage_stream.py [--mb 200] [--upload-mb 1024] [--line-mb 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PLAN, PeakRss, rss_kb  # noqa: E402
from bot.local.bot import start_local_bot  # noqa: E402
from bot.plan import parse_plan  # noqa: E402
from bot.standins.slack import SlackStandIn  # noqa: E402
from bot.standins.sshd import LocalSshd  # noqa: E402

LINE = b"Processed 123456/999999 rows of table node_revision, batch 42, elapsed 0:12:34\n"


def fill(path: Path, mb: int, pattern: bytes) -> int:
    with path.open("wb") as f:
        chunk = pattern * max(1, (1 << 20) // len(pattern))
        while f.tell() < mb * 1024 * 1024:
            f.write(chunk)
    return path.stat().st_size


def raw_ssh(cmd: list[str], size: int) -> dict:
    """`ssh host cat` read from a pipe: when its first byte came, and the seconds from there to the last."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    got = len(proc.stdout.read(1))
    first_byte = time.monotonic()
    while True:
        block = proc.stdout.read1(1 << 20)
        if not block:
            break
        got += len(block)
    seconds = time.monotonic() - first_byte
    proc.wait()
    assert got == size, (got, size)
    return {"first_byte_after_s": round(first_byte - started, 3), "seconds": round(seconds, 3),
            "bytes_per_s": round(size / seconds)}


def upload(bot, run_id: int, log: Path) -> dict:  # type: ignore[no-untyped-def]
    """Upload ``log`` as the full log of ``run_id``: peak RSS growth and seconds."""
    runner = bot.services.stages
    target = runner.logs.path(run_id)
    os.replace(log, target)
    run = runner.runs.get(run_id)
    baseline = rss_kb()
    started = time.monotonic()
    with PeakRss() as peak:
        file_id = runner.logs.upload(run)
    return {"bytes": target.stat().st_size, "uploaded": file_id is not None,
            "seconds": round(time.monotonic() - started, 2),
            "peak_rss_growth_mb": round((peak.peak - baseline) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200, help="stage output to follow")
    parser.add_argument("--upload-mb", type=int, default=1024, help="size of the large log to upload")
    parser.add_argument("--line-mb", type=int, default=200, help="size of the log that is one line")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-"))
    data = work / "output.txt"
    size = fill(data, args.mb, LINE)
    uploads = work / "uploads"
    uploads.mkdir()

    with LocalSshd(work / "sshd") as sshd:
        cmd = ["ssh", "-q", "-i", str(sshd.client_key), "-p", str(sshd.port), "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               f"{sshd.user}@127.0.0.1", f"cat {data}"]
        raw = raw_ssh(cmd, size)

        plan = copy.deepcopy(PLAN)
        plan["hosts"] = {"new": sshd.host_entry()}
        plan["stages"] = [{"name": "dump", "host": "new", "command": f"cat {data}",
                           "progress": r"Processed (?P<done>\d+)/(?P<total>\d+)"}]
        with SlackStandIn(redeliver_after=None, upload_dir=str(uploads)) as slack:
            bot = start_local_bot(slack, parse_plan(plan, "bench"), str(work / "bench.db"))
            runner = bot.services.stages
            baseline = rss_kb()
            with PeakRss() as following:
                started = time.monotonic()
                run_id = runner.start("dump", "U0ALICE")
                local = runner.logs.path(run_id)
                while not local.exists() or local.stat().st_size == 0:
                    time.sleep(0.001)
                first_byte = time.monotonic()
                while local.stat().st_size < size:
                    time.sleep(0.001)
                follow_seconds = time.monotonic() - first_byte
                startup_seconds = first_byte - started
            runner.wait(run_id, timeout=600)
            recorded_seconds = time.monotonic() - first_byte
            calls: dict[str, int] = {}
            for call in slack.calls:
                calls[call["method"]] = calls.get(call["method"], 0) + 1
            data.unlink()
            big = work / "big.log"
            fill(big, args.upload_mb, LINE)
            large = upload(bot, run_id, big)
            line = work / "line.log"
            fill(line, args.line_mb, b"x" * 4096)
            one_line = upload(bot, run_id, line)
            bot.stop()

    print(json.dumps({
        "benchmark": "stage_stream",
        "follow": {
            "bytes": size,
            "raw_ssh_cat": raw,
            "bot_follow": {"first_byte_after_s": round(startup_seconds, 3), "seconds": round(follow_seconds, 3),
                           "bytes_per_s": round(size / follow_seconds),
                           "until_recorded_and_final_s": round(recorded_seconds, 3)},
            "bot_follow_vs_raw": round(raw["seconds"] / follow_seconds, 3),
            "peak_rss_growth_mb": round((following.peak - baseline) / 1024, 1),
            "slack_calls": calls,
        },
        "upload_large_log": large,
        "upload_one_long_line": one_line,
        "resolution": "durations from time.monotonic (sub-ms); RSS sampled every 20 ms from /proc",
    }, indent=2))


if __name__ == "__main__":
    main()
