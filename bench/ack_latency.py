"""Ack latency of /cutover status through Socket Mode, beside a bare Bolt app that only acks.

Prints JSON: p50/p99/max in milliseconds over ROUNDS rounds of CONCURRENT commands sent at once.
Run: python bench/ack_latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_bolt import App  # noqa: E402
from slack_bolt.adapter.socket_mode import SocketModeHandler  # noqa: E402
from slack_sdk import WebClient  # noqa: E402

from bot.local.bot import start_local_bot  # noqa: E402
from bot.plan import parse_plan  # noqa: E402
from bot.standins.slack import SlackStandIn  # noqa: E402
from bench.common import PLAN  # noqa: E402

CONCURRENT = 20


def burst(slack: SlackStandIn, rounds: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(rounds):
        envs: list = []
        lock = threading.Lock()

        def send() -> None:
            env = slack.command("U0ALICE", "status")
            with lock:
                envs.append(env)

        threads = [threading.Thread(target=send) for _ in range(CONCURRENT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for env in envs:
            slack.wait_ack(env, timeout=30)
            latencies.append(env.ack_seconds * 1000)
        time.sleep(0.3)
    return latencies


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"n": len(values), "p50_ms": round(statistics.median(ordered), 2), "p99_ms": round(p99, 2),
            "max_ms": round(ordered[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with SlackStandIn(redeliver_after=None) as slack:
        local = start_local_bot(slack, parse_plan(PLAN, "bench plan"), str(Path(tempfile.mkdtemp()) / "b.db"))
        ours = burst(slack, args.rounds)
        local.stop()

    with SlackStandIn(redeliver_after=None) as slack:
        bare = App(client=WebClient(token=slack.bot_token, base_url=slack.api_url))

        @bare.command("/cutover")
        def only_ack(ack):  # type: ignore[no-untyped-def]
            ack()

        handler = SocketModeHandler(bare, slack.app_token)
        handler.connect()
        slack.wait_connected()
        baseline = burst(slack, args.rounds)
        handler.client.auto_reconnect_enabled = False
        threading.Thread(target=handler.close, daemon=True).start()

    print(json.dumps({"benchmark": "ack_latency", "transport": "socket_mode", "concurrent": CONCURRENT,
                      "rounds": args.rounds, "cutover_status": summary(ours), "bare_bolt_ack": summary(baseline)},
                     indent=2))


if __name__ == "__main__":
    main()
