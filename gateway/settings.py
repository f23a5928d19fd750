"""Gateway settings from the environment (prefix `ROLLGATE_`), typed and frozen."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.safety import DEFAULT_DENY_PATTERNS

MIN_SECRET_CHARS = 16


class AuthMode(StrEnum):
    KEYS = "keys"  # every data-plane request needs a client API key
    NONE = "none"  # local use only: anyone may call, as one anonymous tenant


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLGATE_", frozen=True)

    routes_file: Path = Path("routes.yaml")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)  # to the first byte and between chunks
    shadow_queue_size: int = Field(default=256, ge=1)
    shadow_workers: int = Field(default=4, ge=1)
    shadow_stable_timeout: float = Field(default=120.0, gt=0)
    shadow_pairs: int = Field(default=200, ge=1)
    feedback_ttl: float = Field(default=3600.0, gt=0)
    feedback_capacity: int = Field(default=100_000, ge=1)
    deny_patterns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_DENY_PATTERNS))
    auth: AuthMode = AuthMode.KEYS
    # The bootstrap operator token (named `admin_token_name` in audit events); more
    # tokens, viewer or operator, are created through the admin API and stored hashed.
    admin_token: SecretStr | None = None
    admin_token_name: str = Field(default="bootstrap", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # Serve /admin (and the console) on this port only; the data-plane port then has none.
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    # Keys the cohort hash and feedback tokens; every replica must share it. Unset: one is
    # created in the state store on first start (the same store every replica uses).
    secret: SecretStr | None = None

    @field_validator("secret", mode="before")
    @classmethod
    def _strong_secret(cls, value: object) -> object:
        # Empty is unset (an env var can be set empty, not removed); short is guessable.
        if value in ("", None):
            return None
        if len(str(value)) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return value

    # The embedded control plane. `state`: a SQLite file, or redis://host:port/db for several
    # replicas. Without `prometheus_url` the controller reads this gateway's own windows.
    control_plane: bool = True
    state: str = ".rollgate/state.db"
    prometheus_url: str | None = None
    webhooks: list[str] = Field(default_factory=list)
    controller_tick_s: float = Field(default=1.0, gt=0)
    state_poll_s: float = Field(default=0.25, gt=0)
    lease_ttl_s: float = Field(default=5.0, gt=0)
    # Rollouts whose plan names an adapter directory: validated against this base (when
    # set; the gateway must see the same files as vLLM), then loaded on every replica.
    base_model_dir: Path | None = None
    base_model_name: str | None = None  # the base's served name; default: base_model_dir's
    max_lora_rank: int = Field(default=16, ge=1)  # vLLM's --max-lora-rank
    # A promoted rollout's old stable adapter is unloaded this long after the promotion
    # (time to promote back by hand); unset: it stays loaded.
    adapter_unload_after_s: float | None = Field(default=None, ge=0)
