"""The ``[[stages]]`` array: the runbook's steps, commands on hosts or people's steps."""

from __future__ import annotations

from bot.plan.checker import NAME, USER_ID, Checker, did_you_mean
from bot.plan.model import Host, Stage


def stages(c: Checker, data: dict, hosts: dict[str, Host]) -> tuple[Stage, ...]:
    value = data.get("stages", [])
    if not isinstance(value, list):
        c.error("stages", value, "an array of tables ([[stages]])")
        return ()
    stages: list[Stage] = []
    names: set[str] = set()
    for i, s in enumerate(value):
        key = f"stages[{i}]"
        if not isinstance(s, dict):
            c.error(key, s, "a table")
            continue
        before = len(c.errors)
        label = s.get("name") if isinstance(s.get("name"), str) else None
        c.only(s, key + ".", {"name", "host", "command", "workdir", "timeout", "progress", "notable",
                              "depends_on", "required", "owner", "instructions", "planned"})
        name = c.string(s, f"{key}.name", "name", pattern=NAME,
                        expected="a stage name of lowercase letters, digits, - or _")
        if name in names:
            c.error(f"{key}.name", name, "a name no other stage has")
        manual = "owner" in s or "instructions" in s
        owner = instructions = None
        if manual:  # a person's step: who does it and what, no host and no command
            owner = c.string(s, f"{key}.owner", "owner", pattern=USER_ID,
                             expected="the Slack user id of the person who does this step, such as U0ALICE")
            instructions = c.string(s, f"{key}.instructions", "instructions",
                                    expected="what the owner is to do, in a sentence or two")
            for other in ("host", "command", "workdir", "timeout", "progress", "notable"):
                if other in s:
                    c.error(f"{key}.{other}", s[other], "nothing: a step with an owner and instructions is done by "
                            "a person; give a host and a command instead for one the bot runs")
            host = command = None
        else:
            host = c.string(s, f"{key}.host", "host", expected="the name of a [hosts.*] entry")
            if host is not None and host not in (data.get("hosts") or {}):
                c.error(f"{key}.host", host, "the name of a [hosts.*] entry" + did_you_mean(host, hosts) + ": "
                        + ", ".join(sorted(hosts)))
            command = c.string(s, f"{key}.command", "command",
                               expected="the command to run on the host (or owner and instructions for a "
                                        "person's step)")
        planned = c.duration(s, f"{key}.planned", "planned", required=False)
        workdir = c.string(s, f"{key}.workdir", "workdir", required=False, expected="an absolute directory")
        if workdir is not None and not workdir.startswith(("/", "~")):
            c.error(f"{key}.workdir", workdir, "an absolute directory (starting with / or ~)")
        timeout = c.duration(s, f"{key}.timeout", "timeout", required=False)
        progress = c.regex(s, f"{key}.progress", "progress")
        if progress is not None:
            groups = set(progress.groupindex)
            if not ({"done", "total"} <= groups or "percent" in groups):
                c.error(f"{key}.progress", progress.pattern,
                        "a regular expression with named groups (?P<done>…) and (?P<total>…), or (?P<percent>…)")
        notable = c.regex(s, f"{key}.notable", "notable")
        depends = c.string_list(s, f"{key}.depends_on", "depends_on", expected="a list of earlier stage names",
                                required=False)
        for j, dep in enumerate(depends):
            if dep not in names:
                c.error(f"{key}.depends_on[{j}]", dep,
                        "the name of a stage defined before this one" + did_you_mean(dep, names)
                        + (": " + ", ".join(sorted(names)) if names else " (none is)"))
        required = s.get("required", True)
        if not isinstance(required, bool):
            c.error(f"{key}.required", required, "true or false")
            required = True
        if label:  # errors name the stage too, not only its place in the list
            c.errors[before:] = [e.replace(f": {key}", f": {key} (`{label}`)", 1) for e in c.errors[before:]]
        if name is not None:
            names.add(name)
        if manual and name and owner and instructions:
            stages.append(Stage(name=name, host="", command="", depends_on=depends, required=required,
                                owner=owner, instructions=instructions, planned=planned))
        elif not manual and name and host and command:
            stages.append(Stage(name=name, host=host, command=command, workdir=workdir, timeout=timeout,
                                progress=progress, notable=notable, depends_on=depends, required=required,
                                planned=planned))
    return tuple(stages)
