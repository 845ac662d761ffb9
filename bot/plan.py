"""The plan file: hosts, stages, failover, people and freezes, validated all at once.

A plan with mistakes is reported in one go, each error naming the file, the key,
the bad value and what was expected, so that the night before a launch nobody
has to fix one typo per restart.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from bot.durations import EXPECTED as DURATION_EXPECTED
from bot.durations import parse_duration
from bot.when import WhenError, parse_when

DEFAULT_REMINDERS = ("24h", "1h", "10m")
BUILTIN_FREEZE_KINDS = ("content", "registration")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
_EMOJI = re.compile(r"^[a-z0-9_+\-']+$")


class PlanError(Exception):
    """Every problem found in a plan file, each a complete sentence."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: {len(errors)} problem(s)\n" + "\n".join(errors))


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str
    port: int = 22
    key_file: str | None = None
    known_hosts: str | None = None
    jump: str | None = None
    health_file: str | None = None
    vrrp_state_file: str | None = None
    keepalived_conf: str | None = None
    private_address: str | None = None  # where keepalived speaks VRRP (unicast), for `cutover keepalived`
    track_file: str | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    host: str
    command: str
    workdir: str | None = None
    timeout: timedelta | None = None
    progress: re.Pattern[str] | None = None
    notable: re.Pattern[str] | None = None
    depends_on: tuple[str, ...] = ()
    required: bool = True
    owner: str | None = None  # a person's step: the Slack user who does it, by hand
    instructions: str | None = None  # what they do; a step has these or a command, never both
    planned: timedelta | None = None  # how long the step should take, for the night's timetable

    @property
    def manual(self) -> bool:
        """A person's step (owner and instructions), not a command on a host."""
        return self.owner is not None


@dataclass(frozen=True)
class FailoverPlan:
    floating_ip: str
    old: str
    new: str
    health_file: str
    healthy: str
    unhealthy: str
    probe_url: str
    new_marker: str
    verify_timeout: timedelta
    old_marker: str | None = None
    interface: str | None = None
    require_freezes: tuple[str, ...] = ()
    rollback_approvals: int = 1
    vip: str = ""
    new_probe_url: str = ""
    old_probe_url: str = ""
    vrrp_state_file: str | None = None  # written by a keepalived notify script: MASTER, BACKUP, FAULT
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    track_file: str | None = None  # keepalived's vrrp_track_file: the bot writes 1 with the flip, 0 with a rollback


@dataclass(frozen=True)
class DigitalOcean:
    old_droplet: int
    new_droplet: int


# Slack names some emoji by an alias in its events and answers, whatever the plan calls them.
REACTION_ALIASES = {"thumbsup": "+1", "thumbsdown": "-1"}


def reaction_base(name: str) -> str:
    """A reaction as one emoji: without its skin tone (Slack sends ``+1::skin-tone-2`` for a person whose default
    tone is set, every time) and by Slack's own name for it."""
    base = name.strip(":").split("::", 1)[0]
    return REACTION_ALIASES.get(base, base)


@dataclass(frozen=True)
class People:
    channel: str
    operators: tuple[str, ...]
    approvers: tuple[str, ...]
    required_approvals: int
    approval_reaction: str
    approval_ttl: timedelta

    def approves(self, reaction: str) -> bool:
        """Whether ``reaction`` (as Slack names it, a skin tone and all) is the plan's approval reaction."""
        return reaction_base(reaction) == reaction_base(self.approval_reaction)


@dataclass(frozen=True)
class FreezeKind:
    name: str
    start_stage: str | None = None
    end_stage: str | None = None
    announce_to: tuple[str, ...] = ()  # more channels that hear the announcement, reminders, start and end


@dataclass(frozen=True)
class FreezesPlan:
    reminders: tuple[timedelta, ...]
    kinds: dict[str, FreezeKind]


@dataclass(frozen=True)
class Schedule:
    """The night's timetable: when it starts, and how many steps ``run all`` runs side by side."""

    start: datetime | None = None
    max_parallel: int = 1


