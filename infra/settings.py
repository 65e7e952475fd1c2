"""Process settings from the environment (and nothing else, so every process agrees).

    COUNTERPOINT_CONFIG              the project file (counterpoint.toml) when no --config
                                     is given; unset = ./counterpoint.toml if there is one,
                                     else the built-in pipeline (infra/project.py)
    KAFKA_BOOTSTRAP_SERVERS          broker to use; unset = the embedded broker
    COUNTERPOINT_BROKER_HOST/PORT    where the embedded broker listens (127.0.0.1:9092)
    COUNTERPOINT_HOME                local state: actions.db, traces/, logs/ (./.counterpoint)
    COUNTERPOINT_FETCH_MODE          auto (default), adaptive or long-poll: how consumers
                                     fetch (bus/fetching.py); auto = adaptive on the embedded
                                     broker, which does not wake waiting fetches
    COUNTERPOINT_FETCH_MAX_WAIT_MS   how long the broker may hold a fetch that found nothing
                                     (5 adaptive, 500 long-poll)
    COUNTERPOINT_IDLE_POLL_MAX_MS    adaptive: longest wait between two fetches of an idle
                                     consumer, for publishers that do not nudge (2000)
    COUNTERPOINT_KAFKA_IDEMPOTENCE   idempotent producer; only where the broker supports
                                     InitProducerId (Apache Kafka: yes; embedded: no)
    COUNTERPOINT_KAFKA_LEAVE_GROUP   send LeaveGroup when a consumer stops, so its partitions
                                     move at once (Apache Kafka: worth it; embedded: no,
                                     it can leave a group stuck; off by default)
    COUNTERPOINT_SESSION_TIMEOUT_MS  consumer group session timeout (2000 on the embedded broker,
                                     which makes every join wait half of it; 6000 on Kafka)
    COUNTERPOINT_MAX_IN_FLIGHT       events one agent process handles at once (64)
    COUNTERPOINT_MAX_MESSAGE_BYTES   larger records are dead-lettered (1 MiB)
    COUNTERPOINT_MAX_JSON_DEPTH      deeper JSON is dead-lettered (32)
    COUNTERPOINT_RETRY_MAX_ATTEMPTS / _MAX_SECONDS  bounds for retriable failures (5, 60 s)
    COUNTERPOINT_LLM_FAULT_RATE      test aid: share of LLM calls that fail, retriably (0)
    COUNTERPOINT_LLM_FAULT_SEED      test aid: seed for those faults (random when unset)
    COUNTERPOINT_SYNTHESIS_DEADLINE_S  seconds synthesis waits before a partial result (30)
    COUNTERPOINT_MODEL_<AGENT>       model per agent, e.g. COUNTERPOINT_MODEL_SYNTHESIS
    ANTHROPIC_API_KEY                empty or unset = the offline provider; set = Claude
    ANTHROPIC_BASE_URL               the Messages API's base URL (unset = api.anthropic.com)
    COUNTERPOINT_FALLBACK_MODEL      model asked when an agent's model is overloaded; unset =
                                     haiku and sonnet stand in for each other; `none` = none
    COUNTERPOINT_LLM_TIMEOUT_S       seconds one Claude call may take (60)
    COUNTERPOINT_APPROVAL_THRESHOLD  actions above this risk wait for a person: none (all
                                     wait), low (default), medium, high (none waits)
    COUNTERPOINT_APPROVAL_TTL_S      seconds an approval waits before it expires and
                                     escalates (3600)
    COUNTERPOINT_ACTION_RISK         risk per action kind over the defaults, as a JSON object
                                     ({"restart_service": "high"}) or the path of a JSON file
    COUNTERPOINT_PRICES              model prices, JSON or a JSON file (agents/cost.py)
    COUNTERPOINT_REQUEST_BUDGET_USD  default budget per request (unset = no limit)
    COUNTERPOINT_REUSE_WINDOW_S      identical investigations within it run once (600)
    COUNTERPOINT_MEMORY_DB           past outcomes' SQLite file ($COUNTERPOINT_HOME/memory.db)
    COUNTERPOINT_MAX_TOOL_TURNS      model turns of one investigation that may call tools
                                     before it must answer (4; 0 = no tools)
    COUNTERPOINT_WEBHOOKS            JSON: where results are POSTed, by request source, kind
                                     or "*", e.g. {"alert": "https://ops.example/hook"} ({})
    COUNTERPOINT_WEBHOOK_SECRET      HMAC-SHA256 key signing webhook deliveries (unset =
                                     unsigned, with a warning)
    COUNTERPOINT_WEBHOOK_TIMEOUT_S   seconds one webhook POST may take (10)
    COUNTERPOINT_<PROVIDER>_WEBHOOK_SECRET  the gateway's provider webhooks (ZENDESK, JIRA,
                                     GITHUB, PAGERDUTY, GRAFANA): the secret their signatures
                                     are checked with; unset = that provider is refused (503)
    COUNTERPOINT_SIGNATURE_TOLERANCE_S  how far from now a provider's signed timestamp may be
                                     (Zendesk, Grafana) before it is refused as a replay (300)
    COUNTERPOINT_KEYS_DIR            approval signing keys, one PEM per role
                                     ($COUNTERPOINT_HOME/keys; infra/approval_keys.py)
    COUNTERPOINT_TRUST               the trust file: which key may sign which kind of approval
                                     event (unset = $COUNTERPOINT_KEYS_DIR/trust.json, made
                                     with development keys when absent)
    COUNTERPOINT_APPROVER            who the CLI decides as, when its key binds no identity
                                     (unset = your user name)
    COUNTERPOINT_APPROVERS           the gateway's approvers: JSON {name: token or
                                     "sha256:<hex of the token's SHA-256>"}, or a file of it
    COUNTERPOINT_WEBHOOK_HOSTS       host names a callback_url may name, comma-separated
                                     (`hooks.example.com, *.example.org`; unset = any)
    COUNTERPOINT_WEBHOOK_NETWORKS    networks deliveries may reach although not public,
                                     comma-separated (`10.0.0.0/8, 127.0.0.1/32`; unset =
                                     public addresses only; agents/webhook_egress.py)
    COUNTERPOINT_MAX_ALERTS          alerts one Alertmanager notification may carry (1000)
    COUNTERPOINT_DEMO_BUSINESS_URL   the demo business server the built-in agents use when the
                                     project file names no other tools (http://127.0.0.1:7300/mcp)
    COUNTERPOINT_TOOL_CONNECT_TIMEOUT_S  seconds an agent waits at start-up for its tool
                                     servers to answer, trying again meanwhile, before it
                                     fails (60)
    COUNTERPOINT_METRICS_PORT        each agent process serves Prometheus /metrics on this
                                     port; 0 = a free port per process, logged and written to
                                     $COUNTERPOINT_HOME/metrics/ for file discovery; unset =
                                     no endpoint (infra/metrics.py)
    COUNTERPOINT_METRICS_HOST        the address it listens on (127.0.0.1)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from counterpoint.bus.decode import InputLimits
from counterpoint.bus.delivery import RetryPolicy
from counterpoint.bus.kafka import KafkaConfig
from counterpoint.schemas.alert_cap import DEFAULT_MAX_ALERTS

if TYPE_CHECKING:
    from counterpoint.agents.approval_policy import ApprovalPolicy
    from counterpoint.agents.signing import Keyring

# COUNTERPOINT_MODEL_<AGENT>: one variable per agent, so no field can name them all.
MODEL_PREFIX = "COUNTERPOINT_MODEL_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERPOINT_", extra="ignore")

    config: Path | None = None
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=9092, ge=1, le=65535)
    home: Path = Path(".counterpoint")
    fetch_mode: Literal["auto", "adaptive", "long-poll"] = "auto"
    fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=60_000)
    idle_poll_max_ms: int = Field(default=2_000, ge=100, le=60_000)
    kafka_idempotence: bool = False
    kafka_leave_group: bool = False
    session_timeout_ms: int | None = Field(default=None, ge=1_000, le=300_000)  # None: by broker
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    max_message_bytes: int = Field(default=1_048_576, ge=1_024)
    max_json_depth: int = Field(default=32, ge=2, le=512)
    retry_max_attempts: int = Field(default=5, ge=1, le=100)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    # Test aid: the offline provider fails this share of calls with retriable errors.
    llm_fault_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    llm_fault_seed: int | None = None
    synthesis_deadline_s: float = Field(default=30.0, gt=0)
    anthropic_api_key: str | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, validation_alias="ANTHROPIC_BASE_URL")
    fallback_model: str | None = None
    llm_timeout_s: float = Field(default=60.0, gt=0, le=600)
    approval_threshold: Literal["none", "low", "medium", "high"] = "low"
    approval_ttl_s: float = Field(default=3600.0, gt=0)
    action_risk: str | None = None

    @field_validator("action_risk")
    @classmethod
    def _risk_table(cls, v: str | None) -> str | None:
        from counterpoint.agents.approval_policy import parse_risk_table

        if v is None or not v.strip():
            return None
        parse_risk_table(v)  # a bad table fails at start-up, naming the problem
        return v
    prices: str | None = None
    request_budget_usd: float | None = Field(default=None, ge=0)
    reuse_window_s: float = Field(default=600.0, ge=0)
    memory_db: Path | None = None
    max_tool_turns: int = Field(default=4, ge=0, le=16)
    webhooks: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    webhook_secret: str | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    signature_tolerance_s: float = Field(default=300.0, gt=0, le=86_400)
    demo_business_url: str = "http://127.0.0.1:7300/mcp"
    tool_connect_timeout_s: float = Field(default=60.0, gt=0, le=600)
    # Unset: no endpoint. One port per process: several on one host need 0 (a free port each).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    keys_dir: Path | None = None
    trust: Path | None = None
    approver: str | None = None
    approvers: str | None = None

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        # Only now: gateway_auth imports starlette, which no agent process needs otherwise.
        from counterpoint.infra.gateway_auth import parse_approvers

        parse_approvers(v)  # a bad mapping fails at start-up, naming the problem
        return v

    webhook_hosts: str = ""
    webhook_networks: str = ""
    max_alerts: int = Field(default=DEFAULT_MAX_ALERTS, ge=1, le=100_000)

    @field_validator("webhook_networks")
    @classmethod
    def _networks(cls, v: str) -> str:
        if not v.replace(",", "").strip():
            return v  # nothing to check: spares every process webhook_egress's httpx import
        from counterpoint.agents.webhook_egress import parse_networks

        parse_networks(v)  # a bad network fails at start-up, naming the entry
        return v

    @field_validator("config", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("kafka_bootstrap_servers", "anthropic_api_key", "anthropic_base_url",
                     "fallback_model", "webhook_secret", "approver")
    @classmethod
    def _empty_is_unset(cls, v: str | None) -> str | None:
        # docker compose passes `${VAR:-}` as an empty string when VAR is unset.
        return v.strip() or None if v is not None else None

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks_json(cls, v: Any) -> Any:
        # Decoded here rather than by pydantic-settings, so an empty value (docker compose's
        # `${VAR:-}`) means none and bad JSON gets a message naming the setting.
        if not isinstance(v, str):
            return v
        if not v.strip():
            return {}
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"COUNTERPOINT_WEBHOOKS is not JSON: {exc}; expected e.g. "
                             '{"alert": "https://ops.example/hook"}') from exc

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.broker_host}:{self.broker_port}"

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=self.bootstrap_servers, fetch_mode=self.fetch_mode,
                           fetch_max_wait_ms=self.fetch_max_wait_ms,
                           idle_poll_max_ms=self.idle_poll_max_ms,
                           idempotence=self.kafka_idempotence,
                           leave_group=self.kafka_leave_group,
                           session_timeout_ms=self.session_timeout_ms,
                           max_in_flight=self.max_in_flight)

    def retry(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.retry_max_attempts,
                           max_seconds=self.retry_max_seconds)

    def limits(self) -> InputLimits:
        return InputLimits(max_bytes=self.max_message_bytes, max_depth=self.max_json_depth)

    @property
    def memory_path(self) -> Path:
        return self.memory_db or self.home / "memory.db"

    def approval_policy(self) -> ApprovalPolicy:
        from counterpoint.agents.approval_policy import ApprovalPolicy, parse_risk_table

        overrides = parse_risk_table(self.action_risk) if self.action_risk else None
        return ApprovalPolicy.configured(overrides, self.approval_threshold,
                                         timedelta(seconds=self.approval_ttl_s))

    def keyring(self) -> Keyring:
        """Approval keys and trust (infra/approval_keys.py); KeyConfigError names the file."""
        from counterpoint.infra.approval_keys import load_keyring

        return load_keyring(self.keys_dir or self.home / "keys", self.trust)

    def models(self, configured: Mapping[str, str] | None = None) -> dict[str, str]:
        """Model per agent: the defaults, then the project file's, then the environment's."""
        from counterpoint.agents.context import DEFAULT_MODELS

        models = {**DEFAULT_MODELS, **(configured or {})}
        for key, value in os.environ.items():
            if key.startswith(MODEL_PREFIX) and value.strip():
                models[key[len(MODEL_PREFIX):].lower()] = value.strip()
        return models

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Each field's environment variable, as pydantic-settings looks it up."""
        prefix = cls.model_config.get("env_prefix") or ""
        return {name: (f.validation_alias if isinstance(f.validation_alias, str)
                       else f"{prefix}{name}").upper()
                for name, f in cls.model_fields.items()}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], fields: Iterable[str]) -> Settings:
        """What `fields` are for a process whose environment is `environ` (another
        process's, say); the other fields keep their defaults. Raises ValidationError."""
        names = cls.env_names()
        upper = {key.upper(): value for key, value in environ.items()}  # case-insensitive
        given: dict[str, Any] = {}
        for name in fields:
            if names[name] in upper:
                alias = cls.model_fields[name].validation_alias
                given[alias if isinstance(alias, str) else name] = upper[names[name]]
        return _Given(**given)


class _Given(Settings):
    """Settings from the values handed over only, not from this process's environment."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
