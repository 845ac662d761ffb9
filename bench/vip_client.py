"""Load client for the failover benchmark; runs inside the lab's client namespace.

WORKERS threads send GETs to http://VIP/ on a shared schedule of RATE per
second, for at most SECONDS and at most RATE*SECONDS requests, each with a
short timeout, so one stalled request does not hide the others. Prints one
JSON line per request: when it was sent, when its answer (or error) came, and
the server that answered.
"""

import json
import sys
import threading
import time
import urllib.request

vip, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
WORKERS = 8
interval = 1.0 / rate
limit = int(rate * seconds)
start = time.monotonic()
wall0 = time.time() - start
lock = threading.Lock()
slots = iter(range(limit))


def worker() -> None:
    while True:
        with lock:
            i = next(slots, None)
        if i is None:
            return
        due = start + i * interval
        now = time.monotonic()
        if now - start > seconds:
            return
        if due > now:
            time.sleep(due - now)
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{vip}/", timeout=0.5) as r:
                who = r.read(64).decode().split()[0]
        except Exception as exc:  # every failure is a data point here
            who = "error:" + exc.__class__.__name__
        done = time.monotonic()
        with lock:
            print(json.dumps({"sent": wall0 + sent, "at": wall0 + done, "who": who}), flush=True)


threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
