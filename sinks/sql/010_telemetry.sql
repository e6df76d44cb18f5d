-- Telemetry: the raw readings table, and how readings reach it.
--
-- ECO_TELEMETRY_INGEST (Settings.telemetry_ingest) chooses the path; only this file and
-- which component runs differ between the two:
-- - sink (the default): the batching sink (`ecoretrofit sink --topic telemetry`,
--   sinks/sink.py) inserts into `telemetry` exactly once, one row per (home_id, seq),
--   with the same plausibility contract and dead letters. The statements marked
--   {kafka_engine_only} below are not created, and those marked {sink_only} remove the
--   Kafka-engine path from a warehouse created in kafka_engine mode, so two paths never
--   write the same table.
-- - kafka_engine: ClickHouse's Kafka-engine queue -> materialized views -> MergeTree
--   (at-least-once: docs/delivery.md).
--
-- Switching to sink: the Kafka table goes first (that stops its consumer; dropping a
-- view attached to a consuming Kafka table can hang, shared/notes/local-stack.md), then
-- its views. The sink's own consumer group starts at the topic's start; its
-- (home_id, seq) filter drops what the engine already stored (within the 7-day TTL).
{sink_only} DROP TABLE IF EXISTS {database}.telemetry_queue;

{sink_only} DROP VIEW IF EXISTS {database}.telemetry_mv;

{sink_only} DROP VIEW IF EXISTS {database}.telemetry_dlq_mv;

{sink_only} DROP VIEW IF EXISTS {database}.telemetry_implausible_mv;

