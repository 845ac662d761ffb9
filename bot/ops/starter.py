"""``cutover init``: a commented plan and a deploy script to start from.

The plan is one of the examples shipped with the bot (the generic night, or a
Drupal site's); the deploy script has one case per stage whose command is
``./deploy.sh STAGE``, each failing until it is written, so that a
half-written script can never pass for a stage that did its work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.plan import parse_plan
from bot.plan.load import read_toml

EXAMPLES = Path(__file__).resolve().parent.parent / "plan" / "examples"
INIT_EXAMPLES = {"generic": "generic.toml", "drupal10": "drupal10.toml", "drupal7": "drupal7.toml"}
NOT_WRITTEN = 3  # the skeleton's exit code for a stage nobody has written yet


class InitError(Exception):
    """Why nothing was written: a path that cannot be used, or files that would be overwritten."""


@dataclass(frozen=True)
class Started:
    plan: Path
    script: Path
    stages: tuple[str, ...]  # the stages the script has a case for


def write_starter(out: Path, example: str = "generic", force: bool = False) -> Started:
    if out.exists() and not out.is_dir():
        raise InitError(f"--out {out}: a file, not a folder; give a folder (it is made if missing)")
    plan_path, script_path = out / "cutover.toml", out / "deploy.sh"
    there = [p for p in (plan_path, script_path) if p.exists()]
    if there and not force:
        raise InitError(", ".join(str(p) for p in there) + " already exist" + ("s" if len(there) == 1 else "")
                        + "; nothing was written (--force overwrites)")
    source = EXAMPLES / INIT_EXAMPLES[example]
    text = source.read_text(encoding="utf-8")
    plan = parse_plan(read_toml(str(source)), str(source))
    stages = tuple(s.name for s in plan.stages if (s.command or "").strip().startswith("./deploy.sh "))
    out.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(text.replace(f"--plan examples/{source.name}", "--plan cutover.toml")
                         .replace("--plan cutover.example.toml", "--plan cutover.toml"), encoding="utf-8")
    script_path.write_text(deploy_script(stages), encoding="utf-8")
    script_path.chmod(0o755)
    return Started(plan_path, script_path, stages)


def deploy_script(stages: tuple[str, ...]) -> str:
    cases = "".join(f"""{name})
  # The work of `{name}`. Print "Processed N/TOTAL" lines for a progress bar (the stage's `progress` pattern).
  echo "{name}: not written yet" >&2; exit {NOT_WRITTEN}
  ;;
""" for name in stages)
    return f"""#!/bin/sh
# deploy.sh STAGE — run by cutover on the stage's host, over SSH, as the host's `user`, in the stage's `workdir`.
# What a stage gets and what the bot reads: README.md, "Writing the deploy script".
#  - stdin is /dev/null; stdout and stderr go, merged, to the run's log, which the channel follows;
#  - exit 0 is `succeeded`, anything else `failed`; the bot may run a stage again after a failure, so make each
#    one safe to repeat (work into a fresh place, then swap);
#  - the environment is that of `ssh host command`: set PATH and the like here.
set -eu
case "${{1:-}}" in
{cases}*) echo "deploy.sh: unknown stage '${{1:-}}'" >&2; exit 2 ;;
esac
"""
