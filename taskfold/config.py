"""Settings from the environment (prefix TASKFOLD_), with defaults for one machine."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskfold.core.fold.limits import PAYLOAD_HARD_MAX_BYTES

DEFAULT_MAX_PAYLOAD_BYTES = 524_288  # 512 KiB: a submit or a completion stays far under 1 MB records


class Limits(BaseSettings):
    """The size limit every writer applies (read alone by writers that need no other setting)."""

    model_config = SettingsConfigDict(env_prefix="TASKFOLD_", extra="ignore")

    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1024, le=PAYLOAD_HARD_MAX_BYTES,
                                   description="largest task payload or result (UTF-8 JSON text) a writer "
                                               "appends; larger ones are refused naming this limit")


class Settings(Limits):
    """Where the log is and how its topics are named and sized."""

    model_config = SettingsConfigDict(env_prefix="TASKFOLD_", extra="ignore")

    bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers; unset starts an embedded broker")
    topic_prefix: str = Field(default="taskfold.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(default=6, ge=1, le=1024, description="partitions of the events and progress topics")
    state_dir: Path = Field(default=Path(".taskfold"), description="local stores (RocksDB) and broker logs")
    actor: str | None = Field(default=None, description="who appends from this process; defaults to user@host")

    # the HTTP gateway (`taskfold gateway`, and the one `taskfold dev` starts)
    gateway_host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="port of the gateway; 0 picks a free one")
    gateway_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                     description="names the gateway's store <state_dir>/gateway/<name>; "
                                                 "default: its port")
    tokens_file: Path | None = Field(default=None, description="bearer tokens and roles, JSON or TOML")
    tokens: SecretStr | None = Field(default=None, description="bearer tokens as TOKEN:ROLES[:AGENT_ID],...")
    gateway_max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger request bodies get 413")
    gateway_write_timeout_s: float = Field(default=10.0, gt=0,
                                           description="read-your-write wait before a write answers 503")
    gateway_batch_max: int = Field(default=1000, ge=1, le=100_000, description="tasks in one batch submit")
    gateway_catch_up_timeout_s: float = Field(default=60.0, ge=0,
                                              description="start-up wait for the projection to catch up")


def gateway_store(settings: Settings, name: str) -> Path:
    """The projection store of the gateway called `name` (its port, unless named)."""
    return settings.state_dir / "gateway" / name
