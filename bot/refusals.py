"""The one refusal type: why something cannot be done now, worded for the person who asked.

Services raise a subclass; the command router catches ``Refused`` in one
place, replies with its text and audits it. Nothing else catches it to turn
it into a reply.
"""

from __future__ import annotations


class Refused(Exception):
    """A request the bot will not carry out now; ``str(exc)`` is what the person is told."""
