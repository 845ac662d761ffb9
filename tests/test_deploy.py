"""The ways to deploy it, exercised without Docker: the Dockerfile's install and start steps run in a fresh virtual
environment the way the image runs them, and the systemd unit points at what that install makes.

``scripts/docker-smoke`` builds and runs the real image where a Docker engine exists.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import start_bot_process

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (instruction, argument), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages


def test_the_images_install_and_start_steps_work_in_a_fresh_virtual_environment(slack, tmp_path):
    build, final = dockerfile_stages()
    venv, data, config = tmp_path / "opt-cutover", tmp_path / "data", tmp_path / "config"
    places = {"/opt/cutover": str(venv), "/data": str(data), "/config": str(config)}

    def here(text: str) -> str:
        for image_path, local in places.items():
            text = re.sub(rf"{re.escape(image_path)}(?=/|\b|$)", local, text)
        return text

    # The build stage: only what its COPY lines bring is in the context, then its RUN lines.
    src = tmp_path / "src"
    src.mkdir()
    for instruction, argument in build:
        if instruction == "COPY":
            *sources, dest = argument.split()
            for source in sources:
                target = src / dest if dest.endswith("/") else src / dest.removeprefix("./")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, src / Path(source).name if dest.endswith("/") else target)
        elif instruction == "RUN":
            command = here(argument).replace("python -m venv", f"{shlex.quote(sys.executable)} -m venv")
            done = subprocess.run(["sh", "-c", command], cwd=src, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"RUN {argument}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (venv / "bin" / "cutover").exists()

    # The final stage: its environment, user, volume, health check and command.
    steps = dict((i, a) for i, a in final if i != "ENV")
    env_lines = " ".join(a for i, a in final if i == "ENV")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key, value in re.findall(r"(\w+)=(\S+)", env_lines):
        env[key] = here(value).replace("$PATH", env["PATH"])
    assert steps["USER"] not in ("root", "0") and "/data" in steps["VOLUME"]
    assert env["CUTOVER_DB"].startswith(str(data)), "the database must be on the volume"
    data.mkdir()
    config.mkdir()
    # As docker-compose.yml mounts them: the plan, and the key and known_hosts under /config/ssh.
    (config / "ssh").mkdir()
    (config / "ssh" / "cutover_ed25519").write_text("a private key\n")
    (config / "ssh" / "known_hosts").write_text("")
    Path(env["CUTOVER_PLAN"]).write_text(here((ROOT / "cutover.example.toml").read_text()
                                              .replace('"~/.ssh/', '"/config/ssh/')))
    env.update({"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
                "SLACK_API_URL": slack.api_url})
    entrypoint, cmd = _exec_form(steps["ENTRYPOINT"]), _exec_form(steps["CMD"])
    healthcheck = _exec_form(steps["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert shutil.which(entrypoint[0], path=env["PATH"]) == str(venv / "bin" / "cutover")

    def health() -> subprocess.CompletedProcess:
        return subprocess.run(healthcheck, env=env, cwd=data, capture_output=True, text=True, timeout=30)

    version = subprocess.run([*entrypoint, "--version"], env=env, capture_output=True, text=True, timeout=30)
    assert re.fullmatch(r"cutover \d+\.\d+\.\d+\n", version.stdout), version.stdout + version.stderr
    assert health().returncode == 1, "not ready before it has started"
    bot = start_bot_process(slack, env, data, argv=[*entrypoint, *cmd])
    try:
        slack.wait_for(lambda: health().returncode == 0, 30, "the image's HEALTHCHECK to pass")
    finally:
        bot.send_signal(getattr(signal, steps["STOPSIGNAL"]))
        assert bot.wait(20) == 0
    assert health().returncode == 1, "not ready once stopped"
    assert (data / "cutover.db").exists()


def _exec_form(argument: str) -> list[str]:
    import json

    return json.loads(argument)


def test_the_systemd_unit_runs_what_the_virtual_environment_install_makes():
    unit = (ROOT / "deploy" / "cutover.service").read_text()
    values = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert values["ExecStart"] == "/opt/cutover/bin/cutover run"
    assert values["User"] == "cutover" and values["KillMode"] == "mixed"
    assert "CUTOVER_DB=/var/lib/cutover/" in values["Environment"] and values["StateDirectory"] == "cutover"
    assert "/var/lib/cutover" in values["ReadWritePaths"]
    # A bad setting (2) is not restarted: a restart would not fix it. A lost thread (3) and Slack unreachable for
    # the whole start window (4) are: a new process can get on.
    from bot.cli import EXIT_BAD_SETTING, EXIT_THREAD_LOST, EXIT_UNREACHABLE

    assert values["Restart"] == "on-failure"
    assert values["RestartPreventExitStatus"].split() == [str(EXIT_BAD_SETTING)]
    assert {EXIT_THREAD_LOST, EXIT_UNREACHABLE}.isdisjoint({EXIT_BAD_SETTING, 0})


def _assignments(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile and `docker run --env-file` read them (# starts a comment)."""
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def test_the_example_env_file_keeps_the_plan_and_database_where_the_unit_and_the_image_put_them():
    """An EnvironmentFile overrides the unit's Environment=, and --env-file the image's ENV: an example that set
    CUTOVER_PLAN=cutover.toml moved the plan into the working directory and the bot exited 2."""
    example = _assignments((ROOT / ".env.example").read_text())
    unit = (ROOT / "deploy" / "cutover.service").read_text()
    unit_env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^Environment=(.*)$", unit, re.M).group(1)))
    assert re.search(r"^EnvironmentFile=", unit, re.M), "the unit reads the env file"
    under_systemd = {**unit_env, **example}
    _, final = dockerfile_stages()
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in final if i == "ENV")))
    under_docker = {**image_env, **example}
    for name in ("CUTOVER_PLAN", "CUTOVER_DB"):
        assert under_systemd[name] == unit_env[name] and under_docker[name] == image_env[name], name
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "CUTOVER_PLAN: /config/cutover.toml" in compose  # compose's environment: wins over env_file anyway
    # Nothing set empty: an empty value set in the environment is a value to every library that reads it.
    assert all(value.strip() for key, value in example.items() if key != "DIGITALOCEAN_ACCESS_TOKEN"), example
    # Every variable the bot reads is in the example, set or commented.
    import inspect

    from bot import settings

    read = set(re.findall(r'get\("([A-Z_]+)"\)', inspect.getsource(settings.load_settings)))
    text = (ROOT / ".env.example").read_text()
    assert {name for name in read if not re.search(rf"^#?{name}=", text, re.M)} == set()
