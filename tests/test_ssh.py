"""The SSH layer against a real sshd: what a command printed is what the bot reads, every time."""

from __future__ import annotations

import copy
import threading

from bot.plan import parse_plan
from bot.ssh import SSHPool
from tests.conftest import PLAN

LINE = "the whole answer of a command, to its last byte"


def test_concurrent_commands_each_get_their_whole_output(sshd):
    """sshd can send a command's exit status before the last of its output, so reading must not stop there; and a
    quick command's channel may be gone before the client would send it EOF, so none is sent."""
    plan = copy.deepcopy(PLAN)
    plan["hosts"] = {"new": sshd.host_entry(), "old": sshd.host_entry()}
    pool = SSHPool(parse_plan(plan, "p").hosts)
    results: list[str] = []
    errors: list[Exception] = []

    def work() -> None:
        for _ in range(50):
            try:
                results.append(pool.run("new", f"echo '{LINE}'").stdout)
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        pool.close()
    assert not errors, errors[:3]
    short = [r for r in results if r != LINE + "\n"]
    assert len(results) == 800 and not short, f"{len(short)} of {len(results)} outputs cut short: {short[:3]}"
    # An EOF sent for a channel sshd had already freed makes it drop the whole connection.
    assert "nonexistent channel" not in sshd.log.read_text()