@dataclass(frozen=True)
class Plan:
    path: str
    people: People
    hosts: dict[str, Host]
    stages: tuple[Stage, ...]
    failover: FailoverPlan | None
    digitalocean: DigitalOcean | None
    freezes: FreezesPlan
    redact: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    schedule: Schedule = Schedule()

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def waits_for(self) -> dict[str, tuple[str, ...]]:
        """What each step waits for: its dependencies, and with one at a time also the step before it."""
        out = {}
        for i, stage in enumerate(self.stages):
            before = (self.stages[i - 1].name,) if self.schedule.max_parallel == 1 and i else ()
            out[stage.name] = tuple(dict.fromkeys(stage.depends_on + before))
        return out

    def vrrp_state_file(self, host: str) -> str | None:
        """Where keepalived's notify script on ``host`` writes its VRRP state, if the plan says."""
        assert self.failover is not None
        return self.hosts[host].vrrp_state_file or self.failover.vrrp_state_file

    def track_file(self, host: str) -> str | None:
        """The file keepalived watches (inotify) on ``host`` for an instant flip, if the plan has one."""
        assert self.failover is not None
        return self.hosts[host].track_file or self.failover.track_file

    def keepalived_conf(self, host: str) -> str:
        """keepalived's configuration file on ``host``: its own, or the failover default."""
        assert self.failover is not None
        return self.hosts[host].keepalived_conf or self.failover.keepalived_conf

    def health_file(self, host: str) -> str:
        """The health file keepalived's check reads on ``host``: its own, or the failover default."""
        assert self.failover is not None
        return self.hosts[host].health_file or self.failover.health_file

    def is_operator(self, user: str) -> bool:
        return user in self.people.operators

    def is_approver(self, user: str) -> bool:
        return user in self.people.approvers


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for a near miss among ``choices``; empty when nothing is close."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


class _Checker:
    """Collects errors while reading typed values out of nested TOML tables."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []

    def error(self, key: str, value: Any, expected: str) -> None:
        shown = "missing" if value is _MISSING else f"got {value!r}"
        self.errors.append(f"{self.path}: {key}: {shown}; expected {expected}")

    def table(self, data: dict, key: str, name: str, required: bool = True) -> dict | None:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.error(key, value, "a table")
            return None
        if not isinstance(value, dict):
            self.error(key, value, "a table")
            return None
        return value

    def only(self, data: dict, prefix: str, allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                self.errors.append(
                    f"{self.path}: {prefix}{name}: unknown key{did_you_mean(name, allowed)}; expected one of "
                    + ", ".join(sorted(allowed))
                )

    def string(self, data: dict, key: str, name: str, required: bool = True,
               pattern: re.Pattern[str] | None = None, expected: str = "a non-empty string") -> str | None:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.error(key, value, expected)
            return None
        if not isinstance(value, str) or not value.strip() or (pattern and not pattern.match(value)):
            self.error(key, value, expected)
            return None
        return value

    def integer(self, data: dict, key: str, name: str, required: bool = True, default: int | None = None,
                low: int | None = None, high: int | None = None) -> int | None:
        value = data.get(name, _MISSING)
        expected = "a whole number" + (
            f" from {low} to {high}" if low is not None and high is not None
            else f" of at least {low}" if low is not None else "")
        if value is _MISSING:
            if required:
                self.error(key, value, expected)
            return default
        if isinstance(value, bool) or not isinstance(value, int) or \
                (low is not None and value < low) or (high is not None and value > high):
            self.error(key, value, expected)
            return default
        return value

    def duration(self, data: dict, key: str, name: str, required: bool = True) -> timedelta | None:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.error(key, value, DURATION_EXPECTED)
            return None
        try:
            return parse_duration(value)
        except ValueError:
            self.error(key, value, DURATION_EXPECTED)
            return None

    def string_list(self, data: dict, key: str, name: str, pattern: re.Pattern[str] | None = None,
                    expected: str = "a list of strings", required: bool = True) -> tuple[str, ...]:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.error(key, value, expected)
            return ()
        if not isinstance(value, list):
            self.error(key, value, expected)
            return ()
        good = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern and not pattern.match(item)):
                self.error(f"{key}[{i}]", item, expected)
            else:
                good.append(item)
        return tuple(good)

    def regex(self, data: dict, key: str, name: str) -> re.Pattern[str] | None:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.error(key, value, "a regular expression string")
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.error(key, value, f"a valid regular expression ({exc})")
            return None


_MISSING = object()


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; raises PlanError with every problem found."""
    path = str(path)
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
    return parse_plan(data, path)


