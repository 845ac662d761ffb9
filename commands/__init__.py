"""The ``/cutover`` subcommands. Each module parses its arguments and calls one service."""

from commands.basic import AUDIT, REPORT, STATUS
from commands.data import LOSSES, SALVAGE
from commands.freezes import FREEZE, UNFREEZE
from commands.golive import CHECK, GOLIVE, ROLLBACK
from commands.router import Caller, Command, Reply, Router, UsageError
from commands.stages import CANCEL, DONE, FAILED, LOGS, RUN

ROUTER = Router([STATUS, RUN, DONE, FAILED, CANCEL, LOGS, FREEZE, UNFREEZE, CHECK, GOLIVE, ROLLBACK, LOSSES, SALVAGE,
                 AUDIT, REPORT])

__all__ = ["ROUTER", "Caller", "Command", "Reply", "Router", "UsageError"]
