"""One configuration object, read from ``ECO_*`` environment variables.

The local stack is the default: every endpoint points at 127.0.0.1 ports derived
from ``ECO_PORT_BASE``. The docker-compose cluster sets the endpoint variables
(``ECO_KAFKA_BOOTSTRAP``, ``ECO_SCHEMA_REGISTRY_URL``, ``ECO_CLICKHOUSE_URL`` …)
instead; no code path knows which mode it runs in.

>>> s = Settings.from_env({"ECO_PORT_BASE": "30000", "ECO_HOMES": "50"})
>>> s.kafka_bootstrap, s.homes
('127.0.0.1:30092', 50)
>>> Settings.from_env({"ECO_KAFKA_BOOTSTRAP": "kafka:9092"}).kafka_bootstrap
'kafka:9092'
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from schemas import topics

# Offsets from ECO_PORT_BASE, so a second stack (a test session, a benchmark) is one
# variable away: ECO_PORT_BASE=30000 moves every port at once.
PORT_OFFSETS = {
    "kafka": 92,
    "registry": 81,
    "warehouse": 123,
    "s3": 333,
    "prometheus": 90,
    "twin": 180,  # the digital-twin service (API and dashboard)
    "assistant": 181,  # the assistant's MCP server over streamable HTTP
    "metrics": 100,  # first /metrics port; services take consecutive ones
    "gateway": 443,  # HTTPS device gateway
    "mqtt": 883,  # Mosquitto, TLS only
    # SeaweedFS internals: every port explicit or it picks defaults (+10000 gRPC).
    "weed_master": 334,
    "weed_master_grpc": 335,
    "weed_volume": 336,
    "weed_volume_grpc": 337,
    "weed_filer": 338,
    "weed_filer_grpc": 339,
    "weed_s3_grpc": 340,
}


# Values of ECO_TELEMETRY_INGEST (Settings.telemetry_ingest).
TELEMETRY_INGEST_MODES = ("sink", "kafka_engine")

# How long a consumer's fetch may wait at the broker for data (see kafka_client_config).
FETCH_MAX_WAIT_MS = 100


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # where the local stack keeps its data, logs and PID files
    data_dir: Path = Path(".eco-data")
    bind_host: str = "127.0.0.1"
    port_base: int = 19000

    # endpoints (None -> derived from bind_host and port_base)
    kafka_bootstrap: str = ""
    schema_registry_url: str = ""
    clickhouse_url: str = ""
    clickhouse_user: str = "default"
    clickhouse_password: str = field(default="", repr=False)
    clickhouse_database: str = "eco"
    # Writes to the schema registry (register, delete, change compatibility) need these
    # (HTTP basic auth); reads stay open, as in Confluent's default.
    schema_registry_user: str = "eco"
    schema_registry_password: str = field(default="", repr=False)
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = field(default="", repr=False)
    s3_region: str = "us-east-1"
    s3_broker_bucket: str = "eco-broker"
    s3_lake_bucket: str = "eco-lake"
    # How ClickHouse itself reaches Kafka and the registry. Same as above locally;
    # in docker-compose the server resolves service names of its own network.
    clickhouse_kafka_bootstrap: str = ""
    clickhouse_schema_registry_url: str = ""
    # A ClickHouse cluster of shards (a <remote_servers> name in the servers' config):
    # the DDL then runs ON CLUSTER, stores rows in <table>_local on every shard and
    # reads them through Distributed tables (sinks/warehouse.py, docs/cluster.md).
    # Empty: one server, no Distributed tables.
    clickhouse_cluster: str = ""
    # How readings reach the `telemetry` table: "sink", the batching sink
    # (`ecoretrofit sink --topic telemetry`, exactly once, one row per (home_id, seq, ts);
    # the local stack and compose run it as a component), or "kafka_engine", ClickHouse's
    # Kafka table and views (at-least-once). Only the DDL (sinks/sql/010_telemetry.sql)
    # and which component runs differ; see docs/delivery.md.
    telemetry_ingest: str = "sink"
    # Idempotent Kafka producers (no duplicate from a retry) need a broker that writes
    # a batch before the producer sequence that covers it. Tansu 0.6 (the local stack)
    # does not: stopped between the two, it answers the client's retry "duplicate
    # sequence number" and librdkafka reports the lost batch as delivered (measured:
    # 17-52 acknowledged messages lost in half the restarts under load; docs/delivery.md).
    # Off, a retry can store a batch twice, right behind the first copy (one request in
    # flight keeps the order); readers deduplicate on (home_id, seq, ts). Compose sets it
    # on: Apache Kafka keeps both in step.
    kafka_idempotent_producers: bool = False

    # topics: names and partition counts default to their declaration (schemas/topics.py)
    topic_telemetry: str = topics.TELEMETRY.name
    topic_anomalies: str = topics.ANOMALIES.name
    topic_alerts: str = topics.ALERTS.name
    topic_workorders: str = topics.WORK_ORDERS.name
    topic_predictions: str = topics.PREDICTIONS.name
    topic_deadletter: str = topics.DEADLETTER.name
    topic_schemas: str = topics.SCHEMAS.name
    telemetry_partitions: int = topics.TELEMETRY.partitions
    anomalies_partitions: int = topics.ANOMALIES.partitions
    alerts_partitions: int = topics.ALERTS.partitions
    workorders_partitions: int = topics.WORK_ORDERS.partitions
    predictions_partitions: int = topics.PREDICTIONS.partitions

    # simulation
    homes: int = 1000
    regions: tuple[str, ...] = ("north", "south", "east", "west", "central")
    # Regions accepted from devices beyond the simulated city's (a district whose real
    # devices arrive before the simulator models it; the tests' private regions). The
    # warehouse stores readings of known regions only: see `known_regions`.
    extra_regions: tuple[str, ...] = ()
    seed: int = 42

    # stream processing
    # ewzscore: exponentially weighted mean and deviation, ~175 bytes of state per
    # home and metric, so checkpoints stay small at 10k homes. "extreme" or
    # "ensemble" trade state and CPU for fewer false alarms (see eval faults).
    detector: str = "ewzscore"
    zscore_window: int = 120
    zscore_threshold: float = 4.0
    zscore_warmup: int = 30
    processor_app_id: str = "eco-processor"
    processor_workers: int = 1
    # Where a processor group with no committed offsets starts: "earliest" scores the
    # whole topic, "latest" only what arrives from now on (benchmarks, new deployments).
    processor_offset_reset: str = "earliest"
    checkpoint_interval_s: float = 10.0
    # How often each home reports (the simulator's live rate): a home silent for three
    # intervals is reported silent, and seq jumps are checked against elapsed time.
    reading_interval_ms: int = 1000
    # How long a home stays in alert on a metric after its last anomaly there.
    alert_hold_s: float = 120.0

    # device gateway (gateway/): HTTPS and MQTT ingestion from real devices
    gateway_url: str = ""  # "" -> https://<host>:<port base + 443>
    # Real certificates: PEM paths. Empty -> a CA and server certificate generated once
    # per data directory (DATA_DIR/tls/); clients then trust DATA_DIR/tls/ca.pem.
    gateway_tls_cert: str = ""
    gateway_tls_key: str = ""
    gateway_tls_ca: str = ""
    gateway_max_body_bytes: int = 1_048_576
    gateway_max_batch: int = 1000  # readings per request or MQTT message
    gateway_rate_per_s: float = 20.0  # requests per device per second, sustained
    gateway_rate_burst: int = 40
    # How long the gateway's and bridge's producer gathers readings into one request: a
    # device waits for the ack, but each request is a write of the broker's S3 storage
    gateway_kafka_linger_ms: int = 5
    mqtt_host: str = ""  # "" -> the local stack's Mosquitto
    mqtt_port: int = 0
    mqtt_bridge_password: str = field(default="", repr=False)  # "" -> generated per data dir
    mqtt_bridge_group: str = "eco-bridge"  # shared-subscription group of the bridges

    # local stack: a component that dies is restarted after this delay, doubling with
    # each crash in a row up to the maximum
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 60.0

    # observability
    metrics_port: int = 0  # 0 -> derived; each service adds its own offset
    log_level: str = "INFO"

    # the language model behind `ecoretrofit explain` (empty provider: the deterministic
    # analysis only). "openai": any OpenAI-compatible chat-completions endpoint;
    # "anthropic": the Messages API. The URL is the API's base, without the path.
    llm_provider: str = ""
    llm_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)

    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            key = "ECO_" + f.name.upper()
            if key in env and env[key] != "":
                values[f.name] = _parse(key, env[key], f.type)
        settings = cls(**values)
        return settings._derive()

    def _derive(self) -> "Settings":
        h, p = self.bind_host, self.port_base
        connect_host = "127.0.0.1" if h in ("0.0.0.0", "::") else h
        derived: dict[str, object] = {}
        if not self.data_dir.is_absolute():
            # Absolute from here on: child processes get it as ECO_DATA_DIR and several run
            # inside the data directory (the supervisor, Mosquitto with its config's paths),
            # where a relative path would point elsewhere.
            derived["data_dir"] = self.data_dir.absolute()
        if not self.kafka_bootstrap:
            derived["kafka_bootstrap"] = f"{connect_host}:{self.port('kafka')}"
        if not self.schema_registry_url:
            derived["schema_registry_url"] = f"http://{connect_host}:{self.port('registry')}"
        if not self.clickhouse_url:
            derived["clickhouse_url"] = f"http://{connect_host}:{self.port('warehouse')}"
        if not self.s3_endpoint:
            derived["s3_endpoint"] = f"http://{connect_host}:{self.port('s3')}"
        if not self.gateway_url:
            derived["gateway_url"] = f"https://{connect_host}:{self.port('gateway')}"
        if not self.mqtt_host:
            derived["mqtt_host"] = connect_host
        if not self.mqtt_port:
            derived["mqtt_port"] = self.port("mqtt")
        if self.telemetry_ingest not in TELEMETRY_INGEST_MODES:
            raise ConfigError(f"ECO_TELEMETRY_INGEST={self.telemetry_ingest!r}: expected one of "
                              f"{', '.join(TELEMETRY_INGEST_MODES)}")
        s = dataclasses.replace(self, **derived) if derived else self
        more: dict[str, object] = {}
        if not s.clickhouse_kafka_bootstrap:
            more["clickhouse_kafka_bootstrap"] = s.kafka_bootstrap
        if not s.clickhouse_schema_registry_url:
            more["clickhouse_schema_registry_url"] = s.schema_registry_url
        if not s.metrics_port:
            more["metrics_port"] = p + PORT_OFFSETS["metrics"]
        if not s.clickhouse_password or not s.s3_access_key or not s.schema_registry_password:
            creds = s.local_credentials()
            if not s.clickhouse_password:
                more["clickhouse_password"] = creds["clickhouse_password"]
            if not s.s3_access_key:
                more["s3_access_key"] = creds["s3_access_key"]
                more["s3_secret_key"] = creds["s3_secret_key"]
            if not s.schema_registry_password:
                more["schema_registry_password"] = creds["schema_registry_password"]
        return dataclasses.replace(s, **more) if more else s

    # ---------------------------------------------------------------- helpers
    def port(self, name: str) -> int:
        return self.port_base + PORT_OFFSETS[name]

    @property
    def known_regions(self) -> tuple[str, ...]:
        """Every region whose readings are accepted: the city's and the extra ones."""
        return self.regions + tuple(r for r in self.extra_regions if r not in self.regions)

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.env"

    def local_credentials(self) -> dict[str, str]:
        """Credentials of the local stack: generated once per data directory.

        No secret lives in the repository; the first process that needs one writes
        ``credentials.env`` (mode 600, in a 700 directory) and every later process reads
        the same file. A file from an older version that lacks a credential gets it
        added, under a lock, so concurrent processes agree on one value.
        """
        path = self.credentials_file
        if path.exists():
            creds = _read_env_file(path)
            if all(k in creds for k in _CREDENTIAL_FACTORIES):
                return creds
        private_dir(path.parent)
        with open(path.parent / ".credentials.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            creds = _read_env_file(path) if path.exists() else {}
            missing = {k: make() for k, make in _CREDENTIAL_FACTORIES.items() if k not in creds}
            if missing:
                creds.update(missing)
                write_private(path, "".join(f"{k}={v}\n" for k, v in creds.items()))
        return creds

    def registry_client_config(self) -> dict[str, str]:
        """confluent-kafka ``SchemaRegistryClient`` settings, with the credentials
        that registry writes need (Confluent's ``basic.auth.user.info``)."""
        return {
            "url": self.schema_registry_url,
            "basic.auth.user.info": f"{self.schema_registry_user}:{self.schema_registry_password}",
        }

    def kafka_client_config(self) -> dict[str, object]:
        """librdkafka settings shared by every confluent-kafka client.

        Session timeout 6 s: Tansu completes JoinGroup after about half of it.
        """
        return {
            "bootstrap.servers": self.kafka_bootstrap,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 300000,
            # Tansu holds a fetch for much of this wait even when data is there
            # (measured: 385 ms median at 1500 ms, 15 ms at 100 ms).
            "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
        }

    def producer_config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.kafka_bootstrap,
            # murmur2: the partitioner Kafka's Java client and aiokafka/Faust use, so a
            # home's key lands on the partition Faust expects.
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "acks": "all",
            **({"enable.idempotence": True} if self.kafka_idempotent_producers else {
                "enable.idempotence": False,
                # a retried request cannot overtake the next one: order within a
                # partition holds, and a copy lands right behind its original
                "max.in.flight.requests.per.connection": 1,
            }),
        }

    def env(self) -> dict[str, str]:
        """These settings as ECO_* variables, for child processes."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = ",".join(v)
            out["ECO_" + f.name.upper()] = str(v)
        return out

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)


# One generator per credential of the local stack (see Settings.local_credentials).
_CREDENTIAL_FACTORIES = {
    "clickhouse_password": lambda: secrets.token_urlsafe(18),
    "s3_access_key": lambda: "eco" + secrets.token_hex(6),
    "s3_secret_key": lambda: secrets.token_urlsafe(24),
    "schema_registry_password": lambda: secrets.token_urlsafe(18),
    # the local SeaweedFS's JWT signing keys are derived from it (infra/localstack/stack.py)
    "seaweedfs_jwt_key": lambda: secrets.token_urlsafe(32),
}


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700: the local data
    directory holds credentials, the broker's log and the warehouse. An existing
    directory is tightened too (one made by an older version was 0755).

    >>> import tempfile
    >>> d = private_dir(Path(tempfile.mkdtemp()) / "data")
    >>> oct(d.stat().st_mode & 0o777)
    '0o700'
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only from the
    first byte on (never written world-readable, then tightened)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def create_private_once(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` (owner-only) unless the file exists, and return what
    the file holds: when several processes race to create a secret, the first writer
    wins and every process reads the same one.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "secret"
    >>> create_private_once(p, "first"), create_private_once(p, "second")
    ('first', 'first')
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        write_private(tmp, text)
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text()


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _parse(key: str, raw: str, typ: object) -> object:
    t = str(typ)
    try:
        if t in ("int",):
            return int(raw)
        if t in ("float",):
            return float(raw)
        if t in ("Path",):
            return Path(raw)
        if t in ("bool",):
            word = raw.strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a yes/no value")
        if t.startswith("tuple"):
            items = tuple(x.strip() for x in raw.split(",") if x.strip())
            if not items:
                raise ValueError("empty list")
            return items
        return raw
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r}: expected {t} ({exc})") from None


def load() -> Settings:
    return Settings.from_env()
