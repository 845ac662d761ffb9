"""App wiring: the Bolt app built from a ``Services`` object, and the two ways to serve it.

Listeners here only parse, authorize, ack and hand off; everything else is in
the services. Nothing before an ack touches the database. Slack may deliver a
command or event twice (retries, Socket Mode redelivery); the middleware drops
repeats this process has seen, and the lane that acts checks the store first.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.ops.health import Readiness
from bot.refusals import Refused
from bot.runbook.blocks import DONE_ACTION
from bot.services import Services
from bot.slack.deliveries import RecentDeliveries, delivery_key
from bot.slack.front import HttpServer, SlackFront
from bot.switch.blocks import APPROVE_ACTION, WITHDRAW_ACTION
from commands import ROUTER, Router

log = logging.getLogger("cutover.app")


def build_app(services: Services, router: Router = ROUTER) -> App:
    app = App(
        client=services.slack,
        signing_secret=services.settings.slack_signing_secret or "",
        token_verification_enabled=True,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("cutover.bolt"),
    )

    recent = RecentDeliveries()

    @app.middleware
    def act_once(body: dict, context: dict, next: Callable[[], Any]) -> Any:
        """A repeat this process has seen is dropped here, in memory; the lane checks the store before acting."""
        key = delivery_key(body)
        if key is not None and recent.seen(key):
            log.info("ignored a repeated delivery (%s)", key)
            return BoltResponse(status=200, body="")
        context["delivery_key"] = key
        return next()

    @app.command("/cutover")
    def cutover(ack: Any, body: dict, respond: Any, context: dict) -> None:
        router.handle(services, body, ack, respond, context.get("delivery_key"))

    @app.event("reaction_added")
    @app.event("reaction_removed")
    def reaction(ack: Any, event: dict, context: dict) -> None:
        """Reactions matter only on a go-live or rollback request; the service decides, in the events lane."""
        ack()
        services.events.submit(f"{event.get('type')} by {event.get('user')}", services.once,
                               context.get("delivery_key"), on_reaction, event)

    def on_reaction(event: dict) -> None:
        if services.golive is not None:
            services.golive.on_reaction(event)

    @app.event("app_home_opened")
    def home_opened(ack: Any, event: dict) -> None:
        """Someone opened the app's Home tab: the runbook as it stands, published for them."""
        ack()
        if event.get("tab", "home") == "home" and event.get("user"):
            services.events.submit(f"Home tab of {event['user']}", services.home.opened, event["user"])

    @app.action(DONE_ACTION)
    def step_done(ack: Any, body: dict, context: dict) -> None:
        """The Done button on a person's step: the same as `/cutover done STEP`, for that run only."""
        ack()
        user = (body.get("user") or {}).get("id", "")
        action = (body.get("actions") or [{}])[0]
        services.events.submit(f"Done by {user}", services.once, context.get("delivery_key"), on_done, user,
                               action.get("value", ""))

    def on_done(user: str, value: str) -> None:
        steps = services.stages.people
        try:
            run = steps.step_of(value)
        except Refused as exc:
            services.notifier.ephemeral(user, str(exc))
            return
        services.audit(user, "done", run.stage, "accepted", {"run": run.id, "via": "button"})
        try:
            steps.complete(run.stage, user, ok=True, run_id=run.id)
        except Refused as exc:
            services.audit(user, "done", run.stage, "refused", {"reason": str(exc)})
            services.notifier.ephemeral(user, str(exc))

    @app.action(APPROVE_ACTION)
    @app.action(WITHDRAW_ACTION)
    def request_button(ack: Any, body: dict, context: dict) -> None:
        """Approve or Withdraw on a go-live or rollback request: the same rules as the reaction, in the events lane."""
        ack()
        user = (body.get("user") or {}).get("id", "")
        action = (body.get("actions") or [{}])[0]
        services.events.submit(f"{action.get('action_id')} by {user}", services.once, context.get("delivery_key"),
                               on_request_button, user, action.get("action_id", ""), action.get("value", ""))

    def on_request_button(user: str, action_id: str, value: str) -> None:
        if services.golive is None or not value.isdigit():
            services.notifier.ephemeral(user, "That button belongs to no request this bot knows.")
            return
        services.golive.approvals.on_button(int(value), user, approve=action_id == APPROVE_ACTION)

    @app.error
    def on_error(error: Exception, body: dict) -> None:
        log.error("listener failed: %s", error.__class__.__name__, exc_info=error)

    return app


def serve_socket_mode(app: App, services: Services) -> SocketModeHandler:
    """Connect over Socket Mode (the builtin client); returns the handler once connected."""
    handler = SocketModeHandler(app, services.settings.slack_app_token, trace_enabled=False)
    handler.connect()
    log.info("connected to Slack over Socket Mode")
    return handler


def serve_http(app: App, services: Services, port: int, host: str = "0.0.0.0",
               readiness: Readiness | None = None) -> HttpServer:
    """Serve ``/slack/events`` (signed requests only), ``/healthz`` and ``/readyz`` on waitress."""
    front = SlackFront(app, services.settings.slack_signing_secret or "",
                       readiness or Readiness(services.settings, services.scheduler, services.watchdog))
    server = HttpServer(front, host, port)
    log.info("serving /slack/events, /healthz and /readyz on %s:%d", host, server.server_port)
    return server


def stop_on_signal() -> threading.Event:
    """An event SIGINT and SIGTERM set from now on (so that a stop asked for while starting is not lost)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for_signal(fatal: threading.Event | None = None, stop: threading.Event | None = None) -> bool:
    """Until SIGINT or SIGTERM, or until ``fatal`` is set (a thread the watchdog could not restart): True then."""
    stop = stop or stop_on_signal()
    while not stop.wait(0.5):
        if fatal is not None and fatal.is_set():
            return True
    return False
