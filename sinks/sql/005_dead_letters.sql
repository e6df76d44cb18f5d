-- Every Kafka message ClickHouse could not parse (bad magic byte, unknown schema id,
-- truncated body...), with where it came from, its raw bytes and the parser's error.
-- Fed by the *_dlq_mv views below; nothing is dropped silently.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    topic       LowCardinality(String),
    partition   UInt64,
    offset      UInt64,
    raw         String,
    error       String,
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (topic, partition, offset);
