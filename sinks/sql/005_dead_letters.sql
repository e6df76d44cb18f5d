-- Every Kafka message ClickHouse could not parse (bad magic byte, unknown schema id,
-- truncated body...), with where it came from, its raw bytes and the parser's error.
-- Fed by the *_dlq_mv views below; nothing is dropped silently.
CREATE TABLE IF NOT EXISTS {database}.dead_letters{local}
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

-- In a cluster (ECO_CLICKHOUSE_CLUSTER, docs/cluster.md) the views and the sink write,
-- and readers read, `dead_letters` = every shard's dead_letters_local. A message's
-- position picks the shard, so a replayed dead letter meets its first copy there.
{cluster_only} CREATE TABLE IF NOT EXISTS {database}.dead_letters AS {database}.dead_letters{local}
ENGINE = Distributed('{cluster}', '{database}', 'dead_letters{local}', cityHash64(topic, partition, offset));
