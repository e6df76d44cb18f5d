-- Maintenance work orders (schemas/work_order.avsc): every version lands; the table
-- keeps the latest version of each order (ReplacingMergeTree on version; read with
-- FINAL, or the work_orders_latest view, for exact answers before merges).
CREATE TABLE IF NOT EXISTS {database}.work_orders_queue
(
    order_id        String,
    asset_id        String,
    home_id         String,
    region          String,
    asset_type      String,
    model           String,
    kind            String,
    source          String,
    opened_ms       DateTime64(3, 'UTC'),
    status          String,
    closed_ms       Nullable(DateTime64(3, 'UTC')),
    failure_ms      Nullable(DateTime64(3, 'UTC')),
    failure_code    Nullable(String),
    cause_code      Nullable(String),
    resolution_code Nullable(String),
    replaced        Bool,
    version         Int64
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{kafka_broker}',
    kafka_topic_list = '{topic_workorders}',
    kafka_group_name = '{consumer_group_prefix}-workorders',
    kafka_format = 'AvroConfluent',
    format_avro_schema_registry_url = '{registry_url}',
    kafka_handle_error_mode = 'stream',
    kafka_flush_interval_ms = 1000;

CREATE TABLE IF NOT EXISTS {database}.work_orders{local}
(
    order_id        String,
    asset_id        String,
    home_id         LowCardinality(String),
    region          LowCardinality(String),
    asset_type      LowCardinality(String),
    model           LowCardinality(String),
    kind            LowCardinality(String),
    source          LowCardinality(String),
    opened_ms       DateTime64(3, 'UTC'),
    status          LowCardinality(String),
    closed_ms       Nullable(DateTime64(3, 'UTC')),
    failure_ms      Nullable(DateTime64(3, 'UTC')),
    failure_code    LowCardinality(Nullable(String)),
    cause_code      LowCardinality(Nullable(String)),
    resolution_code LowCardinality(Nullable(String)),
    replaced        Bool,
    version         Int64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY order_id;

-- In a cluster: sharded by order, so every version of an order meets the others on one
-- shard (ReplacingMergeTree and FINAL only replace within a shard).
{cluster_only} CREATE TABLE IF NOT EXISTS {database}.work_orders AS {database}.work_orders{local}
ENGINE = Distributed('{cluster}', '{database}', 'work_orders{local}', cityHash64(order_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.work_orders_mv TO {database}.work_orders AS
SELECT order_id, asset_id, home_id, region, asset_type, model, kind, source, opened_ms, status,
       closed_ms, failure_ms, failure_code, cause_code, resolution_code, replaced, version
FROM {database}.work_orders_queue
WHERE length(_error) = 0 AND empty({work_order_reasons});

-- Parsed but implausible orders (the work-order rules of schemas/plausibility.py, as SQL
-- by sinks/plausibility_sql.py): every reason, and the order as JSON (at most 64 kB).
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.work_orders_implausible_mv TO {database}.dead_letters AS
SELECT _topic AS topic, _partition AS partition, _offset AS offset,
       substring({work_order_row_json}, 1, {dead_letter_max_bytes}) AS raw,
       {work_order_dead_letter_error} AS error
FROM {database}.work_orders_queue
WHERE length(_error) = 0 AND notEmpty({work_order_reasons});

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.work_orders_dlq_mv TO {database}.dead_letters AS
SELECT _topic AS topic, _partition AS partition, _offset AS offset, {dead_letter_raw} AS raw, {dead_letter_error} AS error
FROM {database}.work_orders_queue
WHERE length(_error) > 0;
