"""The plan file read and checked: every problem found at once, each naming the file, the key, the bad value
and what was expected, so that the night before a launch nobody has to fix one typo per restart."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

from bot.plan.checker import MISSING, Checker, PlanError, compiled
from bot.plan.data import data as data_table
from bot.plan.failover import digitalocean, failover
from bot.plan.freezes import freezes as freezes_table
from bot.plan.hosts import hosts as hosts_table
from bot.plan.hosts import ssh_table
from bot.plan.model import Host, Plan
from bot.plan.people import people as people_table
from bot.plan.schedule import schedule as schedule_table
from bot.plan.sites import sites as sites_table
from bot.plan.stages import stages as stages_table

def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; raises PlanError with every problem found."""
    return parse_plan(read_toml(str(path)), str(path))


def partial_plan(path: str | Path) -> tuple[dict[str, Host], bool]:
    """What can be read of a plan that does not validate: its hosts (those whose own tables are right, with the
    ``[ssh]`` defaults) and whether it has a ``[failover]``; empty when the file is not TOML at all. For a check
    that lists the key files' problems together with the plan's."""
    try:
        data = read_toml(str(path))
    except PlanError:
        return {}, False
    c = Checker(str(path))
    defaults, _ = ssh_table(c, data)
    return hosts_table(c, data, defaults), "failover" in data


def read_toml(path: str) -> dict:
    """The plan file's TOML as data; PlanError naming the file when it is missing, unreadable or not TOML."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise PlanError(path, [f"{path}: file not found; expected a TOML plan file "
                                "(set CUTOVER_PLAN or pass its path)"]) from None
    except OSError as exc:
        raise PlanError(path, [f"{path}: cannot be read ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PlanError(path, [f"{path}: not UTF-8 text; expected a TOML plan file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(path, [f"{path}: not valid TOML: {exc}"]) from None
    return data


def parse_plan(data: dict, path: str = "<plan>") -> Plan:
    c = Checker(path)
    c.only(data, "", {"slack", "hosts", "stages", "failover", "digitalocean", "freezes", "redact", "schedule", "data",
                      "sites", "ssh"})

    people = people_table(c, data)
    ssh_defaults, keep_runs = ssh_table(c, data)
    hosts = hosts_table(c, data, ssh_defaults)
    stages = stages_table(c, data, hosts)
    switch = failover(c, data, hosts)
    droplets = digitalocean(c, data)
    freezes = freezes_table(c, data, stages, hosts)
    schedule = schedule_table(c, data)
    window = data_table(c, data, hosts, stages, freezes, switch)
    site = sites_table(c, data, hosts, switch)
    redact = tuple(p for p in (
        compiled(c, f"redact[{i}]", v) for i, v in enumerate(
            c.string_list(data, "redact", "redact", expected="a list of regular expressions", required=False))
    ) if p is not None)

    if "failover" in data and "digitalocean" not in data:
        c.errors.append(f"{path}: [failover] needs a [digitalocean] table too (old_droplet, new_droplet): a go-live "
                        "confirms the switch with DigitalOcean")
    if switch and switch.require_freezes:
        for i, kind in enumerate(switch.require_freezes):
            if freezes and kind not in freezes.kinds:
                c.error(f"failover.require_freezes[{i}]", kind,
                        "a freeze kind: " + ", ".join(sorted(freezes.kinds)))

    for kind in freezes.kinds.values():
        if kind.check is not None and kind.check_host is None:
            if switch is None:
                c.error(f"freezes.{kind.name}.check_host", MISSING, "the host the check runs on (with no [failover], "
                                                                 "there is no old server to default to)")
            else:
                freezes.kinds[kind.name] = replace(kind, check_host=switch.old)
    for watch in window.watches:
        if watch.salvage and watch.salvage_step in {s.name for s in stages}:
            c.error("data.watches", watch.name, f"a watch name whose salvage step (`{watch.salvage_step}`) is no "
                                                "stage's name")

    if c.errors:
        raise PlanError(path, c.errors)
    assert people is not None and freezes is not None
    return Plan(path=path, people=people, hosts=hosts, stages=stages, failover=switch,
                digitalocean=droplets, freezes=freezes, redact=redact, schedule=schedule, data=window,
                sites=site, keep_runs=keep_runs)