def parse_plan(data: dict, path: str = "<plan>") -> Plan:
    c = _Checker(path)
    c.only(data, "", {"slack", "hosts", "stages", "failover", "digitalocean", "freezes", "redact", "schedule"})

    people = _people(c, data)
    hosts = _hosts(c, data)
    stages = _stages(c, data, hosts)
    failover = _failover(c, data, hosts)
    digitalocean = _digitalocean(c, data)
    freezes = _freezes(c, data, stages)
    schedule = _schedule(c, data)
    redact = tuple(p for p in (
        _compile(c, f"redact[{i}]", v) for i, v in enumerate(
            c.string_list(data, "redact", "redact", expected="a list of regular expressions", required=False))
    ) if p is not None)

    if "failover" in data and "digitalocean" not in data:
        c.errors.append(f"{path}: [failover] needs a [digitalocean] table too (old_droplet, new_droplet): a go-live "
                        "confirms the switch with DigitalOcean")
    if failover and failover.require_freezes:
        for i, kind in enumerate(failover.require_freezes):
            if freezes and kind not in freezes.kinds:
                c.error(f"failover.require_freezes[{i}]", kind,
                        "a freeze kind: " + ", ".join(sorted(freezes.kinds)))

    if c.errors:
        raise PlanError(path, c.errors)
    assert people is not None and freezes is not None
    return Plan(path=path, people=people, hosts=hosts, stages=stages, failover=failover,
                digitalocean=digitalocean, freezes=freezes, redact=redact, schedule=schedule)


def _compile(c: _Checker, key: str, value: str) -> re.Pattern[str] | None:
    try:
        return re.compile(value)
    except re.error as exc:
        c.error(key, value, f"a valid regular expression ({exc})")
        return None


def _people(c: _Checker, data: dict) -> People | None:
    t = c.table(data, "slack", "slack")
    if t is None:
        return None
    c.only(t, "slack.", {"channel", "operators", "approvers", "required_approvals",
                         "approval_reaction", "approval_ttl"})
    channel = c.string(t, "slack.channel", "channel", pattern=_CHANNEL_ID,
                       expected="a Slack channel id such as C0LAUNCH")
    user_expected = "a list of Slack user ids such as U0ALICE"
    operators = c.string_list(t, "slack.operators", "operators", _USER_ID, user_expected)
    approvers = c.string_list(t, "slack.approvers", "approvers", _USER_ID, user_expected)
    required = c.integer(t, "slack.required_approvals", "required_approvals", required=False,
                         default=2, low=1, high=10)
    if required is not None and approvers and required > len(approvers):
        c.error("slack.required_approvals", required,
                f"at most the number of approvers ({len(approvers)})")
    elif required is not None and approvers and required == len(approvers) and set(approvers) & set(operators):
        c.error("slack.required_approvals", required,
                f"at most {len(approvers) - 1}: an operator who is also an approver cannot approve their own "
                "go-live, so a request by them could never be approved (or add another approver)")
    reaction = c.string(t, "slack.approval_reaction", "approval_reaction", required=False,
                        pattern=_EMOJI, expected="an emoji name without colons, such as white_check_mark")
    ttl = c.duration(t, "slack.approval_ttl", "approval_ttl", required=False)
    if channel is None:
        return None
    return People(channel=channel, operators=operators, approvers=approvers,
                  required_approvals=required or 2,
                  approval_reaction=reaction or "white_check_mark",
                  approval_ttl=ttl or timedelta(minutes=15))


