-- unaccounted_offsets: Kafka positions of the telemetry topic for which the warehouse's
-- Kafka-engine path holds neither a reading nor a dead letter.
--
-- ClickHouse's Kafka engine skips a message that parses to no row without a trace, in
-- every error mode: a tombstone (null value) or an empty value never reaches the views,
-- so it is neither stored in `telemetry` nor in `dead_letters` (measured; ClickHouse's
-- KafkaSource logs "return no rows" and moves on). This lists such holes: each range of
-- offsets between two accounted ones, per partition. A hole is a message without a
-- payload, a reading older than the table's 7-day TTL (stored, then dropped with its
-- part), or a reading lost on the way (the batching sink and the processor
-- dead-letter messages without a payload, with reason `truncated`, so their dead
-- letters tell which). Holes before the first or after the last accounted offset of
-- the window are not seen; a sink storing the same topic's dead letters in
-- `dead_letters` fills the holes it dead-lettered.
--
-- Parameters (name, type, default, meaning):
--   since   String   ''    rows stored from this time on (UTC, e.g. 2026-01-31 06:00:00); '' = now - hours
--   hours   UInt32   24    how far back to look when since is ''
--   limit   UInt64   1000  at most this many ranges
WITH
    (SELECT extract(engine_full, 'kafka_topic_list = \'([^\']+)\'') FROM system.tables
     WHERE database = '{database}' AND name = 'telemetry_queue') AS telemetry_topic,
    if({since:String} = '', now64(3, 'UTC') - toIntervalHour({hours:UInt32}),
       parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC')) AS since
SELECT partition, previous + 1 AS first_offset, offset - 1 AS last_offset, offset - previous - 1 AS messages
FROM
(
    SELECT
        partition,
        offset,
        lagInFrame(offset) OVER (PARTITION BY partition ORDER BY offset ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous,
        row_number() OVER (PARTITION BY partition ORDER BY offset) AS n
    FROM
    (
        SELECT DISTINCT toUInt64(kafka_partition) AS partition, kafka_offset AS offset
        FROM {database}.telemetry WHERE ingested_at >= since
        UNION DISTINCT
        SELECT partition, offset FROM {database}.dead_letters WHERE topic = telemetry_topic AND received_at >= since
    )
)
WHERE n > 1 AND offset > previous + 1
ORDER BY partition, first_offset
LIMIT {limit:UInt64};
