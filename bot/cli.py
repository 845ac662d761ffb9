"""The ``cutover`` command line: run the bot, check a plan, run the demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

from slack_bolt.error import BoltError
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.ops.health import WRITE_EVERY, Readiness, health_file, write_health
from bot.ops.starter import INIT_EXAMPLES
from bot.plan import PlanError, load_plan
from bot.redact import Redactor
from bot.settings import SettingsError, load_settings
from bot.slackapi.notifier import slack_error

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.plan import Plan
    from bot.services import Services

log = logging.getLogger("cutover")


# How `cutover run` ends, for the service manager (deploy/cutover.service restarts on all but EXIT_BAD_SETTING).
EXIT_BAD_SETTING = 2  # a setting, the plan, the channel or the database is wrong: restarting will not fix it
EXIT_THREAD_LOST = 3  # a background thread could not be restarted: a new process can
EXIT_UNREACHABLE = 4  # Slack could not be reached for CUTOVER_START_RETRY seconds: a later start may reach it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutover", description="Run a planned server cutover from Slack.")
    parser.add_argument("--version", action="version", version=f"cutover {version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    plan_help = "the plan file (default: $CUTOVER_PLAN, else ./cutover.toml)"

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    init = command("init", "write a commented plan and a deploy script to start from",
                   "Write cutover.toml (a commented plan) and deploy.sh (the deploy script's skeleton: one case per "
                   "stage) into a folder, ready for `cutover check-config --plan-only`. Existing files are left "
                   "alone unless --force.")
    init.add_argument("--out", default=".", help="the folder to write into (made if missing; default: here)")
    init.add_argument("--example", choices=sorted(INIT_EXAMPLES), default="generic",
                      help="what to start from: generic (default), or a Drupal site's night (drupal10, drupal7)")
    init.add_argument("--force", action="store_true", help="overwrite cutover.toml and deploy.sh if they exist")
    check = command("check-config", "check the plan and the environment, and list every problem at once",
                    "Read the plan, the settings the run mode needs and the key files the plan names; list every "
                    "problem at once. Exit 0 when there are none, 2 otherwise.")
    check.add_argument("--plan", dest="plan_option", metavar="FILE", help=plan_help)
    check.add_argument("plan", nargs="?", help=argparse.SUPPRESS)  # the old positional form, still read
    check.add_argument("--plan-only", action="store_true",
                       help="check the plan and the files it names, not the environment's tokens (a plan being "
                            "written, on a machine without them)")
    check.add_argument("--http", action="store_true", help="check the settings HTTP mode needs (not Socket Mode)")
    check.add_argument("--online", action="store_true",
                       help="also ask Slack and DigitalOcean whether they accept the tokens, and check the channel "
                            "and the plan's people")
    run = command("run", "connect to Slack and serve /cutover (Socket Mode by default)",
                  "Serve /cutover until SIGTERM. Exit codes: 2 a bad setting, plan, channel or key file (restarting "
                  "will not help); 3 a background thread could not be restarted; 4 Slack could not be reached for "
                  "$CUTOVER_START_RETRY seconds (300). A service manager restarts it on 3 and 4.")
    run.add_argument("--plan", metavar="FILE", help=plan_help)
    run.add_argument("--http", action="store_true", help="serve /slack/events over HTTP instead of Socket Mode")
    run.add_argument("--port", type=int, default=3000, help="HTTP port (with --http); default 3000")
    status = command("status", "whether the bot running on this machine is ready (its health file)",
                     "Read the health file the running bot writes every 15 s beside its database "
                     "(<CUTOVER_DB>.health.json), print it, and exit 0 only when the bot is ready and the file is "
                     "fresh. The cutover's own status is `/cutover status` in Slack.")
    status.add_argument("--db", metavar="FILE", help="the running bot's database (default: $CUTOVER_DB, else "
                                                     "./cutover.db), e.g. /var/lib/cutover/cutover.db under systemd")
    status.add_argument("--local", action="store_true", help=argparse.SUPPRESS)  # what it always does now
    wiring = command("keepalived", "write keepalived's configuration and scripts for the plan's old and new servers",
                     "Write old/ and new/, each with keepalived.conf, cutover-check.sh and cutover-notify.sh for that "
                     "server, and print how to install them.")
    wiring.add_argument("--plan", metavar="FILE", help=plan_help)
    wiring.add_argument("--out", default="keepalived", help="the folder to write old/ and new/ into (made if "
                                                            "missing; default ./keepalived)")
    wiring.add_argument("--router-id", type=int, default=51, help="VRRP virtual_router_id, 1-255 (default 51); "
                                                                  "unique among VRRP pairs on the network")
    wiring.add_argument("--online", action="store_true",
                        help="read over SSH which interface holds each server's private_address, and speak VRRP "
                             "there (instead of the plan's `interface`)")
    report = command("report", "write the night's report (Markdown and a PNG timeline) from a database",
                     "Write the two files `/cutover report` uploads, from a bot's or a rehearsal's database; Slack "
                     "is not needed.")
    report.add_argument("--db", required=True, metavar="FILE",
                        help="the bot's SQLite database (CUTOVER_DB), e.g. a rehearsal's")
    report.add_argument("--plan", metavar="FILE", help=plan_help)
    report.add_argument("--out", default=".", help="the folder to write the two files into (default: here)")
    command("demo", "run the whole launch flow against local stand-ins, offline",
            "The launch night from freezes to go-live and rollback, against a local Slack and DigitalOcean and two "
            "servers on this machine (in network namespaces as root, else with a keepalived stand-in). Exit 0 when "
            "every check passed.")
    console = command("console", "rehearse a plan from a terminal, through a local Slack stand-in",
                      "Talk to the bot as the plan's people: /cutover commands, reactions, `as @bob`. Stages run on "
                      "the plan's own hosts.")
    console.add_argument("--plan", required=True, metavar="FILE", help="the plan file to rehearse")
    console.add_argument("--db", metavar="FILE", help="SQLite file for state (default: a new temporary one)")
    console.add_argument("--stand-in-failover", action="store_true",
                         help="rehearse the go-live too: stand-ins for DigitalOcean and for keepalived on two servers "
                              "on this machine replace the plan's [failover] side (stages still run on its hosts)")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(f"\ncutover {args.cmd}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as exc:  # a path the command was given or needs: one line, never a traceback
        print(f"cutover {args.cmd}: {os_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_SETTING


def os_problem(exc: OSError) -> str:
    """What an OSError means for a person: the path and the reason, as the system words it."""
    reason = exc.strerror or exc.__class__.__name__
    return f"{exc.filename}: {reason}" if exc.filename else str(reason)


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "init":
        return init_plan(Path(args.out), args.example, args.force)
    if args.cmd == "check-config":
        return check_config(args.plan_option or args.plan, http=args.http, online=args.online,
                            plan_only=args.plan_only)
    if args.cmd == "run":
        return run_bot(args.plan, http=args.http, port=args.port)
    if args.cmd == "keepalived":
        return keepalived_wiring(args.plan, Path(args.out), args.router_id, args.online)
    if args.cmd == "status":
        return local_status(args.db)
    if args.cmd == "report":
        return write_local_report(args.db, args.plan, Path(args.out))
    if args.cmd == "demo":
        from bot.local.demo import run_demo

        _local_logging()
        return run_demo()
    if args.cmd == "console":
        from bot.local.console import run_console

        _local_logging()
        return run_console(args.plan, args.db, stand_in_failover=args.stand_in_failover)
    return EXIT_BAD_SETTING


def _local_logging() -> None:
    """The demo's and the console's log: warnings on stderr, the libraries' noise kept out."""
    from bot.ops.logsetup import quiet_libraries

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(logging.WARNING)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("cutover-bot")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def init_plan(out: Path, example: str, force: bool) -> int:
    from bot.ops.starter import InitError, write_starter

    try:
        started = write_starter(out, example, force)
    except InitError as exc:
        print(f"cutover init: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    print(f"{started.plan}: the plan ({example}), commented; docs/plan.md lists every key with its type and default")
    print(f"{started.script}: the deploy script, a case for each of " + (", ".join(started.stages) or "no stage")
          + " that fails until it is written")
    print(f"""Next:
  1. Put your channel, people and servers in {started.plan.name} (Slack ids: see README, "Finding Slack ids").
  2. cutover check-config --plan-only --plan {started.plan}    (the plan and its key files, no tokens needed)
  3. Copy {started.script.name} to each stage's host and workdir, and write its cases.
  4. cutover console --plan {started.plan} --stand-in-failover    (rehearse, Slack and the failover side stood in)""")
    return 0


def keepalived_wiring(plan_path: str | None, out: Path, router_id: int, online: bool = False) -> int:
    from bot.switch.keepalived import DIGITALOCEAN_API, Options, WiringError, install_steps, read_interfaces, write

    settings = load_settings()
    path = plan_path or settings.plan_path
    if out.exists() and not out.is_dir():
        print(f"--out {out}: a file, not a folder; give a folder (it is made if missing)", file=sys.stderr)
        return EXIT_BAD_SETTING
    try:
        plan = load_plan(path)
        if not 1 <= router_id <= 255:
            raise WiringError([f"--router-id: expected 1 to 255 (got {router_id})"])
        interfaces = read_interfaces(plan) if online else None
        if interfaces:
            for host, interface in interfaces.items():
                print(f"`{host}`: its private address is on {interface}")
        options = Options(digitalocean_api=settings.digitalocean_end_point or DIGITALOCEAN_API,
                          virtual_router_id=router_id, interfaces=interfaces)
        written = write(plan, out, options)
    except (PlanError, WiringError) as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 2
    assert plan.failover is not None
    for role, host in (("old", plan.failover.old), ("new", plan.failover.new)):
        print(f"{out / role}/ for `{host}`: " + ", ".join(p.name for p in written if p.parent.name == role))
    print(install_steps(plan, out, options))
    return 0


def write_local_report(db: str, plan_path: str | None, out: Path) -> int:
    """``cutover report --db``: the same two files ``/cutover report`` uploads, written here; Slack not needed."""
    from bot.clock import SystemClock
    from bot.night.records import Records
    from bot.night.report import write_report
    from bot.store import Store, StoreError

    path = plan_path or load_settings().plan_path
    if out.exists() and not out.is_dir():
        print(f"--out {out}: a file, not a folder; give a folder", file=sys.stderr)
        return EXIT_BAD_SETTING
    try:
        plan = load_plan(path)
    except PlanError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return EXIT_BAD_SETTING
    if not Path(db).is_file():
        print(f"{db}: no such database; give the file CUTOVER_DB names (the bot's or a rehearsal's)", file=sys.stderr)
        return 2
    try:
        store = Store(db)
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        clock = SystemClock()
        md, png, drawn = write_report(plan, Records.on(store, clock, plan), clock.now(), out)
    finally:
        store.close()
    print(f"{md}: the report ({len(drawn)} steps, {len(md.read_text(encoding='utf-8').splitlines())} lines)")
    print(f"{png}: the timeline chart")
    return 0


def local_status(db: str | None) -> int:
    from bot.ops.health import read_health

    settings = load_settings()
    if db is not None:
        settings = replace(settings, db_path=db)
    path = health_file(settings)
    if not path.exists() and db is None and "CUTOVER_DB" not in os.environ:
        print(f"{path}: no health file here. Give the running bot's database: cutover status --db FILE (its "
              "CUTOVER_DB; under systemd /var/lib/cutover/cutover.db, in the image /data/cutover.db)",
              file=sys.stderr)
        return 1
    ready, lines = read_health(path)
    for line in lines:
        print(line)
    return 0 if ready else 1


def check_config(path: str | None, *, http: bool = False, online: bool = False, plan_only: bool = False) -> int:
    from bot.ops.config_check import check

    settings = load_settings()
    path = path or settings.plan_path
    report = check(path, settings, mode="http" if http else "socket", online=online, plan_only=plan_only)
    for line in report.confirmed:
        print(f"✔ {line}")
    if report.problems:
        print(f"{len(report.problems)} problem(s) with {path}" + ("" if plan_only else " and the environment") + ":",
              file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    plan = report.plan
    assert plan is not None
    failover = plan.failover
    print(f"{path}: OK — {len(plan.hosts)} hosts, {len(plan.stages)} stages, "
          f"{len(plan.people.operators)} operators, {len(plan.people.approvers)} approvers "
          f"({plan.people.required_approvals} needed)"
          + (f", floating IP {failover.floating_ip} {failover.old} → {failover.new}" if failover else "")
          + ("; the environment was not checked (--plan-only)" if plan_only else
             "; the environment has what " + ("HTTP mode" if http else "Socket Mode") + " needs"
             + ("" if online else " (`--online` also asks Slack and DigitalOcean)")))
    return 0


def run_bot(plan_path: str | None, *, http: bool, port: int) -> int:
    from bot.slack.app import serve_http, stop_on_signal, wait_for_signal
    from bot.ops.config_check import file_problems
    from bot.ops.logsetup import setup_logging
    from bot.settings import FORMATS, LEVELS
    from bot.services import build_services
    from bot.store import Store, StoreError

    settings = load_settings()
    setup_logging(Redactor(settings.secrets()), settings.log_level if settings.log_level in LEVELS else "INFO",
                  settings.log_format if settings.log_format in FORMATS else "text")
    bad = False
    try:
        settings.require("http" if http else "socket")
    except SettingsError as exc:
        for error in exc.errors:
            log.error("bad setting: %s", error)
        bad = True
    path = plan_path or settings.plan_path
    try:
        plan = load_plan(path)
    except PlanError as exc:  # said together with the settings' problems: one restart fixes them all
        for error in exc.errors:
            log.error("bad plan: %s", error)
        return EXIT_BAD_SETTING
    if bad:
        return EXIT_BAD_SETTING
    setup_logging(Redactor(settings.secrets(), plan.redact), settings.log_level, settings.log_format)
    unreadable = file_problems(path, plan.hosts)
    if unreadable:
        for problem in unreadable:
            log.error("bad plan: %s", problem)
        return EXIT_BAD_SETTING
    if plan.failover is not None and not settings.digitalocean_token:
        log.warning("DIGITALOCEAN_ACCESS_TOKEN is not set: check and golive will fail their DigitalOcean item")
    replica, restored = None, None
    if settings.replica_url:
        from bot.ops.replica import Replica, ReplicaError

        replica = Replica(settings.db_path, settings.replica_url)
        try:
            restored = replica.restore_if_missing()
        except ReplicaError as exc:
            log.error("cannot start: %s; exiting %d so that the service manager tries again", exc, EXIT_UNREACHABLE)
            return EXIT_UNREACHABLE
        if restored is not None:
            log.warning("restored %s from the replica %s, last written %s", settings.db_path, restored.replica,
                        f"{restored.last_written:%Y-%m-%d %H:%M:%S} UTC" if restored.last_written else "(unknown)")
    try:
        hold = Store.hold(settings.db_path)
        services = build_services(settings, plan, replica_line=replica.last_said if replica is not None else None)
    except StoreError as exc:
        log.error("bad database: %s", exc)
        return EXIT_BAD_SETTING
    if replica is not None:
        try:
            replica.start()
        except (ReplicaError, OSError) as exc:
            log.error("cannot start: litestream: %s", exc)
            services.close()
            return EXIT_BAD_SETTING
    readiness = Readiness(settings, services.scheduler, services.watchdog, replica)
    stop = stop_on_signal()
    started = _reach_slack(services, plan, http, stop)
    if isinstance(started, int):
        services.close()
        if replica is not None:
            replica.stop()
        hold.release()
        return started
    app, handler = started
    if restored is not None:
        when = f"{restored.last_written:%H:%M:%S} UTC" if restored.last_written else "at a time it does not record"
        services.notifier.post(f"♻️ This bot started on a database restored from the replica, last written {when}. "
                               "What happened after that is known only from the servers and Slack: before it says "
                               "anything, it reads each stage's state from its host, each request's approvals from "
                               "its reactions and the old server's health file and its record of any switch.")
    if http:
        try:
            server = serve_http(app, services, port, readiness=readiness)
        except OSError as exc:
            log.error("cannot start: cannot listen on port %d (--port): %s", port, exc.strerror or exc)
            services.close()
            hold.release()
            return EXIT_BAD_SETTING
    services.start()
    mode, health = ("http" if http else "socket"), health_file(settings)
    services.watchdog.every_sweep(WRITE_EVERY, lambda: _write_health(health, readiness, mode))
    fatal = wait_for_signal(services.watchdog.fatal, stop)
    if fatal:
        log.error("stopping: %s", services.watchdog.fatal_reason)
    log.info("stopping: taking no new commands; running stages keep running on their hosts")
    _write_health(health, None, mode, "the bot is stopping" + (f": {services.watchdog.fatal_reason}" if fatal else ""))
    # Stop taking work first; the Socket Mode client's close can wait out its socket timeout, so it runs aside.
    closing = threading.Thread(target=server.shutdown if http else handler.close,  # type: ignore[union-attr]
                               name="stop-serving", daemon=True)
    closing.start()
    closing.join(2)
    services.close()
    if replica is not None:
        replica.stop()  # its last sync: what the bot wrote last is on the replica
    _write_health(health, None, mode, "the bot has stopped" + (f": {services.watchdog.fatal_reason}" if fatal else ""))
    hold.release()
    log.info("stopped")
    return EXIT_THREAD_LOST if fatal else 0


def _reach_slack(services: Services, plan: Plan, http: bool,
                 stop: threading.Event) -> tuple[App, SocketModeHandler | None] | int:
    """Ask Slack who the bot is, check the plan's channel and people, and (Socket Mode) connect; the app and the
    handler, or the exit code. Slack not answering (no connection, 5xx, rate limited) is tried again with backoff
    for CUTOVER_START_RETRY seconds (a restart during a blip, a boot before the network): exit 4 after that."""
    from bot.ops.startup import Unanswered, startup_problems, unreachable
    from bot.slack.app import build_app, serve_socket_mode

    settings = services.settings
    deadline = time.monotonic() + settings.start_retry_seconds
    delay, attempt = 1.0, 1
    while True:
        try:
            services.slack.auth_test()  # before Bolt does, so a rejected token is explained by its error code
            problems = startup_problems(services.slack, plan)
            if not problems:
                app = build_app(services)
                return app, (None if http else serve_socket_mode(app, services))
            if not all(isinstance(problem, Unanswered) for problem in problems):
                for problem in problems:
                    log.error("cannot start: %s", problem)
                return EXIT_BAD_SETTING
            why = "; ".join(problems)
        except (SlackApiError, SlackClientError, BoltError, OSError) as exc:
            cause = (exc.__cause__ or exc.__context__ or exc) if isinstance(exc, BoltError) else exc
            if not unreachable(cause):
                log.error("cannot start: %s", slack_problem(cause, settings.slack_api_url))
                return EXIT_BAD_SETTING
            why = slack_problem(cause, settings.slack_api_url)
        left = deadline - time.monotonic()
        if left <= 0:
            log.error("cannot start: %s; gave up after %d attempt%s over %.0f s (CUTOVER_START_RETRY); exiting %d "
                      "so that the service manager starts it again", why, attempt, "" if attempt == 1 else "s",
                      settings.start_retry_seconds, EXIT_UNREACHABLE)
            return EXIT_UNREACHABLE
        wait = min(delay, left)
        log.warning("Slack cannot be reached yet (attempt %d): %s; trying again in %.0f s", attempt, why, wait)
        if stop.wait(wait):
            log.info("stopped while waiting for Slack")
            return 0
        delay, attempt = min(delay * 2, 60.0), attempt + 1


def _write_health(path: Path, readiness: Readiness | None, mode: str, note: str | None = None) -> None:
    try:
        write_health(path, readiness.check() if readiness is not None else [], mode, note)
    except OSError as exc:
        log.warning("cannot write the health file %s: %s", path, exc.strerror or exc)


def slack_problem(exc: Exception, api_url: str) -> str:
    """What went wrong talking to Slack at start, and what to check; never a token."""
    if isinstance(exc, SlackApiError):
        error = slack_error(exc)
        hints = {"invalid_auth": "SLACK_BOT_TOKEN was rejected: check it is this workspace's bot token",
                 "not_authed": "SLACK_BOT_TOKEN is missing",
                 "not_allowed_token_type": "SLACK_APP_TOKEN must be an app-level token (xapp-)",
                 "account_inactive": "the bot's token belongs to a deactivated app or workspace"}
        return f"Slack answered `{error}`: {hints.get(error, 'see the Slack API docs for this error')}"
    if isinstance(exc, BoltError):
        return f"Slack did not accept the bot ({exc})"
    reason = getattr(exc, "reason", None) or exc
    return f"Slack's Web API at {api_url} could not be reached ({reason}); check SLACK_API_URL and the network"


if __name__ == "__main__":
    sys.exit(main())
