"""The plan as the bot uses it: hosts, stages, failover, people, freezes and the night's schedule, as typed
values. Built by ``bot.plan.load`` from a plan file, checked all at once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DEFAULT_REMINDERS = ("24h", "1h", "10m")
BUILTIN_FREEZE_KINDS = ("content", "registration")


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
    interface: str | None = None  # the interface holding private_address: keepalived's VRRP interface
    metadata_url: str = "http://169.254.169.254/metadata/v1"  # the droplet's own metadata service, from itself


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
    vip: str | None = None  # keepalived's private address; None: keepalived moves only the reserved IP (DigitalOcean's
    # own wiring: VRRP on the private interface, the notify script assigns the IP through the API)
    new_probe_url: str = ""
    old_probe_url: str = ""
    vrrp_state_file: str | None = None  # written by a keepalived notify script: MASTER, BACKUP, FAULT
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    track_file: str | None = None  # keepalived's vrrp_track_file: the bot writes 1 with the flip, 0 with a rollback


PATHS = ("old", "new", "reserved_ip", "vip")  # where a site is probed: each server's own address, and the two moving
PATH_WORDS = {"old": "old", "new": "new", "reserved_ip": "reserved IP", "vip": "VIP"}


@dataclass(frozen=True)
class Site:
    """One hostname of the site, probed on each server by its name (SNI and Host)."""

    name: str
    path: str  # what is asked for: the health path unless the plan says
    marker: str | None = None  # text this site's answer must contain, beside the server's marker


@dataclass(frozen=True)
class SitesPlan:
    """The site's hostnames and how to reach them on each path: pinned probes, as strict as a browser."""

    sites: tuple[Site, ...] = ()
    list_command: str | None = None  # prints more hostnames, one per line (e.g. `drush domain:list`)
    list_host: str | None = None
    scheme: str = "https"
    path: str = "/"
    ca_file: str | None = None  # a private CA's certificates; else the system's
    cert_min_days: int = 7
    default_marker: str | None = None  # what the default site answers with: for a named site, a refusal
    connect: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (address, port) probes connect to
    timeout: timedelta = timedelta(seconds=3)

    @property
    def listed(self) -> bool:
        return bool(self.sites) or self.list_command is not None

    def paths(self) -> tuple[str, ...]:
        """The paths probed: each server's own address, the reserved IP, and the VIP when the plan reaches it."""
        return tuple(p for p in PATHS if p in self.connect)


@dataclass(frozen=True)
class DigitalOcean:
    old_droplet: int
    new_droplet: int
    metadata: bool = True  # each droplet's own metadata service witnesses where the reserved IP is


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
    check: str | None = None  # a read-only command that says whether the site is frozen (drush maint:get)
    frozen: str | None = None  # what ``check`` prints while it is
    check_host: str | None = None  # where ``check`` runs
    check_timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class FreezesPlan:
    reminders: tuple[timedelta, ...]
    kinds: dict[str, FreezeKind]


ACCEPTED = "accepted"
MUST_BE_ZERO = "must-be-zero"
OPEN_END = 4102444800  # CUTOVER_UNTIL while the window is open: 2100-01-01, so a query bounded by it counts all


@dataclass(frozen=True)
class Watch:
    """A read-only count of the rows the old server took after the copy: sessions, saved forms, edits."""

    name: str
    host: str
    command: str  # prints a count, then one row per line; reads $CUTOVER_SINCE and $CUTOVER_UNTIL
    losses: str  # ACCEPTED (lost when traffic moves, as the plan says) or MUST_BE_ZERO (refuses the go-live)
    label: str  # what a row is, in the plural: "sessions", "content edits"
    timeout: timedelta = timedelta(seconds=30)
    freeze: str | None = None  # the freeze that keeps it at zero
    salvage: str | None = None  # saves the window's rows, run on demand once the window has closed
    salvage_host: str | None = None

    @property
    def must_be_zero(self) -> bool:
        return self.losses == MUST_BE_ZERO

    @property
    def salvage_step(self) -> str:
        return f"salvage-{self.name}"


@dataclass(frozen=True)
class DataPlan:
    """The data window: when the old server's data was copied, what it took since, and how to close it."""

    watches: tuple[Watch, ...] = ()
    copy_stage: str | None = None  # the data was copied when this stage started, by its host's clock
    copied_at: datetime | None = None  # or at this moment
    show_ids: int = 200  # at most this many rows of a watch are listed
    forward: str | None = None  # makes the old server's web tier forward every request to the new server
    unforward: str | None = None  # undoes it
    forward_host: str | None = None
    forward_timeout: timedelta = timedelta(seconds=20)

    def watch(self, name: str) -> Watch | None:
        return next((w for w in self.watches if w.name == name), None)


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
    data: DataPlan = DataPlan()
    sites: SitesPlan = SitesPlan()
    keep_runs: int = 10  # [ssh] keep_runs: finished run directories kept per stage on each host

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def step(self, name: str) -> Stage | None:
        """A stage of the plan, or a watch's salvage run (``salvage-WATCH``), which runs like one."""
        stage = self.stage(name)
        if stage is not None:
            return stage
        watch = next((w for w in self.data.watches if w.salvage and w.salvage_step == name), None)
        if watch is None or watch.salvage is None:
            return None
        return Stage(name=watch.salvage_step, host=watch.salvage_host or watch.host, command=watch.salvage,
                     required=False)

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

    def interface(self, host: str) -> str | None:
        """The interface keepalived speaks VRRP on, on ``host``: its own, or the failover's; None when the plan
        does not say (``cutover keepalived --online`` reads it from the host)."""
        assert self.failover is not None
        return self.hosts[host].interface or self.failover.interface

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
