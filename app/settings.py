"""One settings class: every knob of the service, read from ``ORCH_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from string import Formatter
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.identity import Role
from app.networks import parse_networks

# Asymmetric only: a JWKS holds public keys, and HS* would make a public key a secret.
JwtAlgorithm = Literal["RS256", "ES256"]
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class FixedRole(BaseModel):
    """Every token of the issuer gets this role (CI systems: ``{"fixed": "ci"}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed: Role


class JwtIssuer(BaseModel):
    """One trusted issuer of JWT bearer tokens (an element of ``ORCH_JWT_ISSUERS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)  # the exact `iss`
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = Field(default=3600.0, gt=0)
    jwks_refresh_min_s: float = Field(default=60.0, ge=0)
    algorithms: list[JwtAlgorithm] = Field(default=["RS256"], min_length=1)
    audience: str = Field(min_length=1)
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    # Claim mapping: a claim name, or for the subject a template such as "{project_path}@{ref}".
    subject: str = Field(default="sub", min_length=1)
    role: str | FixedRole  # a claim name, or {"fixed": "<role>"}
    team: str | None = None  # claim name
    bench_id: str | None = None  # claim name, for agents

    @field_validator("algorithms", mode="before")
    @classmethod
    def _asymmetric_only(cls, value: object) -> object:
        if isinstance(value, list):
            for name in value:
                if name not in ("RS256", "ES256"):
                    raise ValueError(f"algorithm {name!r} is refused: use RS256 and/or ES256")
        return value

    @field_validator("subject")
    @classmethod
    def _plain_template(cls, value: str) -> str:
        for _, field, spec, conversion in Formatter().parse(value):
            if field is None:
                continue
            if not field or spec or conversion or not field.replace("_", "a").isalnum():
                raise ValueError(f"subject template field {{{field}}} must be a bare claim name")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtIssuer:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError(f"issuer {self.issuer!r}: set exactly one of jwks_file, jwks_url")
        if self.jwks_url is not None:
            parts = urlsplit(self.jwks_url)
            local = parts.scheme == "http" and parts.hostname in _LOOPBACK
            if parts.scheme != "https" and not local:
                raise ValueError(f"issuer {self.issuer!r}: jwks_url must be https")
        if "{" in self.subject and not self.subject_claims():
            raise ValueError(f"issuer {self.issuer!r}: the subject template names no claim")
        if isinstance(self.role, FixedRole) and self.role.fixed is Role.AGENT and not self.bench_id:
            raise ValueError(f"issuer {self.issuer!r}: agents need a bench_id claim")
        return self

    def subject_claims(self) -> list[str]:
        """The claims the subject is made of (one claim name, or a template's fields)."""
        fields = [field for _, field, _, _ in Formatter().parse(self.subject) if field]
        return fields if "{" in self.subject else [self.subject]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    store: Literal["sqlite", "dynamodb"] = "sqlite"
    sqlite_path: str = "./var/orchestrator.db"

    dynamodb_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    table_prefix: str = "orch-"
    # Creating tables at start-up is for local stacks (compose, moto); production uses IaC.
    create_tables: bool = False

    tokens_file: Path = Path("./var/tokens.json")
    # Issuers whose JWTs are accepted beside the tokens file (JSON in the environment).
    jwt_issuers: list[JwtIssuer] = []
    # Signs pagination cursors. Unset: the key in cursor_secret_file when that exists
    # (`orchestrator serve` makes one for the embedded SQLite store), else a random key per
    # process; replicas behind one load balancer must share one key either way.
    cursor_secret: str | None = None
    cursor_secret_file: Path = Path("./var/cursor-secret")

    # The longest reservation window; at most LONGEST_WINDOW (31 days) in any deployment.
    max_reservation_hours: int = Field(default=168, ge=1, le=744)

    # How long a claimed task is leased before it must be heartbeated or completed.
    task_lease_s: int = Field(default=60, ge=1, le=3600)
    # Period of the housekeeping loop in each API process; 0 turns the loop off.
    housekeeping_interval_s: float = Field(default=15.0, ge=0)

    # Keep history entries this many days, then let them expire (DynamoDB TTL; SQLite reads
    # skip them). Unset: kept for ever. The archive in S3 keeps everything regardless.
    history_ttl_days: int | None = Field(default=None, ge=1)

    # Requests per second per caller, in each process, with bursts up to rate_limit_burst;
    # 0 turns limiting off.
    # The event log: how long events are kept (a stream resumes within it, 410 beyond), and
    # how soon before a reservation's end `reservation.ending_soon` is raised.
    event_retention_h: int = Field(default=168, ge=1, le=24 * 90)
    ending_soon_min: int = Field(default=15, ge=1, le=24 * 60)
    # DynamoDB only: the log is read up to this long ago, so a transaction that started
    # earlier but committed later is not skipped (SQLite commits in log order).
    event_settle_ms: int = Field(default=1000, ge=0, le=60_000)
    # How often an open stream (and the webhook relay) looks for new events.
    event_poll_ms: int = Field(default=250, ge=10, le=10_000)
    # An idle stream sends a comment line this often, so proxies do not close it.
    event_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    # A stream ends (cleanly) after this long; clients resume with Last-Event-ID, so no
    # connection lives for ever and clients spread over new replicas after a deploy.
    event_stream_max_s: float = Field(default=3600.0, gt=0)
    # Webhook targets on these networks are allowed although private or loopback
    # (comma-separated CIDRs, e.g. "127.0.0.0/8,10.20.0.0/16").
    webhook_allow_networks: str = ""
    # Whether this process fans events out to webhooks and sends them (every replica may;
    # claims keep each attempt to one sender).
    webhook_delivery: bool = True
    # An attempt that gets no answer within this long has failed; a claimed attempt is
    # given three times as long before another sender may take it over.
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=30)
    # Holds that end themselves: a started reservation nobody checked in to is released
    # after the grace (0: never; per bench type in the JSON map), and one without
    # activity for idle_release_min is warned at half of it and released at all of it.
    no_show_grace_min: int = Field(default=15, ge=0, le=24 * 60)
    no_show_grace_by_type: dict[str, int] = {}
    idle_release_min: int = Field(default=0, ge=0, le=7 * 24 * 60)
    # Bench health: reservations on an unfit bench that are under way or start within the
    # horizon are marked at risk (and healed); the agent is asked to check health when a
    # window starts within pre_booking_check_min; quarantine after that many consecutive
    # failing health reports or infrastructure failures (0: never); auto_clear: that many
    # consecutive passing reports end an automatic quarantine (0: only an admin does).
    at_risk_horizon_h: float = Field(default=24, gt=0, le=31 * 24)
    pre_booking_check_min: int = Field(default=10, ge=0, le=24 * 60)
    quarantine_after_health_failures: int = Field(default=3, ge=0, le=1000)
    quarantine_after_infra_failures: int = Field(default=3, ge=0, le=1000)
    quarantine_auto_clear: int = Field(default=0, ge=0, le=1000)
    # Quotas of users (and of teams) that no admin set one for; unset: no limit.
    quota_max_booked_hours_7d: float | None = Field(default=None, gt=0)
    quota_max_concurrent: int | None = Field(default=None, ge=1)
    quota_max_window_hours: float | None = Field(default=None, gt=0)
    team_quota_max_booked_hours_7d: float | None = Field(default=None, gt=0)
    team_quota_max_concurrent: int | None = Field(default=None, ge=1)
    team_quota_max_window_hours: float | None = Field(default=None, gt=0)
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    log_level: str = "INFO"
    # auto: human-readable lines when stderr is a terminal, JSON lines otherwise.
    log_format: Literal["auto", "console", "json"] = "auto"
    host: str = "127.0.0.1"
    port: int = 8000

    # --- the lab dashboard (/ui, app/ui) --------------------------------------------------
    # Signs the dashboard's session cookies and CSRF tokens; set the same value on every
    # replica. Unset: a key derived from the cursor secret (which replicas share already).
    ui_session_secret: str | None = None
    # A signed-in session lasts this long (and never longer than its token is accepted).
    ui_session_ttl_min: int = Field(default=480, ge=1, le=60 * 24 * 30)

    @field_validator("jwt_issuers")
    @classmethod
    def _issuers_unique(cls, value: list[JwtIssuer]) -> list[JwtIssuer]:
        names = [issuer.issuer for issuer in value]
        if len(set(names)) != len(names):
            raise ValueError("each issuer may be listed once")
        return value

    def stored_cursor_secret(self) -> str | None:
        """The key kept in ``cursor_secret_file``; None when there is no such file (or it
        is empty). A file that exists but cannot be read is an error, not a random key."""
        try:
            return self.cursor_secret_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    @property
    def task_lease(self) -> timedelta:
        return timedelta(seconds=self.task_lease_s)

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # raises, naming the network that is not one
        return value

    @property
    def event_retention(self) -> timedelta:
        return timedelta(hours=self.event_retention_h)

    @property
    def ending_soon(self) -> timedelta:
        return timedelta(minutes=self.ending_soon_min)

    @property
    def max_reservation(self) -> timedelta:
        return timedelta(hours=self.max_reservation_hours)

    @property
    def history_retention(self) -> timedelta | None:
        return None if self.history_ttl_days is None else timedelta(days=self.history_ttl_days)
