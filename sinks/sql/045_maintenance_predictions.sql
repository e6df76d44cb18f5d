-- Maintenance predictions (schemas/maintenance_prediction.avsc), one row per asset and
-- health window. Re-processing after a restart re-sends a window's prediction with the
-- same prediction_id: ReplacingMergeTree keeps one (read with FINAL for exact counts).
CREATE TABLE IF NOT EXISTS {database}.maintenance_predictions_queue
(
    prediction_id           String,
    asset_id                String,
    home_id                 String,
    region                  String,
    asset_type              String,
    ts                      DateTime64(3, 'UTC'),
    model                   String,
    p_fail                  Float64,
    horizon_hours           Float64,
    rul_hours               Float64,
    top_signals             Array(String),
    top_contributions_hours Array(Float64),
    order_id                Nullable(String)
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{kafka_broker}',
    kafka_topic_list = '{topic_predictions}',
    kafka_group_name = '{consumer_group_prefix}-predictions',
    kafka_format = 'AvroConfluent',
    format_avro_schema_registry_url = '{registry_url}',
    kafka_handle_error_mode = 'stream',
    kafka_flush_interval_ms = 1000;

CREATE TABLE IF NOT EXISTS {database}.maintenance_predictions{local}
(
    prediction_id           String,
    asset_id                String,
    home_id                 LowCardinality(String),
    region                  LowCardinality(String),
    asset_type              LowCardinality(String),
    ts                      DateTime64(3, 'UTC'),
    model                   LowCardinality(String),
    p_fail                  Float64,
    horizon_hours           Float64,
    rul_hours               Float64,
    top_signals             Array(LowCardinality(String)),
    top_contributions_hours Array(Float64),
    order_id                Nullable(String),
    ingested_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (asset_id, ts, prediction_id);

-- In a cluster: sharded by asset, so a re-sent prediction meets its first copy on one
-- shard (ReplacingMergeTree and FINAL only replace within a shard).
{cluster_only} CREATE TABLE IF NOT EXISTS {database}.maintenance_predictions AS {database}.maintenance_predictions{local}
ENGINE = Distributed('{cluster}', '{database}', 'maintenance_predictions{local}', cityHash64(asset_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.maintenance_predictions_mv TO {database}.maintenance_predictions AS
SELECT prediction_id, asset_id, home_id, region, asset_type, ts, model, p_fail, horizon_hours, rul_hours,
       top_signals, top_contributions_hours, order_id
FROM {database}.maintenance_predictions_queue
WHERE length(_error) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.maintenance_predictions_dlq_mv TO {database}.dead_letters AS
SELECT _topic AS topic, _partition AS partition, _offset AS offset, {dead_letter_raw} AS raw, {dead_letter_error} AS error
FROM {database}.maintenance_predictions_queue
WHERE length(_error) > 0;
