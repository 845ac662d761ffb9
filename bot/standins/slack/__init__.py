"""A Slack stand-in on 127.0.0.1 that speaks Slack's real wire protocols; see ``standin``."""

from bot.standins.slack.blockkit import InvalidBlocks, blocks_text, validate
from bot.standins.slack.standin import DEFAULT_CHANNELS, SlackStandIn
from bot.standins.slack.wire import Envelope, SlackError

__all__ = ["DEFAULT_CHANNELS", "Envelope", "InvalidBlocks", "SlackError", "SlackStandIn", "blocks_text", "validate"]
