"""Settings from the environment (and a ``.env`` file, if present).

Secrets never appear in an error: a message names the variable and what was
expected, not the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values


DEFAULT_SLACK_API_URL = "https://slack.com/api/"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")


class SettingsError(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None
    slack_app_token: str | None
    slack_signing_secret: str | None
    slack_api_url: str
    digitalocean_token: str | None
    digitalocean_end_point: str | None
    plan_path: str
    db_path: str
    log_level: str = "INFO"
    log_format: str = "text"
    start_retry: str = "300"  # CUTOVER_START_RETRY: seconds to keep trying an unreachable Slack at start
    replica_url: str | None = None  # CUTOVER_REPLICA_URL: where Litestream replicates the database
    environ: dict[str, str] | None = None  # the rest of the environment, for the replica's credentials

    @property
    def start_retry_seconds(self) -> float:
        """How long ``cutover run`` keeps retrying a Slack it cannot reach before it exits 4 (checked by
        ``problems``; 300 when unreadable)."""
        try:
            seconds = float(self.start_retry)
        except ValueError:
            return 300.0
        return seconds if 0 <= seconds <= 86400 else 300.0

    @property
    def log_dir(self) -> Path:
        """Where full stage logs are kept, beside the database."""
        db = Path(self.db_path).resolve()
        return db.parent / f"{db.stem}-logs"

    def secrets(self) -> list[str]:
        """Values that must never be posted, logged or echoed."""
        replica = [v for k, v in (self.environ or {}).items() if k.endswith(("SECRET_ACCESS_KEY", "SESSION_TOKEN"))]
        return [v for v in (self.slack_bot_token, self.slack_app_token, self.slack_signing_secret,
                            self.digitalocean_token, *replica) if v]

    def require(self, mode: str) -> None:
        """Check what a run mode needs; raises SettingsError naming each missing variable."""
        errors = self.problems(mode)
        if errors:
            raise SettingsError(errors)

    def problems(self, mode: str) -> list[str]:
        """Every setting a run mode (``socket`` or ``http``) needs and lacks, by variable; never a value."""
        errors: list[str] = []
        if not self.slack_bot_token or not self.slack_bot_token.startswith("xoxb-"):
            errors.append("SLACK_BOT_TOKEN: expected a bot token starting with xoxb- "
                          "(OAuth & Permissions page of the Slack app)")
        if mode == "socket" and (not self.slack_app_token or not self.slack_app_token.startswith("xapp-")):
            errors.append("SLACK_APP_TOKEN: expected an app-level token starting with xapp- with the "
                          "connections:write scope (Basic Information page), needed for Socket Mode")
        if mode == "http" and not self.slack_signing_secret:
            errors.append("SLACK_SIGNING_SECRET: expected the signing secret (Basic Information page), "
                          "needed for HTTP mode")
        if self.log_level not in LEVELS:
            errors.append(f"LOG_LEVEL: expected one of {', '.join(LEVELS)} (got `{self.log_level[:20]}`)")
        if self.log_format not in FORMATS:
            errors.append(f"LOG_FORMAT: expected `text` or `json` (got `{self.log_format[:20]}`)")
        if not self.slack_api_url.startswith(("http://", "https://")):
            errors.append("SLACK_API_URL: expected an http:// or https:// URL such as https://slack.com/api/")
        try:
            retry = float(self.start_retry)
        except ValueError:
            retry = -1.0
        if not 0 <= retry <= 86400:
            errors.append(f"CUTOVER_START_RETRY: expected seconds from 0 to 86400 (got `{self.start_retry[:20]}`)")
        if self.replica_url:
            problem = replica_url_problem(self.replica_url, self.environ or {})
            if problem:
                errors.append(problem)
        return errors


def load_settings(environ: dict[str, str] | None = None, env_file: str | Path = ".env") -> Settings:
    """Read settings; the process environment wins over the .env file."""
    values: dict[str, str | None] = {}
    if environ is None:
        if Path(env_file).is_file():
            values.update(dotenv_values(env_file))
        values.update(os.environ)
    else:
        values.update(environ)

    def get(name: str) -> str | None:
        value = values.get(name)
        return value.strip() if value and value.strip() else None

    api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    if not api_url.endswith("/"):
        api_url += "/"
    return Settings(
        slack_bot_token=get("SLACK_BOT_TOKEN"),
        slack_app_token=get("SLACK_APP_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_api_url=api_url,
        digitalocean_token=get("DIGITALOCEAN_ACCESS_TOKEN"),
        digitalocean_end_point=get("DIGITALOCEAN_END_POINT"),
        plan_path=get("CUTOVER_PLAN") or "cutover.toml",
        db_path=get("CUTOVER_DB") or "cutover.db",
        log_level=(get("LOG_LEVEL") or "INFO").upper(),
        log_format=(get("LOG_FORMAT") or "text").lower(),
        start_retry=get("CUTOVER_START_RETRY") or "300",
        replica_url=get("CUTOVER_REPLICA_URL"),
        environ={k: v for k, v in values.items() if v is not None and k.startswith(("LITESTREAM_", "AWS_"))},
    )


REPLICA_SCHEMES = ("s3://", "gs://", "abs://", "sftp://", "file://")


def replica_url_problem(url: str, environ: dict[str, str]) -> str | None:
    """What is wrong with a CUTOVER_REPLICA_URL (and, for S3, its credentials), or None."""
    if url.startswith("/"):
        return None
    if not url.startswith(REPLICA_SCHEMES):
        return (f"CUTOVER_REPLICA_URL: expected an s3://, gs://, abs://, sftp:// or file:// URL, or an absolute path "
                f"(got `{url[:40]}`)")
    if url.startswith("s3://") and not any(environ.get(k) for k in (
            "LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")):
        return ("CUTOVER_REPLICA_URL: an s3:// replica needs credentials: set LITESTREAM_ACCESS_KEY_ID and "
                "LITESTREAM_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    return None