def _hosts(c: _Checker, data: dict) -> dict[str, Host]:
    t = c.table(data, "hosts", "hosts")
    if t is None:
        return {}
    hosts: dict[str, Host] = {}
    for name, h in t.items():
        key = f"hosts.{name}"
        if not _NAME.match(name):
            c.error(key, name, "a host name of lowercase letters, digits, - or _")
            continue
        if not isinstance(h, dict):
            c.error(key, h, "a table")
            continue
        c.only(h, key + ".", {"address", "user", "port", "key_file", "known_hosts", "jump", "health_file",
                              "vrrp_state_file", "keepalived_conf", "private_address", "track_file"})
        address = c.string(h, f"{key}.address", "address", expected="a host name or IP address")
        user = c.string(h, f"{key}.user", "user", expected="a login name")
        port = c.integer(h, f"{key}.port", "port", required=False, default=22, low=1, high=65535)
        key_file = c.string(h, f"{key}.key_file", "key_file", required=False, expected="a path to a private key")
        known = c.string(h, f"{key}.known_hosts", "known_hosts", required=False,
                         expected="a path to a known_hosts file")
        jump = c.string(h, f"{key}.jump", "jump", required=False, expected="the name of another [hosts.*] entry")
        health = c.string(h, f"{key}.health_file", "health_file", required=False, expected="an absolute path")
        if health is not None and not health.startswith("/"):
            c.error(f"{key}.health_file", health, "an absolute path")
        if address and user:
            hosts[name] = Host(name=name, address=address, user=user, port=port or 22,
                               key_file=key_file, known_hosts=known, jump=jump, health_file=health,
                               vrrp_state_file=_absolute(c, h, key, "vrrp_state_file"),
                               keepalived_conf=_absolute(c, h, key, "keepalived_conf"),
                               track_file=_absolute(c, h, key, "track_file"),
                               private_address=_ipv4(c, h, "private_address", required=False, table=key))
    for name, h in hosts.items():
        if h.jump is not None and h.jump not in t:
            c.error(f"hosts.{name}.jump", h.jump, "the name of another [hosts.*] entry"
                    + did_you_mean(h.jump, t) + ": " + ", ".join(sorted(t)))
        seen, cur = {name}, h
        while cur.jump is not None and cur.jump in hosts:
            if cur.jump in seen:
                c.error(f"hosts.{name}.jump", h.jump, "a chain of jump hosts without a loop")
                break
            seen.add(cur.jump)
            cur = hosts[cur.jump]
    return hosts


def _stages(c: _Checker, data: dict, hosts: dict[str, Host]) -> tuple[Stage, ...]:
    value = data.get("stages", [])
    if not isinstance(value, list):
        c.error("stages", value, "an array of tables ([[stages]])")
        return ()
    stages: list[Stage] = []
    names: set[str] = set()
    for i, s in enumerate(value):
        key = f"stages[{i}]"
        if not isinstance(s, dict):
            c.error(key, s, "a table")
            continue
        before = len(c.errors)
        label = s.get("name") if isinstance(s.get("name"), str) else None
        c.only(s, key + ".", {"name", "host", "command", "workdir", "timeout", "progress", "notable",
                              "depends_on", "required", "owner", "instructions", "planned"})
        name = c.string(s, f"{key}.name", "name", pattern=_NAME,
                        expected="a stage name of lowercase letters, digits, - or _")
        if name in names:
            c.error(f"{key}.name", name, "a name no other stage has")
        manual = "owner" in s or "instructions" in s
        owner = instructions = None
        if manual:  # a person's step: who does it and what, no host and no command
            owner = c.string(s, f"{key}.owner", "owner", pattern=_USER_ID,
                             expected="the Slack user id of the person who does this step, such as U0ALICE")
            instructions = c.string(s, f"{key}.instructions", "instructions",
                                    expected="what the owner is to do, in a sentence or two")
            for other in ("host", "command", "workdir", "timeout", "progress", "notable"):
                if other in s:
                    c.error(f"{key}.{other}", s[other], "nothing: a step with an owner and instructions is done by "
                            "a person; give a host and a command instead for one the bot runs")
            host = command = None
        else:
            host = c.string(s, f"{key}.host", "host", expected="the name of a [hosts.*] entry")
            if host is not None and host not in (data.get("hosts") or {}):
                c.error(f"{key}.host", host, "the name of a [hosts.*] entry" + did_you_mean(host, hosts) + ": "
                        + ", ".join(sorted(hosts)))
            command = c.string(s, f"{key}.command", "command",
                               expected="the command to run on the host (or owner and instructions for a "
                                        "person's step)")
        planned = c.duration(s, f"{key}.planned", "planned", required=False)
        workdir = c.string(s, f"{key}.workdir", "workdir", required=False, expected="an absolute directory")
        if workdir is not None and not workdir.startswith(("/", "~")):
            c.error(f"{key}.workdir", workdir, "an absolute directory (starting with / or ~)")
        timeout = c.duration(s, f"{key}.timeout", "timeout", required=False)
        progress = c.regex(s, f"{key}.progress", "progress")
        if progress is not None:
            groups = set(progress.groupindex)
            if not ({"done", "total"} <= groups or "percent" in groups):
                c.error(f"{key}.progress", progress.pattern,
                        "a regular expression with named groups (?P<done>…) and (?P<total>…), or (?P<percent>…)")
        notable = c.regex(s, f"{key}.notable", "notable")
        depends = c.string_list(s, f"{key}.depends_on", "depends_on", expected="a list of earlier stage names",
                                required=False)
        for j, dep in enumerate(depends):
            if dep not in names:
                c.error(f"{key}.depends_on[{j}]", dep,
                        "the name of a stage defined before this one" + did_you_mean(dep, names)
                        + (": " + ", ".join(sorted(names)) if names else " (none is)"))
        required = s.get("required", True)
        if not isinstance(required, bool):
            c.error(f"{key}.required", required, "true or false")
            required = True
        if label:  # errors name the stage too, not only its place in the list
            c.errors[before:] = [e.replace(f": {key}", f": {key} (`{label}`)", 1) for e in c.errors[before:]]
        if name is not None:
            names.add(name)
        if manual and name and owner and instructions:
            stages.append(Stage(name=name, host="", command="", depends_on=depends, required=required,
                                owner=owner, instructions=instructions, planned=planned))
        elif not manual and name and host and command:
            stages.append(Stage(name=name, host=host, command=command, workdir=workdir, timeout=timeout,
                                progress=progress, notable=notable, depends_on=depends, required=required,
                                planned=planned))
    return tuple(stages)


