"""The plan file: what the night is made of, read and checked (``load``), as typed values (``model``)."""

from bot.plan.checker import PlanError, did_you_mean
from bot.plan.load import load_plan, parse_plan
from bot.plan.model import (ACCEPTED, BUILTIN_FREEZE_KINDS, DEFAULT_REMINDERS, MUST_BE_ZERO, OPEN_END, REACTION_ALIASES,
                            DataPlan, DigitalOcean, FailoverPlan, FreezeKind, FreezesPlan, Host, People, Plan, Schedule,
                            Site, SitesPlan, Stage, Watch, reaction_base)

__all__ = ["ACCEPTED", "BUILTIN_FREEZE_KINDS", "DEFAULT_REMINDERS", "MUST_BE_ZERO", "OPEN_END", "REACTION_ALIASES",
           "DataPlan", "DigitalOcean", "FailoverPlan", "FreezeKind", "FreezesPlan", "Host", "People", "Plan", "PlanError",
           "Schedule", "Site", "SitesPlan", "Stage", "Watch", "did_you_mean", "load_plan", "parse_plan", "reaction_base"]
