"""The contract of every topic, for the teams that consume them (``ecoretrofit topics``).

Per topic: name, key (what and how it is encoded), value (format, registry subject and
the Avro schema's fields with their types and docs), partitions, retention/compaction,
ordering and delivery guarantees, and the schema compatibility mode.

Nothing here restates a topic fact: fields come from
``schemas/*.avsc``, names, partitions, keys and configs from ``schemas/topics.py``, so the output
cannot drift from what the code produces. ``docs/topics.md`` is this command's
Markdown output with default settings (``tests/test_topics.py`` fails when it is stale):

    ecoretrofit topics --format markdown --output docs/topics.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import schemas
from ecoretrofit.config import Settings
from schemas import topics as declared

COMPATIBILITY = declared.BACKWARD

WIRE_FORMAT = (
    "Avro binary in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, "
    "then the Avro body; the id resolves at the schema registry (GET /schemas/ids/{id})"
)
COMPATIBILITY_TEXT = (
    f"{COMPATIBILITY} on the subject: a new version must read data written with the previous one. "
    "Project rule on top (schemas/__init__.py): only add fields, each optional with a default; never "
    "remove, rename or retype one, so consumers still on an older schema keep reading new data too."
)
HOME_KEY = (
    "home_id as UTF-8 bytes, no schema (e.g. H000042). Partition = murmur2(key), as Kafka's Java "
    "client and Faust compute it (confluent-kafka producers: partitioner=murmur2_random)"
)
DEFAULT_RETENTION = (
    "cleanup.policy=delete; no per-topic retention is set, so the broker default applies "
    "(Apache Kafka: 7 days)"
)


@dataclass
class Contract:
    name: str
    title: str
    purpose: str
    producers: str
    consumers: str
    key: str
    value: str
    partitions: int
    retention: str
    ordering: str
    delivery: str
    dedup: str
    compatibility: str
    schema: str | None = None  # name of an .avsc in schemas/
    subject: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------- contracts
# What a consumer may rely on beyond the declared facts, per topic kind.
PROSE: dict[str, dict[str, object]] = {
    "telemetry": dict(
        title="telemetry readings",
        purpose="Every sensor reading of every home: the pipeline's input.",
        producers=(
            "`ecoretrofit simulate` (producers/producer.py); the device gateway (`ecoretrofit gateway serve` "
            "for HTTPS, `ecoretrofit gateway bridge` for MQTT), header `source` = gateway-https or gateway-mqtt"
        ),
        consumers=("the stream processor (`ecoretrofit process`), the warehouse: the telemetry sink "
                   "(`ecoretrofit sink --topic telemetry`, group eco-sink-telemetry) or, with "
                   "ECO_TELEMETRY_INGEST=kafka_engine, ClickHouse's Kafka engine"),
        ordering=(
            "Per home: all readings of a home share a key, hence a partition, and arrive in the order "
            "produced (`seq` +1 per reading). No order across homes or partitions."
        ),
        delivery=(
            "Idempotent producer with acks=all: a broker retry neither duplicates nor reorders "
            "readings within a partition. A producer restart may re-send readings it had not seen "
            "acknowledged, so consumers treat the topic as at-least-once."
        ),
        dedup=(
            "(home_id, seq) identifies a reading; a gap in seq means readings lost at the source. A device "
            "retrying a batch whose reply it lost, or a bridge killed between Kafka's ack and its PUBACK, can "
            "write a reading twice: deduplicate on (home_id, seq) with its ts, as the warehouse's telemetry "
            "sink does (a retry repeats ts; a counter that starts again, such as a new simulator run, reuses "
            "seqs at other times)."
        ),
    ),
    "anomalies": dict(
        title="anomaly events",
        purpose="One event per anomalous reading of one home's metric, emitted by the stream processor.",
        producers="the stream processor (`ecoretrofit process`, processors/app.py)",
        consumers="the warehouse (ClickHouse Kafka engine), other teams (see examples/consume_anomalies.py)",
        ordering="Per home, in detection order (key home_id). No order across homes or partitions.",
        delivery=(
            "At-least-once: offsets are committed after processing, so after a crash or a rebalance the "
            "readings since the last commit are scored again and their anomalies emitted again."
        ),
        dedup="`event_id` (home_id/metric/reading ts/detector) is stable across re-processing: deduplicate on it.",
    ),
    "alerts": dict(
        title="alerts",
        purpose="Alerts raised from anomaly events.",
        producers="the stream processor",
        consumers="other teams",
        ordering="Per key, in the order raised.",
        delivery="At-least-once.",
        dedup="Deduplicate on the event's id field.",
    ),
    "workorders": dict(
        title="maintenance work orders",
        purpose=(
            "Every version of every maintenance work order on a home's component (corrective, preventive, "
            "predictive, inspection): opened, failure noted, closed with failure -> cause -> resolution codes. "
            "The latest version (highest `version`) of an `order_id` is the order's state."
        ),
        producers=(
            "maintenance systems, the city simulator's technicians (maintenance/fleet.py records; in live "
            "`simulate --maintenance` they also close the orders they read here) and the maintenance worker "
            "(`ecoretrofit maintain`: predictive orders, `order_id` PM-<asset_id>-<episode>, opened once per "
            "asset and episode)"
        ),
        consumers=(
            "the warehouse (ClickHouse `work_orders`, ReplacingMergeTree on version), reliability statistics, "
            "the maintenance worker (labels: failures teach its predictor) and the simulator's technicians"
        ),
        ordering="Per asset (key asset_id): an order's versions arrive in order. No order across assets or partitions.",
        delivery="At-least-once: a version may arrive twice; it is the same record.",
        dedup="(order_id, version) identifies a record; keep the highest version per order_id.",
    ),
    "predictions": dict(
        title="maintenance predictions",
        purpose=(
            "Per component, the probability of failure within a horizon, the remaining useful life and the "
            "signals behind them, each time a home's health window closes (every 6 hours of event time)."
        ),
        producers="the maintenance worker (`ecoretrofit maintain`, maintenance/worker.py)",
        consumers="the warehouse (ClickHouse `maintenance_predictions`), operators' dashboards",
        ordering="Per asset (key asset_id), in event-time order of the windows.",
        delivery=(
            "At-least-once: after a restart the worker resumes from its last checkpoint, so the windows "
            "since then are predicted and sent again, with the same values."
        ),
        dedup="`prediction_id` (asset, window end, model) is stable across re-processing: deduplicate on it.",
    ),
    "deadletter": dict(
        title="dead letters",
        purpose=(
            "Messages the processor or the maintenance worker could not decode or refused (plausibility "
            "contract), and device messages the MQTT bridge refused, kept byte for byte for inspection and replay."
        ),
        producers=("the stream processor (processors/app.py `dead_letter`); the maintenance worker "
                   "(maintenance/worker.py, telemetry and work orders); the MQTT bridge (gateway/bridge.py)"),
        consumers="operators; alert EcoDeadLettersGrowing counts them (eco_dead_letters_total)",
        value=("the original message's value bytes, unchanged (not necessarily Avro: that is why it is here), "
               "except that the processor and the maintenance worker cut them to the first 64 kB (headers "
               "`truncated`, `original_bytes`) and send an empty value for a tombstone (header `null_value`)"),
        ordering="One partition: in the order each producer met them.",
        delivery="At-least-once (a re-processed bad message is dead-lettered again).",
        dedup=("(source_topic, source_partition, source_offset) headers identify the original message; a bad "
               "reading is refused once by each consumer of telemetry (header refused_by)."),
        headers=[
            ("source_topic", "topic the message came from (UTF-8); `mqtt:<topic>` from the bridge"),
            ("source_partition", "its partition, decimal UTF-8 (absent for MQTT)"),
            ("source_offset", "its offset, decimal UTF-8 (absent for MQTT)"),
            ("reason", "short label: oversized, truncated, bad_magic, unknown_schema, corrupt, implausible, "
                       "processing_error; from the bridge: invalid, foreign_home, bad_topic"),
            ("error", "the decoder's full message, or every bad field of the payload (UTF-8)"),
            ("contract_version",
             "version of the plausibility contract that judged it (processor, maintain)"),
            ("truncated", "`true` when the value was cut; `original_bytes`: its size before"),
            ("null_value", "`true` when the original value was null (a tombstone); the value is then empty"),
            ("key_truncated", "`true` when a key over 256 bytes was cut"),
            ("refused_by", "the consumer that refused it: processor, maintain (absent from the bridge)"),
        ],
    ),
    "schemas": dict(
        title="schema registry log",
        purpose="The schema registry's own storage: every registration and config change, replayed at start.",
        producers="the schema registry only: never produce to it",
        consumers="the schema registry only: read schemas through its REST API",
        value="internal to the registry (JSON records)",
        ordering="One partition: the registry's log is totally ordered.",
        delivery="Written by one registry leader; each record is applied idempotently.",
        dedup="Not needed: replaying a record twice yields the same state.",
    ),
}

KEY_TEXT = {
    declared.HOME_ID_KEY: HOME_KEY,
    declared.ASSET_ID_KEY: "asset_id as UTF-8 bytes, no schema (e.g. H000042-CP): every record of one asset "
                           "on one partition",
    declared.SOURCE_KEY: "the original message's key bytes, unchanged (null if it had none)",
    declared.INTERNAL_KEY: "internal to the registry",
}


def retention_text(topic: declared.Topic) -> str:
    """The declared broker config, in words."""
    if not topic.config:
        return DEFAULT_RETENTION
    settings = ", ".join(f"{k}={v}" for k, v in topic.config.items())
    if topic.compacted:
        return (f"{settings}: must never expire (as Confluent's registry creates it); "
                "`ecoretrofit registry` replays it whole at start")
    return settings


def contract(settings: Settings, topic: declared.Topic) -> Contract:
    prose = dict(PROSE[topic.kind])
    name = topic.name_in(settings)
    if topic.compatibility:
        compatibility = COMPATIBILITY_TEXT if topic.compatibility == COMPATIBILITY else f"{topic.compatibility} on the subject."
    else:
        compatibility = "None: raw bytes, no schema." if topic.key == declared.SOURCE_KEY else "Not applicable."
    return Contract(
        name=name,
        key=KEY_TEXT[topic.key],
        value=prose.pop("value", WIRE_FORMAT),
        schema=topic.value_schema,
        subject=topic.subject(settings),
        partitions=topic.partitions_in(settings),
        retention=retention_text(topic),
        compatibility=compatibility,
        **prose,
    )


def contracts(settings: Settings) -> list[Contract]:
    return [contract(settings, t) for t in declared.TOPICS]


# ------------------------------------------------------------ Avro rendering
def type_name(node: object) -> str:
    """A short, Markdown-safe rendering of an Avro type."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        kinds = [type_name(t) for t in node]
        if "null" in kinds and len(kinds) == 2:
            return f"{[k for k in kinds if k != 'null'][0]} or null"
        return " or ".join(kinds)
    if isinstance(node, dict):
        kind = node.get("type")
        logical = node.get("logicalType")
        if logical:
            return f"{type_name(kind)} ({logical})"
        if kind == "array":
            return f"array of {type_name(node['items'])}"
        if kind == "map":
            return f"map of {type_name(node['values'])}"
        if kind == "enum":
            return f"enum {node['name']} ({', '.join(node['symbols'])})"
        if kind == "fixed":
            return f"fixed {node['name']} ({node['size']} bytes)"
        if kind in ("record", "error"):
            return f"record {node['name']}"
        return type_name(kind)
    return str(node)