def _failover(c: _Checker, data: dict, hosts: dict[str, Host]) -> FailoverPlan | None:
    t = c.table(data, "failover", "failover", required=False)
    if t is None:
        return None
    c.only(t, "failover.", {"floating_ip", "vip", "old", "new", "health_file", "healthy", "unhealthy",
                            "probe_url", "new_probe_url", "old_probe_url", "new_marker", "old_marker",
                            "verify_timeout", "interface", "require_freezes", "rollback_approvals",
                            "vrrp_state_file", "keepalived_conf", "track_file"})
    ip = _ipv4(c, t, "floating_ip", required=True)
    vip = _ipv4(c, t, "vip", required=False)
    names = ", ".join(sorted(data.get("hosts") or {}))
    old = c.string(t, "failover.old", "old", expected="the name of a [hosts.*] entry")
    new = c.string(t, "failover.new", "new", expected="the name of a [hosts.*] entry")
    for k, v in (("old", old), ("new", new)):
        if v is not None and v not in (data.get("hosts") or {}):
            c.error(f"failover.{k}", v, "the name of a [hosts.*] entry"
                    + did_you_mean(v, data.get("hosts") or {}) + ": " + names)
    if old is not None and old == new:
        c.error("failover.new", new, "a different host from failover.old")
    health_file = c.string(t, "failover.health_file", "health_file", expected="an absolute path")
    if health_file is not None and not health_file.startswith("/"):
        c.error("failover.health_file", health_file, "an absolute path")
    healthy = c.string(t, "failover.healthy", "healthy", required=False)
    unhealthy = c.string(t, "failover.unhealthy", "unhealthy", required=False)
    if (healthy or "true") == (unhealthy or "false"):
        c.error("failover.unhealthy", unhealthy, "a value different from failover.healthy")
    probe = _url(c, t, "probe_url", required=True)
    new_probe = _url(c, t, "new_probe_url", required=False)
    old_probe = _url(c, t, "old_probe_url", required=False)
    marker = c.string(t, "failover.new_marker", "new_marker",
                      expected="text that only the new server's probe answer contains")
    old_marker = c.string(t, "failover.old_marker", "old_marker", required=False)
    verify = c.duration(t, "failover.verify_timeout", "verify_timeout", required=False)
    interface = c.string(t, "failover.interface", "interface", required=False, expected="a network interface name")
    require = c.string_list(t, "failover.require_freezes", "require_freezes", required=False,
                            expected="a list of freeze kinds")
    rollback = c.integer(t, "failover.rollback_approvals", "rollback_approvals", required=False, default=1,
                         low=0, high=10)
    vrrp_state = _absolute(c, t, "failover", "vrrp_state_file")
    keepalived_conf = _absolute(c, t, "failover", "keepalived_conf")
    track_file = _absolute(c, t, "failover", "track_file")
    if None in (ip, old, new, health_file, probe, marker) or old not in hosts or new not in hosts:
        return None
    return FailoverPlan(floating_ip=ip, old=old, new=new, health_file=health_file, healthy=healthy or "true",
                    unhealthy=unhealthy or "false", probe_url=probe, new_marker=marker,
                    verify_timeout=verify or timedelta(seconds=60), old_marker=old_marker,
                    interface=interface, require_freezes=require, rollback_approvals=rollback,
                    vip=vip or ip, new_probe_url=new_probe or _on_host(probe, hosts[new].address),
                    old_probe_url=old_probe or _on_host(probe, hosts[old].address),
                    vrrp_state_file=vrrp_state,
                    keepalived_conf=keepalived_conf or FailoverPlan.keepalived_conf, track_file=track_file)


