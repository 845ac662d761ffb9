"""The ``[data]`` table: when the old server's data was copied, the watches that count what it took since, and
the command that makes it forward to the new server at the flip."""

from __future__ import annotations

from datetime import datetime

from bot.plan.checker import MISSING, NAME, Checker, did_you_mean
from bot.plan.model import ACCEPTED, MUST_BE_ZERO, DataPlan, FailoverPlan, FreezesPlan, Host, Stage, Watch
from bot.when import WhenError, parse_when

LOSSES = (ACCEPTED, MUST_BE_ZERO)


def data(c: Checker, raw: dict, hosts: dict[str, Host], stages: tuple[Stage, ...], freezes: FreezesPlan | None,
         failover: FailoverPlan | None) -> DataPlan:
    t = c.table(raw, "data", "data", required=False)
    if t is None:
        return DataPlan()
    c.only(t, "data.", {"copy_stage", "copied_at", "watches", "show_ids", "forward", "unforward", "forward_host",
                        "forward_timeout"})
    copy_stage = c.string(t, "data.copy_stage", "copy_stage", required=False, expected="the name of a stage")
    by_name = {s.name: s for s in stages}
    if copy_stage is not None:
        stage = by_name.get(copy_stage)
        if stage is None:
            c.error("data.copy_stage", copy_stage, "the name of a stage" + did_you_mean(copy_stage, by_name)
                    + (": " + ", ".join(sorted(by_name)) if by_name else " (the plan has none)"))
        elif stage.manual:
            c.error("data.copy_stage", copy_stage, "a stage the bot runs on a host (its start, by that host's "
                                                   "clock, is the moment of the copy), not a person's step")
    copied_at = _moment(c, t)
    watches = _watches(c, t, hosts, freezes)
    if watches and copy_stage is None and copied_at is None:
        c.error("data.copy_stage", MISSING, "the stage that copies the old server's data (its start is the moment the "
                                         "watches count from), or `copied_at`")
    if copy_stage is not None and copied_at is not None:
        c.error("data.copied_at", t["copied_at"], "nothing beside `copy_stage`: one moment of the copy")
    show_ids = c.integer(t, "data.show_ids", "show_ids", required=False, default=200, low=1, high=1000)
    forward = c.string(t, "data.forward", "forward", required=False,
                       expected="the command, run on the old server at the flip, that makes it forward every request "
                                "to the new server")
    unforward = c.string(t, "data.unforward", "unforward", required=False,
                         expected="the command, run on the old server with a rollback, that undoes `forward`")
    if (forward is None) != (unforward is None):
        c.error("data.unforward" if forward else "data.forward", MISSING,
                "both `forward` and `unforward`: a rollback must be able to undo the forwarding")
    if forward is not None and failover is None:
        c.error("data.forward", forward, "a [failover] table: forwarding happens at the flip")
    forward_host = c.string(t, "data.forward_host", "forward_host", required=False,
                            expected="the name of a [hosts.*] entry")
    if forward_host is not None and forward_host not in hosts:
        c.error("data.forward_host", forward_host, "the name of a [hosts.*] entry" + did_you_mean(forward_host, hosts))
    forward_timeout = c.duration(t, "data.forward_timeout", "forward_timeout", required=False)
    return DataPlan(watches=watches, copy_stage=copy_stage, copied_at=copied_at, show_ids=show_ids or 200,
                    forward=forward, unforward=unforward,
                    forward_host=forward_host or (failover.old if failover else None),
                    **({"forward_timeout": forward_timeout} if forward_timeout else {}))


def _moment(c: Checker, t: dict) -> datetime | None:
    value = t.get("copied_at")
    if value is None:
        return None
    expected = "the moment the data was copied, with its zone, such as 2026-12-01T20:05Z"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            c.error("data.copied_at", value.isoformat(), expected + " (this one has no zone)")
            return None
        return value
    if isinstance(value, str) and not value.strip().lower().startswith("in "):
        try:
            return parse_when(value, datetime.now().astimezone())
        except WhenError as exc:
            c.error("data.copied_at", value, f"{expected} ({exc})")
            return None
    c.error("data.copied_at", value, expected)
    return None


def _watches(c: Checker, t: dict, hosts: dict[str, Host], freezes: FreezesPlan | None) -> tuple[Watch, ...]:
    value = t.get("watches", [])
    if not isinstance(value, list):
        c.error("data.watches", value, "an array of tables ([[data.watches]])")
        return ()
    watches: list[Watch] = []
    names: set[str] = set()
    for i, w in enumerate(value):
        key = f"data.watches[{i}]"
        if not isinstance(w, dict):
            c.error(key, w, "a table")
            continue
        before = len(c.errors)
        c.only(w, key + ".", {"name", "host", "command", "losses", "label", "timeout", "freeze", "salvage",
                              "salvage_host"})
        name = c.string(w, f"{key}.name", "name", pattern=NAME,
                        expected="a watch name of lowercase letters, digits, - or _")
        if name in names:
            c.error(f"{key}.name", name, "a name no other watch has")
        host = c.string(w, f"{key}.host", "host", expected="the name of a [hosts.*] entry (usually the old server)")
        if host is not None and host not in hosts:
            c.error(f"{key}.host", host, "the name of a [hosts.*] entry" + did_you_mean(host, hosts))
        command = c.string(w, f"{key}.command", "command",
                           expected="a read-only command that prints the count of rows written since "
                                    "$CUTOVER_SINCE, then one row per line")
        losses = c.string(w, f"{key}.losses", "losses", expected=f"`{ACCEPTED}` or `{MUST_BE_ZERO}`")
        if losses is not None and losses not in LOSSES:
            c.error(f"{key}.losses", losses, f"`{ACCEPTED}` (the plan accepts losing them) or `{MUST_BE_ZERO}` (any "
                                             "refuses the go-live)" + did_you_mean(losses, LOSSES))
        label = c.string(w, f"{key}.label", "label", required=False, expected="what a row is, such as sessions")
        timeout = c.duration(w, f"{key}.timeout", "timeout", required=False)
        freeze = c.string(w, f"{key}.freeze", "freeze", required=False, expected="a freeze kind")
        if freeze is not None and freezes is not None and freeze not in freezes.kinds:
            c.error(f"{key}.freeze", freeze, "a freeze kind: " + ", ".join(sorted(freezes.kinds)))
        salvage = c.string(w, f"{key}.salvage", "salvage", required=False,
                           expected="a command that saves the window's rows ($CUTOVER_SINCE to $CUTOVER_UNTIL)")
        salvage_host = c.string(w, f"{key}.salvage_host", "salvage_host", required=False,
                                expected="the name of a [hosts.*] entry")
        if salvage_host is not None and salvage_host not in hosts:
            c.error(f"{key}.salvage_host", salvage_host, "the name of a [hosts.*] entry" + did_you_mean(salvage_host, hosts))
        label_of = w.get("name") if isinstance(w.get("name"), str) else None
        if label_of:
            c.errors[before:] = [e.replace(f": {key}", f": {key} (`{label_of}`)", 1) for e in c.errors[before:]]
        if name is not None:
            names.add(name)
        if name and host and command and losses in LOSSES:
            watches.append(Watch(name=name, host=host, command=command, losses=losses, freeze=freeze,
                                 label=label or name.replace("-", " ").replace("_", " "), salvage=salvage,
                                 salvage_host=salvage_host, **({"timeout": timeout} if timeout else {})))
    return tuple(watches)