-- The Kafka-engine path (kafka_engine mode only).
--
-- kafka_handle_error_mode = 'stream': a message that fails to parse would otherwise
-- stall the table forever; in stream mode it arrives with _error set and is routed
-- to dead_letters, while good messages around it are stored.
-- The schema registry URL must be in the table's SETTINGS: the background consumer
-- does not see session settings.
{kafka_engine_only} CREATE TABLE IF NOT EXISTS {database}.telemetry_queue
(
    home_id             String,
    region              String,
    ts                  DateTime64(3, 'UTC'),
    seq                 Int64,
    indoor_temp_c       Float64,
    outdoor_temp_c      Float64,
    power_w             Float64,
    energy_kwh          Float64,
    voltage_v           Float64,
    vibration_mm_s      Float64,
    water_flow_lpm      Nullable(Float64),
    water_temp_c        Nullable(Float64),
    uv_intensity_mw_cm2 Nullable(Float64),
    pump_pressure_bar   Nullable(Float64)
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{kafka_broker}',
    kafka_topic_list = '{topic_telemetry}',
    kafka_group_name = '{consumer_group_prefix}-telemetry',
    kafka_format = 'AvroConfluent',
    format_avro_schema_registry_url = '{registry_url}',
    kafka_handle_error_mode = 'stream',
    -- One consumer, so the group has one member: with two, a warehouse restart could
    -- leave the group waiting for a departed leader on our broker (Tansu 0.6) for
    -- 10 s to forever (docs/delivery.md). Every Kafka table of this directory keeps
    -- one (tests/test_tansu_groups.py, which also shows the broker's behaviour).
    kafka_num_consumers = 1,
    kafka_thread_per_consumer = 1,
    -- a block must be written (with every view chained from telemetry) well within
    -- the consumer's 10 s max poll interval (warehouse_service.CONFIG_XML), or the
    -- consumer drops out of its group
    -- and the block is read again: duplicates (measured 1.3% at 262144 under backfill)
    kafka_max_block_size = 65536,
    kafka_poll_max_batch_size = 65536,
    kafka_flush_interval_ms = 1000;

-- Raw readings. Partitioned by week, and only by week: ClickHouse refuses an insert
-- block that spans more than max_partitions_per_insert_block (100) partitions, and a
-- refused Kafka-engine block is retried forever (not a parse error, so it never reaches
-- dead_letters). The partition key must therefore be bounded by the contract, never by
-- the data: a stored reading lies within the plausibility window (schemas/plausibility.py,
-- 400 days back, 10 minutes ahead), so a block spans at most 59 weeks
-- (tests/test_plausibility_sql.py). Region is not in the key (150 region strings once
-- made 150 partitions and stalled ingestion); it leads the ORDER BY instead.
-- Ordered for the per-home time-series queries every dashboard makes. _partition/_offset
-- keep the Kafka position of each row: duplicates after a replay are visible and countable.
--
-- Raw rows are kept 7 days; the roll-ups of 015_rollups.sql (fed by views on this
-- table, which do not inherit its TTL) keep the aggregates for years.
-- ttl_only_drop_parts: a part never spans two weeks, so expired rows are dropped as
-- whole parts instead of being rewritten row by row (a row lives 7 to 14 days).
-- A warehouse created before this key keeps its (day, region) key: CREATE ... IF NOT
-- EXISTS never changes a table; recreate it (or move the data) to get the bound.
CREATE TABLE IF NOT EXISTS {database}.telemetry{local}
(
    home_id             LowCardinality(String),
    region              LowCardinality(String),
    ts                  DateTime64(3, 'UTC'),
    seq                 Int64,
    indoor_temp_c       Float64,
    outdoor_temp_c      Float64,
    power_w             Float64,
    energy_kwh          Float64,
    voltage_v           Float64,
    vibration_mm_s      Float64,
    water_flow_lpm      Nullable(Float64),
    water_temp_c        Nullable(Float64),
    uv_intensity_mw_cm2 Nullable(Float64),
    pump_pressure_bar   Nullable(Float64),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toMonday(ts)
ORDER BY (region, home_id, ts)
TTL toDateTime(ts) + INTERVAL 7 DAY
SETTINGS ttl_only_drop_parts = 1;

-- In a cluster, `telemetry` is this Distributed table over every shard's
-- telemetry_local, sharded by home: a home's readings all live on one shard, so its
-- per-home roll-ups are complete there and a query for one home can skip the others
-- (optimize_skip_unused_shards). telemetry_mv writes here on every shard: rows go to
-- the shard of their home, whichever shard's Kafka consumer read them (docs/cluster.md).
{cluster_only} CREATE TABLE IF NOT EXISTS {database}.telemetry AS {database}.telemetry{local}
ENGINE = Distributed('{cluster}', '{database}', 'telemetry{local}', cityHash64(home_id));

-- The same TTL and setting for a table created before they were part of the DDL.
-- Idempotent and free when nothing changes: ClickHouse compares the new TTL with the
-- table's and only schedules a MATERIALIZE TTL mutation (once) when they differ.
ALTER TABLE {database}.telemetry{local} MODIFY TTL toDateTime(ts) + INTERVAL 7 DAY;

ALTER TABLE {database}.telemetry{local} MODIFY SETTING ttl_only_drop_parts = 1;

-- Only plausible readings are stored: {telemetry_reasons} is the contract of
-- schemas/plausibility.py rendered as SQL (sinks/plausibility_sql.py), an Array(String)
-- of reasons, empty for a plausible reading. "Now" is the time the block is written.
-- A message is one reading: ClickHouse parses every Avro record a message holds into a
-- row of its own (two readings in one message were stored twice, at one offset), so
-- readings_in_message counts a message's rows (all in one block) and a message of more
-- than one is a dead letter (telemetry_implausible_mv).
-- (A view made by an older DDL gets this query too: see warehouse.render_ddl.)
{kafka_engine_only} CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.telemetry_mv TO {database}.telemetry AS
SELECT
    home_id, region, ts, seq, indoor_temp_c, outdoor_temp_c, power_w, energy_kwh,
    voltage_v, vibration_mm_s, water_flow_lpm, water_temp_c, uv_intensity_mw_cm2,
    pump_pressure_bar,
    _partition AS kafka_partition,
    _offset AS kafka_offset
FROM (
    SELECT *, _partition, _offset, _error, count() OVER (PARTITION BY _partition, _offset) AS readings_in_message
    FROM {database}.telemetry_queue
)
WHERE length(_error) = 0 AND readings_in_message = 1 AND empty({telemetry_reasons});

-- Unparsable messages: the parser's error and the raw bytes (the first 64 kB of them, as
-- every dead letter keeps: a hostile 10 MB message is not stored whole).
{kafka_engine_only} CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.telemetry_dlq_mv TO {database}.dead_letters AS
SELECT _topic AS topic, _partition AS partition, _offset AS offset, {dead_letter_raw} AS raw, {dead_letter_error} AS error
FROM {database}.telemetry_queue
WHERE length(_error) > 0;

-- Parsed but implausible readings: every reason, and the reading as JSON (ClickHouse
-- keeps no raw bytes of a message it parsed; at most 64 kB of it). A message of several
-- readings is one dead letter (its first reading as JSON).
{kafka_engine_only} CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.telemetry_implausible_mv TO {database}.dead_letters AS
SELECT
    _topic AS topic,
    _partition AS partition,
    _offset AS offset,
    substring({telemetry_row_json} AS reading_json,
              1, {dead_letter_max_bytes}) AS raw,
    concat(
        if(readings_in_message > 1,
           concat('message holds ', toString(readings_in_message), ' Avro records; a message is one reading'),
           {telemetry_dead_letter_error}),
        if(length(reading_json) > {dead_letter_max_bytes},
           concat(' (reading as JSON truncated to the first {dead_letter_max_bytes} of ',
                  toString(length(reading_json)), ' bytes)'),
           '')) AS error
FROM (
    SELECT *, _topic, _partition, _offset, _error,
           count() OVER message AS readings_in_message, row_number() OVER message AS reading_in_message
    FROM {database}.telemetry_queue
    WINDOW message AS (PARTITION BY _partition, _offset)
)
WHERE length(_error) = 0
  AND if(readings_in_message > 1, reading_in_message = 1, notEmpty({telemetry_reasons}));
