"""The service gap of a bot-driven go-live, measured from a client hitting the VIP.

For DigitalOcean's tutorial keepalived settings and for the tuned settings the
README recommends, three runs each: a lab of real keepalived, sshd and web
servers in network namespaces; a client in the lab sending GETs to the VIP at
RATE/s from 8 threads (bounded in count and time), timed by when answers arrive; the bot asked for a go-live and approved by
two people through the Slack stand-in. Prints JSON: the gap (last answer from
old to first from new), failed requests, and approval-to-first-new-answer.
Needs root and keepalived. Run: python bench/failover_gap.py [--runs 3] [--rate 250]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.local import start_local_bot  # noqa: E402
from bot.plan import parse_plan  # noqa: E402
from bot.standins.digitalocean import DigitalOceanStandIn  # noqa: E402
from bot.standins.lab import NAMES, TUNED, TUTORIAL, VIP, KeepalivedLab, lab_unavailable  # noqa: E402
from bot.standins.slack import SlackStandIn  # noqa: E402
from bot.states import RequestState  # noqa: E402
from bot.waiting import wait_until  # noqa: E402
from bench.common import PLAN  # noqa: E402

CLIENT_SECONDS = 14.0


def settled(bot, request_id: int) -> RequestState:  # type: ignore[no-untyped-def]
    def final() -> RequestState | None:
        state = RequestState(bot.services.store.get("golive_requests", request_id)["state"])
        return None if state.in_flight else state

    return wait_until(final, 90, f"request #{request_id} to settle")


def one_run(timing, rate: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cutover-gap-"))
    with DigitalOceanStandIn(action_delay=0.3) as do, KeepalivedLab(work / "lab", do, timing) as lab, \
            SlackStandIn(redeliver_after=None) as slack:
        base = copy.deepcopy(PLAN)
        base.pop("hosts")
        base["stages"] = []
        bot = start_local_bot(slack, parse_plan(lab.plan(base), "bench"), str(work / "gap.db"),
                              digitalocean_end_point=do.end_point)
        samples_file = open(work / "samples.jsonl", "w")  # a file, not a pipe: the client must never block
        client = subprocess.Popen(["ip", "netns", "exec", lab.client_netns(), sys.executable,
                                   str(ROOT / "bench" / "vip_client.py"), VIP, str(rate), str(CLIENT_SECONDS)],
                                  stdout=samples_file)
        try:
            time.sleep(2.0)
            bot.services.golive.request("U0ALICE")
            request = bot.services.store.query("SELECT * FROM golive_requests ORDER BY id DESC LIMIT 1")[0]
            slack.react("U0BOB", "white_check_mark", "C0LAUNCH", request["message_ts"])
            approved_at = time.time()
            slack.react("U0CAROL", "white_check_mark", "C0LAUNCH", request["message_ts"])
            state = settled(bot, request["id"])
            client.wait(timeout=CLIENT_SECONDS + 30)
        finally:
            if client.poll() is None:
                client.kill()
            samples_file.close()
            bot.stop()
    out = (work / "samples.jsonl").read_text()
    samples = sorted((json.loads(line) for line in out.splitlines() if line.strip()), key=lambda s: s["at"])
    old = [s["at"] for s in samples if s["who"] == NAMES["old"]]
    new = [s["at"] for s in samples if s["who"] == NAMES["new"]]
    first_new = min(new) if new else None
    last_old = max((t for t in old if first_new is None or t < first_new), default=None)
    span = [s for s in samples if last_old and first_new and last_old < s["at"] < first_new]
    duration = samples[-1]["sent"] - samples[0]["sent"] if len(samples) > 1 else 0
    return {
        "state": state,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / duration, 1) if duration else None,
        "gap_ms": round((first_new - last_old) * 1000) if first_new and last_old else None,
        "failed_requests": sum(1 for s in samples if s["who"].startswith("error:")),
        "failed_in_gap": sum(1 for s in span if s["who"].startswith("error:")),
        "approval_to_first_new_ms": round((first_new - approved_at) * 1000) if first_new else None,
        "old_answers_after_flip": sum(1 for t in old if first_new and t > first_new),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=250.0)
    args = parser.parse_args()
    why = lab_unavailable()
    if why:
        print(json.dumps({"benchmark": "failover_gap", "skipped": why}))
        return
    report = {"benchmark": "failover_gap", "client_rate_per_s": args.rate, "settings": []}
    for name, timing in (("digitalocean_tutorial", TUTORIAL), ("tuned", TUNED)):
        runs = [one_run(timing, args.rate) for _ in range(args.runs)]
        gaps = [r["gap_ms"] for r in runs if r["gap_ms"] is not None]
        latencies = [r["approval_to_first_new_ms"] for r in runs if r["approval_to_first_new_ms"] is not None]
        report["settings"].append({
            "name": name, "keepalived": timing.label(), "runs": runs,
            "median_gap_ms": statistics.median(gaps) if gaps else None,
            "median_approval_to_first_new_ms": statistics.median(latencies) if latencies else None,
        })
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
