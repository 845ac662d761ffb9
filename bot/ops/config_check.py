"""``cutover check-config``: the plan and the environment checked together, every problem listed at once.

Offline it reads the plan, the settings each run mode needs, and the files
the plan names (SSH keys, known_hosts). With ``--online`` it also asks each
service whether it accepts its token, blaming the variable that holds it,
and runs the start's own checks (the bot in its channel, the plan's people).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.ops.startup import startup_problems
from bot.plan import Host, Plan, PlanError, load_plan
from bot.plan.load import partial_plan
from bot.settings import Settings
from bot.slackapi.notifier import slack_error
from bot.ssh import known_hosts_path
from bot.switch.cloud import Cloud, CloudError

TOKEN_HINTS = {
    "invalid_auth": "was rejected (invalid_auth): check it is this workspace's token and was not revoked",
    "not_authed": "was not sent (not_authed)",
    "not_allowed_token_type": "is the wrong kind of token (not_allowed_token_type)",
    "account_inactive": "belongs to a deactivated app or workspace (account_inactive)",
    "token_revoked": "was revoked (token_revoked)",
}


@dataclass
class ConfigReport:
    plan: Plan | None
    problems: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # what the online checks found in order


def check(plan_path: str, settings: Settings, *, mode: str = "socket", online: bool = False,
          plan_only: bool = False) -> ConfigReport:
    """``plan_only``: the plan and the files it names, without the environment's tokens (a plan being written)."""
    report = ConfigReport(None, [] if plan_only else settings.problems(mode))
    try:
        report.plan = load_plan(plan_path)
    except PlanError as exc:
        report.problems += exc.errors
    plan = report.plan
    hosts, has_failover = (plan.hosts, plan.failover is not None) if plan is not None else partial_plan(plan_path)
    report.problems += file_problems(plan_path, hosts)
    if has_failover and not settings.digitalocean_token and not plan_only:
        report.problems.append("DIGITALOCEAN_ACCESS_TOKEN: not set; the plan's [failover] needs it to confirm "
                               "the switch (a token with reserved_ip:read and droplet:read)")
    if online:
        _online(report, settings, mode)
    return report


def file_problems(plan_path: str, hosts: dict[str, Host]) -> list[str]:
    """Each host's key_file and known_hosts: there, and readable by the user the bot runs as. One problem per
    file, naming every host that uses it."""
    users: dict[tuple[str, str], list[Host]] = {}
    for host in hosts.values():
        if host.key_file:
            users.setdefault(("key_file", os.path.expanduser(host.key_file)), []).append(host)
        users.setdefault(("known_hosts", known_hosts_path(host)), []).append(host)
    problems = []
    for (key, path), using in users.items():
        problem = unreadable(path)
        if problem is None:
            continue
        if problem == "does not exist" and key == "known_hosts":
            ports: dict[int, list[str]] = {}
            for host in using:
                ports.setdefault(host.port, []).append(host.address)
            scans = "; ".join(f"ssh-keyscan -p {port} {' '.join(addresses)} >> {path}"
                              for port, addresses in ports.items())
            problem += f"; add the host keys: {scans} (after checking their fingerprints)"
        where = f"hosts.{using[0].name}.{key}" + (
            f" (and {', '.join(h.name for h in using[1:])})" if len(using) > 1 else "")
        problems.append(f"{plan_path}: {where}: {path} {problem}")
    return problems


def unreadable(path: str) -> str | None:
    """Why this process cannot read the file at ``path`` (worded to follow the path), or None when it can."""
    me = os.getuid()
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a folder; expected a file"
    except PermissionError:
        try:
            st = os.stat(path)
        except PermissionError:
            return (f"cannot be read by uid {me}, the user the bot runs as: a folder on its path is closed to it "
                    f"(give that user search permission on each folder: chmod o+x, or chown {me})")
        return (f"cannot be read by uid {me}, the user the bot runs as (it is owned by uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}): chown {me} {path} — the Docker image runs as uid 10001, so a "
                f"mounted key needs chown 10001 on the host")
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def _online(report: ConfigReport, settings: Settings, mode: str) -> None:
    bot_ok = False
    if settings.slack_bot_token and settings.slack_bot_token.startswith("xoxb-"):
        client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=10)
        bot_ok = _slack(report, "SLACK_BOT_TOKEN", lambda: client.auth_test(), settings.slack_api_url)
        if bot_ok and report.plan is not None:
            report.problems += startup_problems(client, report.plan)
    if mode == "socket" and settings.slack_app_token and settings.slack_app_token.startswith("xapp-"):
        app = WebClient(base_url=settings.slack_api_url, timeout=10)
        token = settings.slack_app_token
        _slack(report, "SLACK_APP_TOKEN", lambda: app.apps_connections_open(app_token=token), settings.slack_api_url)
    if settings.replica_url and not any(p.startswith("CUTOVER_REPLICA_URL") for p in settings.problems(mode)):
        from bot.ops.replica import ReplicaError, probe

        try:
            report.confirmed.append(probe(settings.replica_url))
        except ReplicaError as exc:
            report.problems.append(f"CUTOVER_REPLICA_URL: {exc}")
    if settings.digitalocean_token and report.plan is not None and report.plan.failover is not None:
        try:
            who = Cloud(settings.digitalocean_token, settings.digitalocean_end_point).account()
            report.confirmed.append(f"DIGITALOCEAN_ACCESS_TOKEN is accepted (account {who})")
        except CloudError as exc:
            report.problems.append(f"DIGITALOCEAN_ACCESS_TOKEN: {exc}")


def _slack(report: ConfigReport, variable: str, call, api_url: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        call()
    except SlackApiError as exc:
        error = slack_error(exc)
        report.problems.append(f"{variable} {TOKEN_HINTS.get(error, f'was refused ({error})')}")
        return False
    except (SlackClientError, OSError, ValueError) as exc:
        report.problems.append(f"{variable} could not be checked: Slack's Web API at {api_url} did not answer "
                               f"({exc.__class__.__name__}); check SLACK_API_URL and the network")
        return False
    report.confirmed.append(f"{variable} is accepted by Slack")
    return True
