"""Settings from the environment (prefix TASKFOLD_), with defaults for one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
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

    # /healthz, /readyz and /metrics of the worker and the agents: off unless a port is given
    http_host: str = Field(default="127.0.0.1", description="address the worker's and agents' probes listen on")
    worker_http_port: int | None = Field(default=None, ge=0, le=65535,
                                         description="port of `taskfold worker`'s probes; 0 picks a free one")
    agent_http_port: int | None = Field(default=None, ge=0, le=65535,
                                        description="port of `taskfold agent`'s probes; 0 picks a free one")


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class ClusterSettings(BaseSettings):
    """How every client uses the cluster: replication, group timeouts, appends, SASL and TLS.

    Read by `taskfold.broker.clients`, the one place that turns them into client kwargs.
    The defaults suit one machine and the embedded broker; production values are in the
    README ("Running on a cluster").
    """

    model_config = SettingsConfigDict(env_prefix="TASKFOLD_", extra="ignore")

    replication_factor: int = Field(default=1, ge=1, le=16, description="replicas of every topic we create, "
                                    "faust's changelogs included (production: 3)")
    min_insync_replicas: int = Field(default=1, ge=1, le=16, description="min.insync.replicas of those topics "
                                     "(production: 2); at most replication_factor")
    standby_replicas: int | None = Field(default=None, ge=0, le=8, description="standby copies of the worker's "
                                         "tables; default 1 on Kafka, 0 on Tansu")
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=60_000, description="the worker's group session "
                                    "on Kafka: a crashed worker's partitions stall this long")
    static_membership: bool = Field(default=False, description="workers join with group.instance.id "
                                    "<prefix><worker id>@<host>: a restart within the session keeps its partitions")
    append_timeout_s: float = Field(default=30.0, gt=0, le=600, description="longest wait for the acks of one append")
    append_window_ms: float = Field(default=5.0, ge=0, le=1000, description="how long an agent gathers its "
                                    "reports, and a gateway its concurrent writes, into one append (one batch)")
    append_busy_window_ms: float = Field(default=25.0, ge=0, le=1000, description="the same window while appends "
                                         "keep coming (a round opened within the last 100 ms): more per batch "
                                         "under load, the short window for a lone append")
    events_retention_allowed: bool = Field(default=False, description="accept an existing events topic that "
                                           "deletes records (retention.ms/bytes not -1)")
    security_protocol: SecurityProtocol | None = Field(default=None, description="default: from the SASL and "
                                                       "TLS settings given, PLAINTEXT without any")
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle; default: the system's")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client key (mutual TLS)")
    ssl_key_password: SecretStr | None = None

    @property
    def protocol(self) -> SecurityProtocol:
        """The security protocol, explicit or derived from the settings given."""
        if self.security_protocol is not None:
            return self.security_protocol
        tls = any(f is not None for f in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile))
        if self.sasl_mechanism is not None:
            return "SASL_SSL" if tls else "SASL_PLAINTEXT"
        return "SSL" if tls else "PLAINTEXT"

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas={self.min_insync_replicas} is more than "
                             f"replication_factor={self.replication_factor}: every acks=all write would fail")
        sasl = self.protocol.startswith("SASL")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"security protocol {self.protocol} needs sasl_mechanism, sasl_username "
                             "and sasl_password")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(f"SASL settings are given but the security protocol is {self.protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS needs both)")
        if not self.protocol.endswith("SSL") and any((self.ssl_cafile, self.ssl_certfile)):
            raise ValueError(f"TLS files are given but the security protocol is {self.protocol}")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self


def first_error(exc: ValidationError) -> str:
    """The first problem of a settings error, naming its environment variable."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"TASKFOLD_{where.upper()}: {error['msg']}" if error["loc"] else error["msg"]


def environment_problem() -> str | None:
    """Why the TASKFOLD_* environment is not valid, or None: every command checks it first."""
    try:
        Settings()
        ClusterSettings()
    except ValidationError as exc:
        return first_error(exc)
    return None


def gateway_store(settings: Settings, name: str) -> Path:
    """The projection store of the gateway called `name` (its port, unless named)."""
    return settings.state_dir / "gateway" / name
