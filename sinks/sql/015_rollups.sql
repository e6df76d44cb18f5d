-- Real-time roll-ups of telemetry: hourly and daily, per home and per region.
--
-- Source: materialized views on the `telemetry` MergeTree, not on the Kafka table.
-- A view on a table fires on every block inserted into it, whoever inserts: the
-- Kafka path (telemetry_queue -> telemetry_mv -> telemetry cascades into these
-- views), direct inserts, backfills and replays. So the roll-ups always summarise
-- exactly what `telemetry` received, and the Kafka-table filters (_error, the
-- dead-letter split) stay in one place. (The batching sink of 030 writes its own
-- tables, not `telemetry`, so it does not feed these roll-ups.)
-- Views fire on inserts only: the 7-day TTL of `telemetry` (010) never touches what
-- was rolled up. A duplicate inserted into `telemetry` (a replay) is counted twice
-- here as it is there.
--
-- Chain: only energy_hourly_by_home reads the raw rows; the other three roll-ups are
-- views on IT, fed with each block of partial hourly states it receives (never with
-- its merges), which they combine with -MergeState. The raw rows are aggregated once
-- instead of four times: inserting 8.6M readings on one thread took 3.3-6.0 s
-- without views, +1.7-2.6 s with this chain, +6.8-7.9 s with four views reading
-- `telemetry` (embedded engine, shared machine). An INSERT into
-- energy_hourly_by_home (a back-fill) reaches the other three the same way.
--
-- Tables: AggregatingMergeTree holding aggregate *states* (avgState, argMaxState,
-- uniqState; min/max/sum as SimpleAggregateFunction), never finished values, so a
-- row stays exact whatever parts are merged together and whenever. Each insert
-- block adds one row per key; background merges (or OPTIMIZE … FINAL) fold them.
-- Readers never read the tables: the *_v views finish the states (-Merge, GROUP BY
-- the full key), which is correct before, during and after merges. Filters on the
-- views' key columns are pushed down to the tables' primary keys.
--
-- ORDER BY (region, home_id, period) / (region, period): the same prefix as
-- `telemetry`, for the queries made of them (one home over time; a region's homes
-- in an hour or day; a region over time). Every key column is a grouping key, so
-- merges fold exactly the rows that belong together.
-- PARTITION BY month (hourly) or year (daily): a handful of partitions over the
-- retention, few parts per insert. Region is not in the partition key (unlike the
-- raw table): roll-ups are small and the primary key already narrows to a region.
--
-- TTL (views' targets do not inherit the source's): hourly rows 400 days, daily rows
-- 5 years; ttl_only_drop_parts drops whole expired parts (a month or a year at a
-- time) instead of rewriting them. The ALTER … MODIFY TTL statements give a table
-- created by an older DDL the same TTL (a no-op when it already has it).
--
-- Energy: energy_kwh is a cumulative meter, so the energy of a period is the meter at
-- the period's last reading minus the meter at the last reading BEFORE the period (the
-- home's previous hour or day row in the roll-up, however far back), or minus the
-- period's first reading for a home's first period. Every increment between two
-- readings thus belongs to exactly one period (the one of the later reading), so the
-- hours of a day add up to the day, and the days to the meter's difference, at any
-- sampling rate. (max - min within the hour lost the increment across each boundary:
-- 8% low at one reading per 5 minutes.) The states keep min/max of the meter per
-- period; the views look the previous period up with a window over the home's rows
-- (energy_hourly_by_home_between below for reports over a range).
-- A meter that goes back (replaced, reset, or a second simulation of the same home
-- ids starting from a lower reading) would make its period negative: a period whose
-- highest reading is below the previous period's counts its own rise instead
-- (highest - lowest reading within it), never less than zero, as Prometheus' increase()
-- treats a counter reset. The rise across the reset itself is unknowable and is not
-- counted, so across a reset the periods no longer add up to the meter's difference.
-- A region's energy is the sum of its homes' (from the per-home roll-ups): meter
-- differences cannot be merged across homes inside one state.
--
-- In a cluster (ECO_CLICKHOUSE_CLUSTER, docs/cluster.md) the views chain each shard's
-- own tables (telemetry_local -> energy_hourly_by_home_local -> ...), so every shard
-- rolls up the rows it stores, and the readers (the *_v views, the named queries) read
-- the Distributed tables over them. Per-home rows are complete on one shard (telemetry
-- is sharded by home); per-region states come from every shard and are merged by the
-- readers' -Merge like any two parts (their Distributed tables shard by rand(): rows
-- are placed by the views, never by that key).
--
-- Adding these views to a warehouse that already holds telemetry: only new inserts
-- are rolled up. To back-fill what is still in the raw table once, run
--   INSERT INTO eco.energy_hourly_by_home <the SELECT of energy_hourly_by_home_mv
--   with WHERE ts < T before its GROUP BY>
-- with T the time the views were created (rows after T are already rolled up); the
-- region and daily roll-ups follow from it.