def _absolute(c: _Checker, t: dict, table: str, name: str) -> str | None:
    value = c.string(t, f"{table}.{name}", name, required=False, expected="an absolute path")
    if value is not None and not value.startswith("/"):
        c.error(f"{table}.{name}", value, "an absolute path")
        return None
    return value


def _ipv4(c: _Checker, t: dict, name: str, required: bool, table: str = "failover") -> str | None:
    value = c.string(t, f"{table}.{name}", name, required=required, expected="an IPv4 address")
    if value is None:
        return None
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        c.error(f"{table}.{name}", value, "an IPv4 address")
        return None
    return value


def _url(c: _Checker, t: dict, name: str, required: bool) -> str | None:
    value = c.string(t, f"failover.{name}", name, required=required, expected="an http:// or https:// URL")
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        c.error(f"failover.{name}", value, "an http:// or https:// URL")
        return None
    return value


def _on_host(url: str, address: str) -> str:
    """The probe URL aimed at one server's own address instead of the floating IP."""
    parsed = urlparse(url)
    netloc = address + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


def _digitalocean(c: _Checker, data: dict) -> DigitalOcean | None:
    t = c.table(data, "digitalocean", "digitalocean", required=False)
    if t is None:
        return None
    c.only(t, "digitalocean.", {"old_droplet", "new_droplet"})
    old = c.integer(t, "digitalocean.old_droplet", "old_droplet", low=1)
    new = c.integer(t, "digitalocean.new_droplet", "new_droplet", low=1)
    if old is not None and old == new:
        c.error("digitalocean.new_droplet", new, "a different droplet from digitalocean.old_droplet")
    if old is None or new is None:
        return None
    return DigitalOcean(old_droplet=old, new_droplet=new)


def _freezes(c: _Checker, data: dict, stages: tuple[Stage, ...]) -> FreezesPlan:
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
        if not isinstance(k, dict) or not _NAME.match(name):
            c.error(key, k, "reminders = [...] or a [freezes.KIND] table with start_stage / end_stage / announce_to")
            continue
        c.only(k, key + ".", {"start_stage", "end_stage", "announce_to"})
        announce_to = c.string_list(k, f"{key}.announce_to", "announce_to", _CHANNEL_ID,
                                    "a list of Slack channel ids such as C0EDITORS", required=False)
        start = c.string(k, f"{key}.start_stage", "start_stage", required=False, expected="a stage name")
        end = c.string(k, f"{key}.end_stage", "end_stage", required=False, expected="a stage name")
        for sub, v in (("start_stage", start), ("end_stage", end)):
            if v is not None and v not in stage_names:
                c.error(f"{key}.{sub}", v, "the name of a stage: " + ", ".join(sorted(stage_names)))
        kinds[name] = FreezeKind(name, start_stage=start, end_stage=end,
                                 announce_to=tuple(dict.fromkeys(announce_to)))
    return FreezesPlan(reminders=tuple(sorted(reminders, reverse=True)), kinds=kinds)


def _schedule(c: _Checker, data: dict) -> Schedule:
    t = c.table(data, "schedule", "schedule", required=False)
    if t is None:
        return Schedule()
    c.only(t, "schedule.", {"start", "max_parallel"})
    max_parallel = c.integer(t, "schedule.max_parallel", "max_parallel", required=False, default=1, low=1, high=16)
    start = t.get("start")
    expected = ("the night's start as a date, time and zone, such as 2026-12-01T18:00Z or "
                "\"2026-12-01 18:00 Europe/Berlin\"")
    if start is None:
        return Schedule(max_parallel=max_parallel or 1)
    if isinstance(start, datetime):  # a TOML date-time: it must say its zone
        if start.tzinfo is None:
            c.error("schedule.start", start.isoformat(), expected + " (this one has no zone)")
            start = None
    elif isinstance(start, str) and not start.strip().lower().startswith("in "):
        try:
            start = parse_when(start, datetime.now(timezone.utc))
        except WhenError as exc:
            c.error("schedule.start", start, f"{expected} ({exc})")
            start = None
    else:
        c.error("schedule.start", start, expected + " (a time relative to now means nothing in a plan file)")
        start = None
    return Schedule(start=start.astimezone(timezone.utc) if start else None, max_parallel=max_parallel or 1)
