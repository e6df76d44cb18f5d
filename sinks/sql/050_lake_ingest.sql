-- Continuous S3 ingestion (`ecoretrofit lake ingest`, sinks/lake_ingest.py): each new
-- Parquet object under the lake bucket's landing/telemetry/ prefix is inserted once into
-- this Null table; its views apply the same plausibility contract as the Kafka path's
-- (010_telemetry.sql): plausible readings to telemetry, the rest to dead_letters.
-- The ingester gives every MergeTree table these views reach (telemetry, dead_letters,
-- the roll-ups) a deduplication window and inserts with the object key as
-- insert_deduplication_token: an object inserted twice is stored once.
-- telemetry's columns (the reading, its lineage, ingested_at unused) plus the object key.
CREATE TABLE IF NOT EXISTS {database}.telemetry_lake_incoming AS {database}.telemetry{local}
ENGINE = Null;

ALTER TABLE {database}.telemetry_lake_incoming ADD COLUMN IF NOT EXISTS lake_key String;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.telemetry_lake_mv TO {database}.telemetry AS
SELECT
    home_id, region, ts, seq, indoor_temp_c, outdoor_temp_c, power_w, energy_kwh,
    voltage_v, vibration_mm_s, water_flow_lpm, water_temp_c, uv_intensity_mw_cm2,
    pump_pressure_bar, kafka_partition, kafka_offset
FROM {database}.telemetry_lake_incoming
WHERE empty({telemetry_reasons});

-- Implausible readings: topic names the object (lake:<key>), partition/offset are the
-- row's lineage columns from the file.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.telemetry_lake_implausible_mv TO {database}.dead_letters AS
SELECT
    concat('lake:', lake_key) AS topic,
    kafka_partition AS partition,
    kafka_offset AS offset,
    substring({telemetry_row_json}, 1, {dead_letter_max_bytes}) AS raw,
    {telemetry_dead_letter_error} AS error
FROM {database}.telemetry_lake_incoming
WHERE notEmpty({telemetry_reasons});

-- The ingester's ledger: one row per object, written after its insert. A key here is
-- never read again; a crash before this row is written repeats the insert, which the
-- token makes a no-op.
CREATE TABLE IF NOT EXISTS {database}.lake_ingested
(
    key         String,
    rows        UInt64,                       -- rows read from the object
    status      LowCardinality(String),       -- stored | rejected
    error       String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY key;
