"""One settings class: every knob of the service, read from ``ORCH_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Signs pagination cursors. Unset: a random key per process, so replicas behind one
    # load balancer must share an explicit value.
    cursor_secret: str | None = None

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
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def task_lease(self) -> timedelta:
        return timedelta(seconds=self.task_lease_s)

    @property
    def max_reservation(self) -> timedelta:
        return timedelta(hours=self.max_reservation_hours)

    @property
    def history_retention(self) -> timedelta | None:
        return None if self.history_ttl_days is None else timedelta(days=self.history_ttl_days)
