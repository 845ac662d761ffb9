"""The flip the servers guard: a compare-and-swap on the old server's health file, with the request recorded there.

A go-live writes the unhealthy value only if the file holds the healthy one,
and first claims the switch in a sidecar file (``<health file>.cutover``,
created exclusively: of two bots, one claims it) naming the request, the bot
and the time. A rollback writes the saved value back only if the sidecar
names the go-live it undoes, then moves the record to
``<health file>.cutover-undone``. Both are one shell command on the host.

So a bot restored from a stale copy of the database, or a second bot on
another machine, can never flip twice nor silently undo another's flip: it
finds the recorded request and says whose it is. A request is named by its id
and the time it was made (``#3@2026-12-01T20:14:05+00:00``): a stale copy may
hand out the same id again, never with the same time.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from bot.ssh import quote

CLAIMED = 45  # the sidecar names another request
UNEXPECTED = 46  # the health file holds neither value
NO_CLAIM = 47  # a rollback finds no go-live recorded on the server
CLAIM_SUFFIX = ".cutover"
UNDONE_SUFFIX = ".cutover-undone"


def instance() -> str:
    """This bot process, as the record on a server names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def request_key(request_id: int, created_at: datetime) -> str:
    return f"#{request_id}@{created_at.isoformat()}"


@dataclass(frozen=True)
class Claim:
    """A line of the sidecar: who switched (or switched back), as recorded on the server."""

    kind: str  # golive or rollback
    key: str  # #ID@CREATED
    by: str  # host:pid of the bot
    at: datetime | None

    @property
    def request_id(self) -> int | None:
        number = self.key.removeprefix("#").split("@", 1)[0]
        return int(number) if number.isdigit() else None

    def said(self) -> str:
        when = f" at {self.at:%H:%M:%S} UTC" if self.at else ""
        made = "the switch was made" if self.kind == "golive" else "the switch was rolled back"
        return f"{made} by request #{self.request_id if self.request_id is not None else '?'}{when} (bot {self.by})"


def parse_claim(text: str | None) -> Claim | None:
    """The first line of a sidecar, or None when there is none (or it is not one of ours)."""
    words = (text or "").strip().splitlines()[0].split() if (text or "").strip() else []
    if len(words) < 3 or words[0] not in ("golive", "rollback"):
        return None
    at = None
    if len(words) > 3:
        try:
            at = datetime.fromtimestamp(float(words[3]), timezone.utc)
        except ValueError:
            at = None
    return Claim(words[0], words[1], words[2], at)


def record(kind: str, key: str) -> str:
    return f"{kind} {key} {instance()} $(date +%s.%N)"


def golive_command(path: str, key: str, expect: str, new: str) -> str:
    """Claim, then swap ``expect`` for ``new`` (sent on stdin, ``new`` and a newline). Prints ``written`` or
    ``already`` (this request's own flip, found made: a resumed request), then the file's time; exits CLAIMED or
    UNEXPECTED without writing."""
    return "; ".join([
        f"p={quote(path)}", f'c="$p{CLAIM_SUFFIX}"', f"key={quote(key)}", f"want={quote(expect)}",
        f"new={quote(new)}", "made=0", f'u="$p{UNDONE_SUFFIX}"',
        # This very request switched and was rolled back already: never again.
        f'case "$(head -n 1 "$u" 2>/dev/null)" in "golive $key "*) '
        f'printf "claimed:%s\\n" "$(tail -n 1 "$u")"; exit {CLAIMED};; esac',
        f'if err=$( ( set -C; echo "{record("golive", "$key")}" > "$c" ) 2>&1 ); then made=1; '
        'elif [ ! -e "$c" ]; then echo "$err" >&2; exit 1; '  # not claimed by anyone: the host's own error
        f'else held=$(head -n 1 "$c" 2>/dev/null); case "$held" in "golive $key "*) ;; '
        f'*) printf "claimed:%s\\n" "$held"; exit {CLAIMED};; esac; fi',
        'cur=$(cat "$p" 2>/dev/null) || cur=""',
        'if [ "$made" = 0 ] && [ "$cur" = "$new" ]; then printf "already\\n%s\\n" "$(date -r "$p" +%s.%N)"; exit 0; fi',
        f'if [ "$cur" != "$want" ]; then [ "$made" = 1 ] && rm -f "$c"; '
        f'printf "holds:%s\\n" "$(printf %s "$cur" | head -c 60)"; exit {UNEXPECTED}; fi',
        't="$p.cutover-$$.tmp"',
        'if cat > "$t" && chmod 644 "$t" && mv -f "$t" "$p"; then '
        'printf "written\\n%s\\n" "$(date -r "$p" +%s.%N)"; '
        'else rc=$?; rm -f "$t"; [ "$made" = 1 ] && rm -f "$c"; exit $rc; fi',
    ])


def rollback_command(path: str, golive_key: str, rollback_key: str, new: str) -> str:
    """Write ``new`` (sent on stdin) back only if the sidecar names the go-live ``golive_key``; then move the
    record aside. Prints ``written`` or ``already`` (found rolled back by this very record), then the file's time; exits CLAIMED
    or NO_CLAIM without writing."""
    return "; ".join([
        f"p={quote(path)}", f'c="$p{CLAIM_SUFFIX}"', f'u="$p{UNDONE_SUFFIX}"', f"key={quote(golive_key)}",
        f"new={quote(new)}",
        'held=$(head -n 1 "$c" 2>/dev/null)',
        'if [ -z "$held" ]; then cur=$(cat "$p" 2>/dev/null); '
        'first=$(head -n 1 "$u" 2>/dev/null); case "$first" in "golive $key "*) '
        'if [ "$cur" = "$new" ]; then printf "already\\n%s\\n" "$(date -r "$p" +%s.%N)"; exit 0; fi;; esac; '
        f'printf "noclaim:%s\\n" "$(head -n 2 "$u" 2>/dev/null | tail -n 1)"; exit {NO_CLAIM}; fi',
        f'case "$held" in "golive $key "*) ;; *) printf "claimed:%s\\n" "$held"; exit {CLAIMED};; esac',
        't="$p.cutover-$$.tmp"',
        'if cat > "$t" && chmod 644 "$t" && mv -f "$t" "$p"; then :; '
        'else rc=$?; rm -f "$t"; exit $rc; fi',
        f"rkey={quote(rollback_key)}",
        f'{{ printf "%s\\n" "$held"; echo "{record("rollback", "$rkey")}"; }} > "$u.tmp" '
        '&& mv -f "$u.tmp" "$u" && rm -f "$c"',
        'printf "written\\n%s\\n" "$(date -r "$p" +%s.%N)"',
    ])
