-- Anomaly events from the stream processor, same queue -> view -> MergeTree path.
CREATE TABLE IF NOT EXISTS {database}.anomalies_queue
(
    event_id     String,
    home_id      String,
    region       String,
    metric       String,
    ts           DateTime64(3, 'UTC'),
    detected_at  DateTime64(3, 'UTC'),
    value        Float64,
    score        Float64,
    detector     String,
    window_mean  Float64,
    window_std   Float64,
    window_count Int64,
    zscore       Nullable(Float64),
    severity     String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{kafka_broker}',
    kafka_topic_list = '{topic_anomalies}',
    kafka_group_name = '{consumer_group_prefix}-anomalies',
    kafka_format = 'AvroConfluent',
    format_avro_schema_registry_url = '{registry_url}',
    kafka_handle_error_mode = 'stream',
    kafka_flush_interval_ms = 1000;

CREATE TABLE IF NOT EXISTS {database}.anomalies{local}
(
    event_id     String,
    home_id      LowCardinality(String),
    region       LowCardinality(String),
    metric       LowCardinality(String),
    ts           DateTime64(3, 'UTC'),
    detected_at  DateTime64(3, 'UTC'),
    value        Float64,
    score        Float64,
    detector     LowCardinality(String),
    window_mean  Float64,
    window_std   Float64,
    window_count Int64,
    zscore       Nullable(Float64),
    severity     LowCardinality(String),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
-- By week of arrival, never by the event's own fields: a block always spans one or two
-- partitions, whatever regions or times a (hostile) writer of the topic puts in it (a
-- block over 100 partitions is refused and the Kafka consumer retries it forever).
-- Reads by region, home and event time use the primary key.
PARTITION BY toMonday(ingested_at)
ORDER BY (region, home_id, ts, metric);

-- In a cluster: sharded by home, like telemetry (010).
{cluster_only} CREATE TABLE IF NOT EXISTS {database}.anomalies AS {database}.anomalies{local}
ENGINE = Distributed('{cluster}', '{database}', 'anomalies{local}', cityHash64(home_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.anomalies_mv TO {database}.anomalies AS
SELECT event_id, home_id, region, metric, ts, detected_at, value, score, detector,
       window_mean, window_std, window_count, zscore, severity
FROM {database}.anomalies_queue
WHERE length(_error) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.anomalies_dlq_mv TO {database}.dead_letters AS
SELECT _topic AS topic, _partition AS partition, _offset AS offset, {dead_letter_raw} AS raw, {dead_letter_error} AS error
FROM {database}.anomalies_queue
WHERE length(_error) > 0;
