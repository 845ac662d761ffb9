"""The ``cutover`` command line: run the bot, check a plan, run the demo."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.plan import PlanError, load_plan
from bot.redact import Redactor
from bot.settings import SettingsError, load_settings

log = logging.getLogger("cutover")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutover", description="Run a planned server cutover from Slack.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="connect to Slack and serve /cutover (Socket Mode by default)")
    run.add_argument("--http", action="store_true", help="serve /slack/events over HTTP instead of Socket Mode")
    run.add_argument("--port", type=int, default=3000, help="HTTP port (with --http); default 3000")
    run.add_argument("--plan", help="plan file (default: $CUTOVER_PLAN or cutover.toml)")
    check = sub.add_parser("check-config", help="validate a plan file and the environment, print every problem")
    check.add_argument("plan", nargs="?", help="plan file (default: $CUTOVER_PLAN or cutover.toml)")
    sub.add_parser("demo", help="run the launch flow against local stand-ins, offline")
    console = sub.add_parser("console", help="talk to the bot from a terminal through a local Slack stand-in")
    console.add_argument("--plan", required=True, help="the plan file to rehearse")
    console.add_argument("--db", help="SQLite file for state (default: a new temporary one)")
    args = parser.parse_args(argv)

    if args.cmd == "check-config":
        return check_config(args.plan)
    if args.cmd == "run":
        return run_bot(args.plan, http=args.http, port=args.port)
    if args.cmd == "demo":
        from bot.demo import run_demo

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return run_demo()
    if args.cmd == "console":
        from bot.console import run_console

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return run_console(args.plan, args.db)
    return 2


def check_config(path: str | None) -> int:
    settings = load_settings()
    path = path or settings.plan_path
    try:
        plan = load_plan(path)
    except PlanError as exc:
        print(f"{path}: {len(exc.errors)} problem(s):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    failover = plan.failover
    print(f"{path}: OK — {len(plan.hosts)} hosts, {len(plan.stages)} stages, "
          f"{len(plan.people.operators)} operators, {len(plan.people.approvers)} approvers "
          f"({plan.people.required_approvals} needed)"
          + (f", floating IP {failover.floating_ip} {failover.old} → {failover.new}" if failover else ""))
    return 0


def run_bot(plan_path: str | None, *, http: bool, port: int) -> int:
    from bot.app import build_app, serve_http, serve_socket_mode, wait_for_signal
    from bot.logs import setup_logging
    from bot.services import build_services

    settings = load_settings()
    setup_logging(Redactor(settings.secrets()))
    try:
        settings.require("http" if http else "socket")
    except SettingsError as exc:
        for error in exc.errors:
            log.error("bad setting: %s", error)
        return 2
    path = plan_path or settings.plan_path
    try:
        plan = load_plan(path)
    except PlanError as exc:
        for error in exc.errors:
            log.error("bad plan: %s", error)
        return 2
    setup_logging(Redactor(settings.secrets(), plan.redact))
    services = build_services(settings, plan)
    app = build_app(services)
    if http:
        server = serve_http(app, port)
        services.start()
        wait_for_signal()
        server.shutdown()
    else:
        handler = serve_socket_mode(app, services)
        services.start()
        wait_for_signal()
        handler.close()
    services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
