"""Configuration from the environment (``FIFOFLOW_*``), read once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob a deployment may need; the contract fixes the first three names."""

    model_config = SettingsConfigDict(env_prefix="FIFOFLOW_", extra="ignore")

    url: str | None = Field(default=None, description="redis://, rediss:// or unix:// URL")
    home: Path = Field(default=Path.home() / ".fifoflow")
    queue: str = "default"

    #: Lease of a claimed job; heartbeats renew it every third of it.
    lease_seconds: float = 10.0
    #: How long finished job records (results, dead letters) are kept.
    result_ttl_seconds: int = 7 * 24 * 3600
    #: Exponential back-off of retries: base * 2**(failures-1), capped, times a jitter in [0.5, 1].
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    #: A job whose worker is lost more than this many times is dead (a poison job).
    max_lost: int = Field(default=2, ge=0)
    #: Abandoned threads (thread-slot jobs past their timeout) a worker tolerates; at the
    #: cap it drains and starts afresh (the CLI re-executes itself).
    max_abandoned: int = Field(default=8, ge=1)
    #: Embedded server durability: "everysec" (default) or "always".
    appendfsync: str = "everysec"
    #: How long a backfill remembers the intervals it pushed (a re-run within it pushes
    #: nothing again); 0: for ever.
    once_ttl_seconds: int = Field(default=400 * 24 * 3600, ge=0)
    #: Largest accepted params document, in bytes of JSON.
    max_params_bytes: int = 1024 * 1024
    #: Seconds to wait for a connection before giving up with a clear error.
    connect_timeout: float = 3.0
    #: Seconds to wait for any reply. Every blocking wait is shorter (half of it at most),
    #: so a timeout always means a lost reply or a dead server, never an idle one.
    socket_timeout: float = Field(default=10.0, gt=0)
    #: Accept a server that evicts keys under memory pressure (it can lose jobs silently).
    allow_eviction: bool = False
    #: Alert thresholds (``fifoflow monitor``): more queued jobs in a queue, more dead
    #: letters, an older oldest queued job (seconds). 0 (or empty) turns one off.
    alert_max_queued: int = Field(default=100, ge=0)
    alert_max_dead: int = Field(default=10, ge=0)
    alert_max_age: float = Field(default=600.0, ge=0)

    #: "local" (default): a push or a completion is acknowledged once the primary has
    #: applied it. "replicated": once one replica has it too (``WAIT 1``), so a failover
    #: loses nothing acknowledged (docs/scaling.md).
    durability: Literal["local", "replicated"] = "local"
    #: With durability "replicated": how long one call waits for a replica (seconds)
    #: before it is sent again (each send is idempotent).
    replica_timeout: float = Field(default=2.0, gt=0)
    #: On a cluster or under Sentinel: how long a producer's call keeps re-sending while
    #: a primary fails over, before it gives up (seconds). Workers retry for ever.
    failover_seconds: float = Field(default=30.0, ge=0)

    @field_validator("alert_max_queued", "alert_max_dead", "alert_max_age", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return 0 if isinstance(value, str) and not value.strip() else value


def get_settings() -> Settings:
    """Fresh settings: tests and CLI change the environment between calls."""
    return Settings()
