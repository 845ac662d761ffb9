"""The service gap of a bot-driven go-live, measured honestly from clients of both paths.

For DigitalOcean's tutorial keepalived settings and for what `cutover
keepalived` generates (with and without its track file, and with the flip
putting old in FAULT instead of lowering its priority), several runs each: a
lab of real keepalived on the generated files, sshd and web servers in network
namespaces; an open-loop client in the lab sending GETs at RATE/s
(bench/vip_client.py: evenly spaced sends that never wait for each other, a
short per-request timeout, millisecond timestamps), to keepalived's VIP (the
path of a private network) or to the reserved IP through an edge that routes
it to the droplet the DigitalOcean stand-in says holds it, which changes when
the notify script's assign action completes (the path of DigitalOcean's
public traffic), one path per run (--together: both at once); the bot asked
for a go-live and approved by two people through the Slack stand-in.

Two more settings measure the data window with DigitalOcean's own pace: an
assign action of 11 s (the duration in DigitalOcean's API example), with and
without the plan's forwarding (the old server's web tier relays every request
to the new one from the flip on). For them the old application's answers
after the last approval are counted: each is a write the new server never
sees.

Per run: the service gap (last good answer from old → first good answer from
new) and the client's own longest pause between sends within it, requests
that failed (refused, reset, timeout, other; and whether after connecting),
requests answered late (> 200 ms), p50/p99 latency of the requests sent within 2 s of the flip,
approval → health-file write (the host's mtime), approval → first answer from
new. Per setting: medians and spread. The output states the client's
resolution: a gap is known to within one send interval, plus the send skew.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.local.bot import start_local_bot  # noqa: E402
from bot.plan import parse_plan  # noqa: E402
from bot.standins.digitalocean import DigitalOceanStandIn  # noqa: E402
from bot.standins.lab import FLOATING_IP, NAMES, TUNED, TUTORIAL, VIP, KeepalivedLab, lab_unavailable  # noqa: E402
from bot.standins.slack import SlackStandIn  # noqa: E402
from bot.states import RequestState  # noqa: E402
from bot.switch.keepalived import FAULT_ON_FLIP  # noqa: E402
from bot.waiting import wait_until  # noqa: E402
from bench.common import PLAN  # noqa: E402

PATHS = {"vrrp": VIP, "digitalocean": FLOATING_IP}
ACTION_DELAY = 0.3  # the DigitalOcean stand-in's assign action: in-progress this long, then completed
SLOW_ACTION = 11.0  # DigitalOcean's own example of an assign action: 11 s from in-progress to completed
CLIENT_SECONDS = 14.0
CLIENT_TIMEOUT = 1.0
LATE_MS = 200
AROUND_FLIP_S = 2.0


def settled(bot, request_id: int) -> RequestState:  # type: ignore[no-untyped-def]
    def final() -> RequestState | None:
        state = RequestState(bot.services.store.get("golive_requests", request_id)["state"])
        return None if state.in_flight else state

    return wait_until(final, 90, f"request #{request_id} to settle")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def one_run(timing, track: bool, rate: float,  # type: ignore[no-untyped-def]
            paths: tuple[str, ...] = tuple(PATHS), action_delay: float = ACTION_DELAY, forward: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cutover-gap-"))
    seconds = CLIENT_SECONDS + max(0.0, action_delay - ACTION_DELAY)  # until well after the slowest assignment
    with DigitalOceanStandIn(action_delay=action_delay) as do, \
            KeepalivedLab(work / "lab", do, timing, track=track) as lab, SlackStandIn(redeliver_after=None) as slack:
        base = copy.deepcopy(PLAN)
        base.pop("hosts")
        base["stages"] = []
        plan = lab.plan(base)
        plan["failover"]["verify_timeout"] = f"{int(action_delay) + 30}s"
        if forward:
            plan["data"] = lab.forwarding()
        bot = start_local_bot(slack, parse_plan(plan, "bench"), str(work / "gap.db"),
                              digitalocean_end_point=do.end_point)
        # A client on keepalived's VIP (a private network's path), or on the reserved IP through the edge that
        # follows DigitalOcean's assignment (a DigitalOcean user's public path), or both.
        files = {path: open(work / f"samples-{path}.jsonl", "w") for path in paths}  # files: never block
        clients = [subprocess.Popen(["ip", "netns", "exec", lab.client_netns(), sys.executable,
                                     str(ROOT / "bench" / "vip_client.py"), PATHS[path], str(rate),
                                     str(seconds), str(CLIENT_TIMEOUT)], stdout=files[path]) for path in paths]
        try:
            time.sleep(3.0)
            bot.services.golive.request("U0ALICE")
            request = bot.services.store.query("SELECT * FROM golive_requests ORDER BY id DESC LIMIT 1")[0]
            slack.react("U0BOB", "white_check_mark", "C0LAUNCH", request["message_ts"])
            time.sleep(0.5)
            approved_at = time.time()
            slack.react("U0CAROL", "white_check_mark", "C0LAUNCH", request["message_ts"])
            state = settled(bot, request["id"])
            recorded = bot.services.store.query("SELECT approved_at FROM approvals WHERE request_id = ? AND user = ?",
                                                [request["id"], "U0CAROL"])
            result = json.loads(bot.services.store.get("golive_requests", request["id"])["result"] or "{}")
            for client in clients:
                client.wait(timeout=seconds + 30)
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
            for f in files.values():
                f.close()
            bot.stop()
    written = datetime.fromisoformat(result["flipped_at"]).timestamp() if result.get("flipped_at") else None
    # The moment the old application stopped taking requests: the forwarding, or without it the health write
    # (after which only the network's move sends requests elsewhere). Both by the host's clock, the lab's own.
    stopped = (datetime.fromisoformat(result["forwarded_at"]).timestamp() if result.get("forwarded_at")
               else written)
    # Where approval → write goes: Slack delivering the reaction and the bot recording it, then the fast
    # confirmation and the write itself.
    counted = datetime.fromisoformat(recorded[0]["approved_at"]).timestamp() if recorded else None
    breakdown = {"approval_to_recorded_ms": round((counted - approved_at) * 1000, 1) if counted else None,
                 "recorded_to_health_write_ms": round((written - counted) * 1000, 1) if counted and written
                 else None}
    out = {}
    for path in paths:
        lines = [json.loads(line) for line in (work / f"samples-{path}.jsonl").read_text().splitlines()
                 if line.strip()]
        samples = sorted((s for s in lines if "i" in s), key=lambda s: s["sent"])
        out[path] = {**analyse(samples, state, approved_at, written, rate, stopped), **breakdown}
    return out


def analyse(samples: list[dict], state: str, approved_at: float, written: float | None, rate: float,
            stopped: float | None = None) -> dict:
    ok = [s for s in samples if s["who"] in NAMES.values()]
    old_answered = [s for s in ok if s["who"] == NAMES["old"]]
    old_ok = [s["end"] for s in ok if s["who"] == NAMES["old"]]
    new_ok = [s["end"] for s in ok if s["who"] == NAMES["new"]]
    first_new = min(new_ok, default=None)
    last_old = max((t for t in old_ok if first_new is None or t < first_new), default=None)
    # The client's own pause in the gap: the longest time between two sends from the send of the last request
    # old answered to the send of the first new answered. A gap no longer than that pause says more about the
    # client (its process waiting for the CPU while keepalived and the bot act) than about the service.
    pause = None
    if first_new and last_old:
        since = next(s["sent"] for s in ok if s["end"] == last_old)
        until = next(s["sent"] for s in ok if s["end"] == first_new)
        sends = [s["sent"] for s in samples if since <= s["sent"] <= until]
        pause = max((b - a for a, b in zip(sends, sends[1:])), default=0.0)
    failed: dict[str, int] = {}
    for s in samples:
        if s["who"] not in NAMES.values():
            kind = s["who"].split(":")[0]
            failed[kind] = failed.get(kind, 0) + 1
    flip = written or first_new or approved_at
    # The switch: from the last approval until a second after the first answer from new. Failures outside it
    # are the lab's own (its edge is a forwarder in this busy process), not the flip's.
    switch_end = (first_new or flip) + 1.0
    failed_during = sum(1 for s in samples if s["who"] not in NAMES.values() and approved_at <= s["sent"] <= switch_end)
    around = [(s["end"] - s["sent"]) * 1000 for s in ok if abs(s["sent"] - flip) <= AROUND_FLIP_S]
    skew = [(s["sent"] - s["due"]) * 1000 for s in samples]
    return {
        "state": state,
        "requests": len(samples),
        "gap_ms": round((first_new - last_old) * 1000, 1) if first_new and last_old else None,
        "client_pause_in_gap_ms": round(pause * 1000, 1) if pause is not None else None,
        "failed": sum(failed.values()),
        "failed_by_kind": failed,
        "failed_during_switch": failed_during,
        "late_over_200ms": sum(1 for s in ok if (s["end"] - s["sent"]) * 1000 > LATE_MS),
        "p50_ms_around_flip": round(percentile(around, 0.5) or 0, 1) if around else None,
        "p99_ms_around_flip": round(percentile(around, 0.99) or 0, 1) if around else None,
        "approval_to_health_write_ms": round((written - approved_at) * 1000, 1) if written else None,
        "approval_to_first_new_ms": round((first_new - approved_at) * 1000, 1) if first_new else None,
        "old_answers_after_first_new": sum(1 for t in old_ok if first_new and t > first_new),
        # Each answer of the old application after the last approval is a write the new server never sees.
        "old_app_answers_after_approval": sum(1 for t in old_ok if t > approved_at),
        "approval_to_every_answer_from_new_ms": round((max((t for t in old_ok if t > approved_at), default=approved_at)
                                                       - approved_at) * 1000, 1),
        # After the flip (the forwarding, or the health write): requests sent after it that the old application
        # still answered, and those already in flight at it (sent before, answered after).
        "old_app_answers_after_flip": sum(1 for s in old_answered if stopped and s["sent"] > stopped),
        "old_app_answers_in_flight_at_flip": sum(1 for s in old_answered if stopped and s["sent"] <= stopped < s["end"]),
        "send_skew_ms_p99": round(percentile(skew, 0.99) or 0, 1) if skew else None,
    }


def spread(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return {"median": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--together", action="store_true",
                        help="both paths' clients in one run (the default runs one path at a time, so that the "
                             "lab's own load is one client's)")
    parser.add_argument("--only", help="one setting by name: digitalocean_tutorial, generated_without_track_file, "
                                       "generated_fault_on_flip, generated, generated_11s_action, "
                                       "generated_11s_action_forwarding")
    args = parser.parse_args()
    why = lab_unavailable()
    if why:
        print(json.dumps({"benchmark": "failover_gap", "skipped": why}))
        return
    interval = 1000 / args.rate
    report = {
        "benchmark": "failover_gap", "client": {
            "rate_per_s": args.rate, "timeout_ms": CLIENT_TIMEOUT * 1000, "late_ms": LATE_MS,
            "resolution": f"sends every {interval:.1f} ms, open loop, timestamps in ms: a gap is known to within "
                          f"{interval:.1f} ms plus the send skew reported per run; a timeout counts as a failed "
                          "request, never as gap"},
        "settings": []}
    report["digitalocean_action_delay_ms"] = ACTION_DELAY * 1000
    settings = (("digitalocean_tutorial", TUTORIAL, False, ACTION_DELAY, False),
                ("generated_without_track_file", TUNED, False, ACTION_DELAY, False),
                ("generated_fault_on_flip", FAULT_ON_FLIP, True, ACTION_DELAY, False),
                ("generated", TUNED, True, ACTION_DELAY, False),
                ("generated_11s_action", TUNED, True, SLOW_ACTION, False),
                ("generated_11s_action_forwarding", TUNED, True, SLOW_ACTION, True))
    for name, timing, track, delay, forward in (s for s in settings if args.only in (None, s[0])):
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for _ in range(args.runs):
            for paths in ([tuple(PATHS)] if args.together else [(path,) for path in PATHS]):
                for path, result in one_run(timing, track, args.rate, paths, delay, forward).items():
                    runs[path].append(result)
        report["settings"].append({
            "name": name, "keepalived": timing.label() + (", track file" if track else ""),
            "digitalocean_action_delay_ms": delay * 1000, "forwarding": forward,
            **{path: {"runs": runs[path],
                      **{key: spread(runs[path], key)
                         for key in ("gap_ms", "client_pause_in_gap_ms", "failed", "failed_during_switch",
                                     "late_over_200ms", "p99_ms_around_flip", "approval_to_health_write_ms",
                                     "approval_to_recorded_ms", "recorded_to_health_write_ms",
                                     "approval_to_first_new_ms", "old_app_answers_after_approval",
                                     "old_app_answers_after_flip", "old_app_answers_in_flight_at_flip",
                                     "approval_to_every_answer_from_new_ms")}}
               for path in PATHS},
        })
    report["clients"] = "both paths at once" if args.together else "one path's client per run"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
