"""The bot running on this machine against the local Slack stand-in.

The demo, the console and the tests all use this: the same Bolt app, the same
services, talking Socket Mode and the Web API to a stand-in on 127.0.0.1.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.clock import Clock
from bot.plan import Plan
from bot.services import Services, build_services
from bot.settings import Settings
from bot.slack.app import build_app, serve_socket_mode
from bot.slackapi.notifier import make_slack_client
from bot.standins.slack import SlackStandIn
from commands import ROUTER, Router


def local_settings(slack: SlackStandIn, db_path: str, plan_path: str = "cutover.toml",
                   digitalocean_end_point: str | None = None, digitalocean_token: str | None = None) -> Settings:
    """Settings for a bot talking to the Slack stand-in; DigitalOcean is the given token and end point (the
    stand-in's token when only an end point is given)."""
    if digitalocean_token is None and digitalocean_end_point:
        digitalocean_token = "do-standin-token"
    return Settings(slack_bot_token=slack.bot_token, slack_app_token=slack.app_token,
                    slack_signing_secret=slack.signing_secret, slack_api_url=slack.api_url,
                    digitalocean_token=digitalocean_token,
                    digitalocean_end_point=digitalocean_end_point, plan_path=plan_path, db_path=db_path)


@dataclass
class LocalBot:
    services: Services
    handler: SocketModeHandler

    def stop(self) -> None:
        """Stop at once: the builtin client's close waits out its 3 s socket timeout, so it runs aside."""
        self.handler.client.auto_reconnect_enabled = False
        threading.Thread(target=self.handler.close, name="socket-mode-close", daemon=True).start()
        self.services.close()


def start_local_bot(slack: SlackStandIn, plan: Plan, db_path: str | None = None,
                    clock: Clock | None = None, router: Router = ROUTER,
                    digitalocean_end_point: str | None = None, digitalocean_token: str | None = None,
                    slack_timeout: int | None = None) -> LocalBot:
    """``slack_timeout``: the Web API client's timeout in seconds, where a test needs Slack's late answers sooner
    than the 30 s of a real bot."""
    if db_path is None:
        db_path = str(Path(tempfile.mkdtemp(prefix="cutover-")) / "cutover.db")
    settings = local_settings(slack, db_path, plan.path, digitalocean_end_point, digitalocean_token)
    client = make_slack_client(settings, timeout=slack_timeout) if slack_timeout else None
    services = build_services(settings, plan, clock=clock, slack=client)
    app = build_app(services, router)
    handler = serve_socket_mode(app, services)
    slack.wait_connected()
    services.start()
    return LocalBot(services, handler)
