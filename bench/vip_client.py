"""Load client for the failover benchmark; runs inside the lab's client namespace.

Open loop: request i is sent at start + i/RATE whatever the others are doing
(a pool of WORKERS threads, more than can be in flight at once), so a stalled
request never delays the next one and the send times stay evenly spaced. Each
request has a short TIMEOUT and is recorded with its scheduled time, its send
time, its end time (milliseconds, on the wall clock the bot also uses) and its
outcome: the server that answered, or refused / reset / timeout / other.
Bounded: at most RATE*SECONDS requests and SECONDS (+ TIMEOUT) of sending.
Prints one JSON line per request, then a summary line.

Usage: vip_client.py VIP RATE SECONDS [TIMEOUT]
"""

import http.client
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

vip, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
WORKERS = int(rate * timeout) + 32  # enough for every request a full timeout can hold in flight
interval = 1.0 / rate
limit = int(rate * seconds)
lock = threading.Lock()
wall0 = time.time() - time.monotonic()


def outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    return "other:" + exc.__class__.__name__


def one(i: int, due: float) -> None:
    sent = time.monotonic()
    connected = None
    try:
        conn = http.client.HTTPConnection(vip, 80, timeout=timeout)
        try:
            conn.connect()
            connected = time.monotonic()
            conn.request("GET", "/")
            who = conn.getresponse().read(64).decode(errors="replace").split()[0]
        finally:
            conn.close()
    except BaseException as exc:  # every failure is a data point here
        # Where it failed: a handshake never answered (the SYN went where nobody holds the address) is not a
        # request cut off after its connection was made (a connection split between two servers).
        who = outcome(exc) + (" after connect" if connected is not None else "")
    end = time.monotonic()
    line = json.dumps({"i": i, "due": round(wall0 + due, 4), "sent": round(wall0 + sent, 4),
                       "connected": round(wall0 + connected, 4) if connected is not None else None,
                       "end": round(wall0 + end, 4), "who": who})
    with lock:
        print(line, flush=True)


start = time.monotonic() + 0.05
with ThreadPoolExecutor(max_workers=WORKERS) as pool:
    for i in range(limit):
        due = start + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pool.submit(one, i, due)
print(json.dumps({"summary": True, "requests": limit, "rate": rate, "timeout_s": timeout, "workers": WORKERS}),
      flush=True)
