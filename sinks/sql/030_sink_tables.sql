-- Targets of the batching sink (`ecoretrofit sink`, sinks/sink.py) beside the main
-- tables: the same data stored by a separate consumer group, so two paths can be
-- compared row for row (with ECO_TELEMETRY_INGEST=sink the stack's sink writes
-- telemetry itself; `--table telemetry_sink` is then the comparison).
--
-- Exactly-once: every batch is inserted with insert_deduplication_token =
-- "<topic>:<partition>:<first offset>-<last offset>". On a non-replicated MergeTree
-- ClickHouse remembers the tokens of the last non_replicated_deduplication_window
-- inserted blocks (0, the default, disables it): a replayed batch after a crash is
-- then acknowledged but not stored again. A replay always follows the crash within a
-- few batches, so a window of 10,000 blocks is ample (one batch makes one block per
-- (day, region) it touches).
-- Caveat of a window > 0: an insert WITHOUT a token is deduplicated by the hash of
-- its data, so inserting byte-identical rows twice by hand stores them once.

-- The sink's write-ahead ledger: one row per batch, written BEFORE the batch's rows.
-- After a crash the sink reads the ranges at or beyond its committed offset and
-- re-forms exactly those batches (same offsets, hence same tokens). See sinks/sink.py.
CREATE TABLE IF NOT EXISTS {database}.sink_batches
(
    sink         LowCardinality(String),  -- consumer group of the sink
    topic        LowCardinality(String),
    partition    UInt32,
    first_offset UInt64,
    last_offset  UInt64,
    rows         UInt32,
    dead_letters UInt32,
    written_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (sink, topic, partition, last_offset)
TTL toDateTime(written_at) + INTERVAL 30 DAY;

-- Raw readings stored by the sink: columns, partitioning (by week: bounded by the
-- plausibility window, see 010), order and 7-day TTL of `telemetry` (010), so the two
-- paths hold comparable data.
-- (AS telemetry: the same columns, declared once in 010; engine and settings its own)
CREATE TABLE IF NOT EXISTS {database}.telemetry_sink AS {database}.telemetry
ENGINE = MergeTree
PARTITION BY toMonday(ts)
ORDER BY (region, home_id, ts)
TTL toDateTime(ts) + INTERVAL 7 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- Readings imported from the data lake (`ecoretrofit lake import`): a replay target
-- of its own, so an import never mixes with what the Kafka paths stored. No TTL: an
-- import of old days is the point of it; `lake import` replaces whole days.
CREATE TABLE IF NOT EXISTS {database}.telemetry_lake AS {database}.telemetry
ENGINE = MergeTree
PARTITION BY (toDate(ts), region)
ORDER BY (region, home_id, ts);

-- Anomaly events stored by the sink: columns, partitioning (by week of arrival, see
-- 020) and order of `anomalies`.
CREATE TABLE IF NOT EXISTS {database}.anomalies_sink
(
    event_id        String,
    home_id         LowCardinality(String),
    region          LowCardinality(String),
    metric          LowCardinality(String),
    ts              DateTime64(3, 'UTC'),
    detected_at     DateTime64(3, 'UTC'),
    value           Float64,
    score           Float64,
    detector        LowCardinality(String),
    window_mean     Float64,
    window_std      Float64,
    window_count    Int64,
    zscore          Nullable(Float64),
    severity        LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toMonday(ingested_at)
ORDER BY (region, home_id, ts, metric)
SETTINGS non_replicated_deduplication_window = 10000;

-- Alerts: the topic has no Avro contract in schemas/ yet, so the sink stores each
-- record decoded with its writer schema (from the registry) as JSON text. A typed
-- table can replace this one once schemas/*alert*.avsc exists.
CREATE TABLE IF NOT EXISTS {database}.alerts_sink
(
    kafka_partition UInt32,
    kafka_offset    UInt64,
    kafka_ts        DateTime64(3, 'UTC'),
    key             String,
    schema_id       UInt32,
    payload         String,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(kafka_ts)
ORDER BY (kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 10000;

-- The sink sends undecodable messages to dead_letters (005) with the batch's token
-- plus ":dlq", so they need the deduplication window too. Idempotent: re-applying the
-- same setting at every start is a no-op.
ALTER TABLE {database}.dead_letters{local} MODIFY SETTING non_replicated_deduplication_window = 10000;
