"""Settings from the environment (prefix TASKFOLD_), with defaults for one machine."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the log is and how its topics are named and sized."""

    model_config = SettingsConfigDict(env_prefix="TASKFOLD_", extra="ignore")

    bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers; unset starts an embedded broker")
    topic_prefix: str = Field(default="taskfold.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(default=6, ge=1, le=1024, description="partitions of the events and progress topics")
    state_dir: Path = Field(default=Path(".taskfold"), description="local stores (RocksDB) and broker logs")
    actor: str | None = Field(default=None, description="who appends from this process; defaults to user@host")