def schema_fields(name: str) -> list[tuple[str, str, str, str]]:
    """(field, type, required/default, doc) of a shipped schema, in schema order."""
    rows = []
    for f in schemas.schema_dict(name)["fields"]:
        if "default" in f:
            presence = f"optional, default {json.dumps(f['default'])}"
        else:
            presence = "required"
        rows.append((f["name"], type_name(f["type"]), presence, f.get("doc", "")))
    return rows


def schema_title(name: str) -> tuple[str, str]:
    d = schemas.schema_dict(name)
    full = f"{d['namespace']}.{d['name']}" if d.get("namespace") else d["name"]
    return full, d.get("doc", "")


# ---------------------------------------------------------------- renderers
def render_text(settings: Settings) -> str:
    lines = []
    for c in contracts(settings):
        lines.append(f"{c.name}: {c.title}")
        lines.append(f"  {c.purpose}")
        rows = [
            ("produced by", c.producers), ("consumed by", c.consumers), ("key", c.key), ("value", c.value),
        ]
        if c.subject:
            rows.append(("subject", f"{c.subject} (TopicNameStrategy)"))
        rows += [
            ("partitions", str(c.partitions)), ("retention", c.retention), ("ordering", c.ordering),
            ("delivery", c.delivery), ("dedup", c.dedup), ("compatibility", c.compatibility),
        ]
        for label, text in rows:
            lines.append(f"  {label + ':':<15}{text}")
        for header, text in c.headers:
            lines.append(f"  {'header:':<15}{header}: {text}")
        if c.schema:
            full, doc = schema_title(c.schema)
            lines.append(f"  {'schema:':<15}{full} (schemas/{c.schema}.avsc)")
            if doc:
                lines.append(f"  {'':<15}{doc}")
            fields = schema_fields(c.schema)
            width = max(len(f[0]) for f in fields)
            twidth = max(len(f[1]) for f in fields)
            for fname, ftype, presence, fdoc in fields:
                lines.append(f"    {fname:<{width}}  {ftype:<{twidth}}  {presence}. {fdoc}".rstrip())
        lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(settings: Settings) -> str:
    items = contracts(settings)
    out = [
        "# Topic contracts",
        "",
        "<!-- Generated by `ecoretrofit topics --format markdown --output docs/topics.md` "
        "(default settings) from schemas/*.avsc and schemas/topics.py. Do not edit by hand: "
        "tests/test_topics.py fails when this file is stale. -->",
        "",
        "Every topic the platform owns, with what a consumer may rely on. Avro values use the "
        f"Confluent wire format and are registered under `<topic>-value` (TopicNameStrategy) with "
        f"compatibility {COMPATIBILITY}. A minimal consumer: `examples/consume_anomalies.py`.",
        "",
        "| Topic | Key | Value | Partitions | Compatibility |",
        "|---|---|---|---|---|",
    ]
    for c in items:
        key = "home_id (UTF-8)" if c.key == HOME_KEY else c.key.split(",")[0].split("(")[0].strip()
        value = f"Avro `{schema_title(c.schema)[0].rsplit('.', 1)[-1]}`" if c.schema else "raw bytes" if c.headers else "internal"
        compat = COMPATIBILITY if c.schema else "n/a"
        out.append(f"| `{c.name}` | {_md(key)} | {value} | {c.partitions} | {compat} |")
    for c in items:
        out += ["", f"## `{c.name}`: {c.title}", "", c.purpose, ""]
        rows = [
            ("Produced by", c.producers), ("Consumed by", c.consumers), ("Key", c.key), ("Value", c.value),
        ]
        if c.subject:
            rows.append(("Registry subject", f"`{c.subject}`"))
        rows += [
            ("Partitions", str(c.partitions)), ("Retention", c.retention), ("Ordering", c.ordering),
            ("Delivery", c.delivery), ("Deduplication", c.dedup), ("Compatibility", c.compatibility),
        ]
        out += [f"- **{label}:** {text}" for label, text in rows]
        if c.headers:
            out += ["", "| Header | Content |", "|---|---|"]
            out += [f"| `{h}` | {_md(t)} |" for h, t in c.headers]
        if c.schema:
            full, doc = schema_title(c.schema)
            out += ["", f"### Value schema `{full}`", "", f"From `schemas/{c.schema}.avsc`. {doc}".rstrip(), ""]
            out += ["| Field | Type | Presence | Description |", "|---|---|---|---|"]
            out += [f"| `{n}` | {_md(t)} | {_md(p)} | {_md(d)} |" for n, t, p, d in schema_fields(c.schema)]
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown}