-- ------------------------------------------------------------ hourly per home
CREATE TABLE IF NOT EXISTS {database}.energy_hourly_by_home{local}
(
    region      LowCardinality(String),
    home_id     LowCardinality(String),
    hour        DateTime('UTC'),
    readings    SimpleAggregateFunction(sum, UInt64),
    first_ts    SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    power_avg   AggregateFunction(avg, Float64),
    power_min   SimpleAggregateFunction(min, Float64),
    power_max   SimpleAggregateFunction(max, Float64),
    peak_at     AggregateFunction(argMax, DateTime64(3, 'UTC'), Float64),
    meter_min   SimpleAggregateFunction(min, Float64),
    meter_max   SimpleAggregateFunction(max, Float64),
    indoor_avg  AggregateFunction(avg, Float64),
    outdoor_avg AggregateFunction(avg, Float64),
    outdoor_min SimpleAggregateFunction(min, Float64),
    outdoor_max SimpleAggregateFunction(max, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (region, home_id, hour)
TTL hour + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

ALTER TABLE {database}.energy_hourly_by_home{local} MODIFY TTL hour + INTERVAL 400 DAY;

{cluster_only} CREATE TABLE IF NOT EXISTS {database}.energy_hourly_by_home AS {database}.energy_hourly_by_home{local}
ENGINE = Distributed('{cluster}', '{database}', 'energy_hourly_by_home{local}', cityHash64(home_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.energy_hourly_by_home_mv
TO {database}.energy_hourly_by_home{local} AS
SELECT
    region,
    home_id,
    toStartOfHour(ts) AS hour,
    count() AS readings,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    avgState(power_w) AS power_avg,
    min(power_w) AS power_min,
    max(power_w) AS power_max,
    argMaxState(ts, power_w) AS peak_at,
    min(energy_kwh) AS meter_min,
    max(energy_kwh) AS meter_max,
    avgState(indoor_temp_c) AS indoor_avg,
    avgState(outdoor_temp_c) AS outdoor_avg,
    min(outdoor_temp_c) AS outdoor_min,
    max(outdoor_temp_c) AS outdoor_max
FROM {database}.telemetry{local}
GROUP BY region, home_id, hour;

-- energy_hourly_by_home_between(since, until): the hours in [since, until) (since
-- rounded down to its hour). Parameterized so the range reaches the table's primary
-- key before the window that finds each hour's previous one; the first hour of a home
-- in the range takes the meter before it from the older rows (a plain max over one
-- column: the meter is cumulative, so the highest reading before the range is its
-- last). Filtering before the window is what keeps reports fast (figures in README).
-- The reports (sinks/queries) read this; energy_hourly_by_home_v is the same over
-- all time (exact too, but it reads every row: filter it only on small tables).
CREATE OR REPLACE VIEW {database}.energy_hourly_by_home_between AS
SELECT
    c.region AS region,
    c.home_id AS home_id,
    c.hour AS hour,
    c.readings AS readings,
    c.first_ts AS first_ts,
    c.last_ts AS last_ts,
    c.meter_end_kwh - if(
        (coalesce(
            lagInFrame(toNullable(c.meter_end_kwh)) OVER (PARTITION BY c.region, c.home_id ORDER BY c.hour
                                                          ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
            b.meter_before_kwh,
            c.meter_start_kwh) AS meter_previous_kwh) > c.meter_end_kwh,
        c.meter_start_kwh,  -- the meter went back (reset, replaced): see "Energy" above
        meter_previous_kwh) AS energy_kwh,
    c.power_avg_w AS power_avg_w,
    c.power_min_w AS power_min_w,
    c.power_max_w AS power_max_w,
    c.peak_at AS peak_at,
    c.meter_start_kwh AS meter_start_kwh,
    c.meter_end_kwh AS meter_end_kwh,
    c.indoor_avg_c AS indoor_avg_c,
    c.outdoor_avg_c AS outdoor_avg_c,
    c.outdoor_min_c AS outdoor_min_c,
    c.outdoor_max_c AS outdoor_max_c
FROM
(
    SELECT
        region,
        home_id,
        hour,
        sum(readings) AS readings,
        min(first_ts) AS first_ts,
        max(last_ts) AS last_ts,
        avgMerge(power_avg) AS power_avg_w,
        min(power_min) AS power_min_w,
        max(power_max) AS power_max_w,
        argMaxMerge(peak_at) AS peak_at,
        min(meter_min) AS meter_start_kwh,
        max(meter_max) AS meter_end_kwh,
        avgMerge(indoor_avg) AS indoor_avg_c,
        avgMerge(outdoor_avg) AS outdoor_avg_c,
        min(outdoor_min) AS outdoor_min_c,
        max(outdoor_max) AS outdoor_max_c
    FROM {database}.energy_hourly_by_home
    WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')}) AND hour < {until:DateTime64(3, 'UTC')}
    GROUP BY region, home_id, hour
) AS c
LEFT JOIN
(
    SELECT region, home_id, toNullable(max(meter_max)) AS meter_before_kwh
    FROM {database}.energy_hourly_by_home
    WHERE hour < toStartOfHour({since:DateTime64(3, 'UTC')})
    GROUP BY region, home_id
) AS b ON b.region = c.region AND b.home_id = c.home_id;

CREATE OR REPLACE VIEW {database}.energy_hourly_by_home_v AS
SELECT *
FROM {database}.energy_hourly_by_home_between(
    since = toDateTime64('1970-01-01 00:00:00', 3, 'UTC'), until = toDateTime64('2299-12-31 00:00:00', 3, 'UTC'));

-- ---------------------------------------------------------- hourly per region
CREATE TABLE IF NOT EXISTS {database}.energy_hourly_by_region{local}
(
    region      LowCardinality(String),
    hour        DateTime('UTC'),
    readings    SimpleAggregateFunction(sum, UInt64),
    homes       AggregateFunction(uniq, String),
    power_avg   AggregateFunction(avg, Float64),
    power_max   SimpleAggregateFunction(max, Float64),
    indoor_avg  AggregateFunction(avg, Float64),
    outdoor_avg AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (region, hour)
TTL hour + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

ALTER TABLE {database}.energy_hourly_by_region{local} MODIFY TTL hour + INTERVAL 400 DAY;

{cluster_only} CREATE TABLE IF NOT EXISTS {database}.energy_hourly_by_region AS {database}.energy_hourly_by_region{local}
ENGINE = Distributed('{cluster}', '{database}', 'energy_hourly_by_region{local}', rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.energy_hourly_by_region_mv
TO {database}.energy_hourly_by_region{local} AS
SELECT
    region,
    hour,
    sum(readings) AS readings,
    uniqState(toString(home_id)) AS homes,
    avgMergeState(power_avg) AS power_avg,
    max(power_max) AS power_max,
    avgMergeState(indoor_avg) AS indoor_avg,
    avgMergeState(outdoor_avg) AS outdoor_avg
FROM {database}.energy_hourly_by_home{local}
GROUP BY region, hour;

-- power_avg_w is the mean reading (per home and instant); homes is uniq()'s count
-- (exact below ~65k homes per region and hour, within ~1% above).
CREATE OR REPLACE VIEW {database}.energy_hourly_by_region_v AS
SELECT
    region,
    hour,
    sum(readings) AS readings,
    uniqMerge(homes) AS homes,
    avgMerge(power_avg) AS power_avg_w,
    max(power_max) AS power_max_w,
    avgMerge(indoor_avg) AS indoor_avg_c,
    avgMerge(outdoor_avg) AS outdoor_avg_c
FROM {database}.energy_hourly_by_region
GROUP BY region, hour;

-- ------------------------------------------------------ daily peaks per home
CREATE TABLE IF NOT EXISTS {database}.energy_daily_by_home{local}
(
    region      LowCardinality(String),
    home_id     LowCardinality(String),
    day         Date,
    readings    SimpleAggregateFunction(sum, UInt64),
    power_avg   AggregateFunction(avg, Float64),
    power_peak  SimpleAggregateFunction(max, Float64),
    peak_at     AggregateFunction(argMax, DateTime64(3, 'UTC'), Float64),
    meter_min   SimpleAggregateFunction(min, Float64),
    meter_max   SimpleAggregateFunction(max, Float64),
    outdoor_avg AggregateFunction(avg, Float64),
    outdoor_min SimpleAggregateFunction(min, Float64),
    outdoor_max SimpleAggregateFunction(max, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (region, home_id, day)
TTL day + INTERVAL 5 YEAR
SETTINGS ttl_only_drop_parts = 1;

ALTER TABLE {database}.energy_daily_by_home{local} MODIFY TTL day + INTERVAL 5 YEAR;

{cluster_only} CREATE TABLE IF NOT EXISTS {database}.energy_daily_by_home AS {database}.energy_daily_by_home{local}
ENGINE = Distributed('{cluster}', '{database}', 'energy_daily_by_home{local}', cityHash64(home_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.energy_daily_by_home_mv
TO {database}.energy_daily_by_home{local} AS
SELECT
    region,
    home_id,
    toDate(hour) AS day,
    sum(readings) AS readings,
    avgMergeState(power_avg) AS power_avg,
    max(power_max) AS power_peak,
    argMaxMergeState(peak_at) AS peak_at,
    min(meter_min) AS meter_min,
    max(meter_max) AS meter_max,
    avgMergeState(outdoor_avg) AS outdoor_avg,
    min(outdoor_min) AS outdoor_min,
    max(outdoor_max) AS outdoor_max
FROM {database}.energy_hourly_by_home{local}
GROUP BY region, home_id, day;

-- load_factor: mean over peak power (1 = flat load). peak_at: when the peak was
-- read (the first such reading in a merge order when several are equal).
CREATE OR REPLACE VIEW {database}.energy_daily_by_home_v AS
SELECT
    region,
    home_id,
    day,
    readings,
    meter_end_kwh - if(
        (coalesce(
            lagInFrame(toNullable(meter_end_kwh)) OVER (PARTITION BY region, home_id ORDER BY day
                                                        ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
            meter_start_kwh) AS meter_previous_kwh) > meter_end_kwh,
        meter_start_kwh,  -- the meter went back (reset, replaced): see "Energy" above
        meter_previous_kwh) AS energy_kwh,
    power_avg_w,
    power_peak_w,
    peak_at,
    load_factor,
    outdoor_avg_c,
    outdoor_min_c,
    outdoor_max_c
FROM
(
    SELECT
        region,
        home_id,
        day,
        sum(readings) AS readings,
        min(meter_min) AS meter_start_kwh,
        max(meter_max) AS meter_end_kwh,
        avgMerge(power_avg) AS power_avg_w,
        max(power_peak) AS power_peak_w,
        argMaxMerge(peak_at) AS peak_at,
        if(power_peak_w > 0, power_avg_w / power_peak_w, NULL) AS load_factor,
        avgMerge(outdoor_avg) AS outdoor_avg_c,
        min(outdoor_min) AS outdoor_min_c,
        max(outdoor_max) AS outdoor_max_c
    FROM {database}.energy_daily_by_home
    GROUP BY region, home_id, day
);

-- --------------------------------------------------------- daily per region
CREATE TABLE IF NOT EXISTS {database}.energy_daily_by_region{local}
(
    region      LowCardinality(String),
    day         Date,
    readings    SimpleAggregateFunction(sum, UInt64),
    homes       AggregateFunction(uniq, String),
    power_avg   AggregateFunction(avg, Float64),
    power_peak  SimpleAggregateFunction(max, Float64),
    peak        AggregateFunction(argMax, Tuple(String, DateTime64(3, 'UTC')), Float64),
    outdoor_avg AggregateFunction(avg, Float64),
    outdoor_min SimpleAggregateFunction(min, Float64),
    outdoor_max SimpleAggregateFunction(max, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (region, day)
TTL day + INTERVAL 5 YEAR
SETTINGS ttl_only_drop_parts = 1;

ALTER TABLE {database}.energy_daily_by_region{local} MODIFY TTL day + INTERVAL 5 YEAR;

{cluster_only} CREATE TABLE IF NOT EXISTS {database}.energy_daily_by_region AS {database}.energy_daily_by_region{local}
ENGINE = Distributed('{cluster}', '{database}', 'energy_daily_by_region{local}', rand());

-- peak: (home, time) of the day's highest reading as one state, so the two always
-- name the same reading. Each incoming hourly row carries its block's peak power
-- (power_max) and the time of that very reading (its peak_at state, finalised).
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.energy_daily_by_region_mv
TO {database}.energy_daily_by_region{local} AS
SELECT
    region,
    toDate(hour) AS day,
    sum(readings) AS readings,
    uniqState(toString(home_id)) AS homes,
    avgMergeState(power_avg) AS power_avg,
    max(power_max) AS power_peak,
    argMaxState((toString(home_id), finalizeAggregation(peak_at)), power_max) AS peak,
    avgMergeState(outdoor_avg) AS outdoor_avg,
    min(outdoor_min) AS outdoor_min,
    max(outdoor_max) AS outdoor_max
FROM {database}.energy_hourly_by_home{local}
GROUP BY region, day;

CREATE OR REPLACE VIEW {database}.energy_daily_by_region_v AS
SELECT
    region,
    day,
    sum(readings) AS readings,
    uniqMerge(homes) AS homes,
    avgMerge(power_avg) AS power_avg_w,
    max(power_peak) AS power_peak_w,
    argMaxMerge(peak) AS peak_reading,
    tupleElement(peak_reading, 1) AS peak_home_id,
    tupleElement(peak_reading, 2) AS peak_at,
    avgMerge(outdoor_avg) AS outdoor_avg_c,
    min(outdoor_min) AS outdoor_min_c,
    max(outdoor_max) AS outdoor_max_c
FROM {database}.energy_daily_by_region
GROUP BY region, day;
