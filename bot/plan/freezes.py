"""The ``[freezes]`` table: reminders, and each kind's stages and channels."""

from __future__ import annotations

from datetime import timedelta

from bot.durations import EXPECTED as DURATION_EXPECTED
from bot.durations import parse_duration
from bot.plan.checker import CHANNEL_ID, MISSING, NAME, Checker, did_you_mean
from bot.plan.model import BUILTIN_FREEZE_KINDS, DEFAULT_REMINDERS, FreezeKind, FreezesPlan, Host, Stage


def freezes(c: Checker, data: dict, stages: tuple[Stage, ...], hosts: dict[str, Host]) -> FreezesPlan:
    t = c.table(data, "freezes", "freezes", required=False) or {}
    kinds = {k: FreezeKind(k) for k in BUILTIN_FREEZE_KINDS}
    reminders_raw = t.get("reminders", list(DEFAULT_REMINDERS))
    reminders: list[timedelta] = []
    if not isinstance(reminders_raw, list):
        c.error("freezes.reminders", reminders_raw, "a list of durations such as [\"24h\", \"1h\", \"10m\"]")
    else:
        for i, r in enumerate(reminders_raw):
            try:
                reminders.append(parse_duration(r))
            except ValueError:
                c.error(f"freezes.reminders[{i}]", r, DURATION_EXPECTED)
    stage_names = {s.name for s in stages}
    for name, k in t.items():
        if name == "reminders":
            continue
        key = f"freezes.{name}"
        if not isinstance(k, dict) or not NAME.match(name):
            c.error(key, k, "reminders = [...] or a [freezes.KIND] table with start_stage / end_stage / announce_to")
            continue
        c.only(k, key + ".", {"start_stage", "end_stage", "announce_to", "check", "frozen", "check_host",
                              "check_timeout"})
        check = c.string(k, f"{key}.check", "check", required=False,
                         expected="a read-only command that prints whether the site is frozen, such as "
                                  "`drush maint:get`")
        frozen = c.string(k, f"{key}.frozen", "frozen", required=False,
                          expected="what the check prints while the site is frozen, such as 1")
        if (check is None) != (frozen is None):
            c.error(f"{key}.frozen" if check else f"{key}.check", MISSING,
                    "both `check` and `frozen`: the command, and what it prints while frozen")
        check_host = c.string(k, f"{key}.check_host", "check_host", required=False,
                              expected="the name of a [hosts.*] entry (default: the failover's old server)")
        if check_host is not None and check_host not in hosts:
            c.error(f"{key}.check_host", check_host, "the name of a [hosts.*] entry" + did_you_mean(check_host, hosts))
        check_timeout = c.duration(k, f"{key}.check_timeout", "check_timeout", required=False)
        announce_to = c.string_list(k, f"{key}.announce_to", "announce_to", CHANNEL_ID,
                                    "a list of Slack channel ids such as C0EDITORS", required=False)
        start = c.string(k, f"{key}.start_stage", "start_stage", required=False, expected="a stage name")
        end = c.string(k, f"{key}.end_stage", "end_stage", required=False, expected="a stage name")
        for sub, v in (("start_stage", start), ("end_stage", end)):
            if v is not None and v not in stage_names:
                c.error(f"{key}.{sub}", v, "the name of a stage: " + ", ".join(sorted(stage_names)))
        kinds[name] = FreezeKind(name, start_stage=start, end_stage=end, announce_to=tuple(dict.fromkeys(announce_to)),
                                 check=check, frozen=frozen, check_host=check_host,
                                 **({"check_timeout": check_timeout} if check_timeout else {}))
    return FreezesPlan(reminders=tuple(sorted(reminders, reverse=True)), kinds=kinds)
