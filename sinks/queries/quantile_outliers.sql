-- quantile_outliers: homes whose energy in an hour is above the p99 of their region
-- for that hour.
--
-- Per (region, hour), each home's metered energy (energy_hourly_by_home_between, kept
-- 400 days) is compared with the `quantile` of its PEERS: the region's other homes
-- in that hour, linear interpolation between order statistics (numpy's default,
-- ClickHouse's quantileExactInclusive). Leaving the home itself out keeps one large
-- outlier from raising its own bar; it is flagged when energy > ratio x that value.
-- In a region of fewer than ~100 homes the p99 of the peers lies between the two
-- highest of them, so its top home is above it in almost every hour: there, ask
-- for a margin (ratio 1.5 = half as much again as the peers' p99).
--
-- Parameters (name, type, default, meaning):
--   region     String   ''     region to scan; '' = every region
--   quantile   Float64  0.99   quantile of the peers' hourly energy
--   ratio      Float64  1      flag when energy_kwh > ratio x the peers' quantile; 0 = every home-hour
--   min_homes  UInt32   10     skip region-hours with fewer homes reporting (at least 2)
--   since      String   ''     first hour (UTC, e.g. 2026-01-31 06:00:00); '' = until - hours
--   until      String   ''     end (exclusive); '' = now
--   hours      UInt32   24     length of the report when since is ''
--   limit      UInt64   1000   at most this many rows
WITH hourly AS
(
    WITH
        if({until:String} = '', now64(3, 'UTC'),
           parseDateTime64BestEffort(if({until:String} = '', '1970-01-01', {until:String}), 3, 'UTC')) AS t_until,
        if({since:String} = '', t_until - toIntervalHour({hours:UInt32}),
           parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC')) AS t_since
    SELECT region, home_id, hour, energy_kwh
    FROM {database}.energy_hourly_by_home_between(since = t_since, until = t_until)
    WHERE hour >= toStartOfHour(t_since)
      AND hour < t_until
      AND ({region:String} = '' OR region = {region:String})
      AND (SELECT throwIf({quantile:Float64} < 0 OR {quantile:Float64} > 1, 'quantile must be in [0, 1]')) = 0
)
SELECT
    region,
    hour,
    home_id,
    energy_kwh,
    peers_quantile_kwh,
    if(peers_quantile_kwh > 0, energy_kwh / peers_quantile_kwh, NULL) AS ratio_to_peers,
    region_homes
FROM
(
    SELECT
        region,
        hour,
        home_id,
        energy_kwh,
        length(sorted) AS region_homes,
        region_homes - 1 AS peers,
        {quantile:Float64} * (peers - 1) AS pos,
        toUInt64(floor(pos)) AS lo,
        least(lo + 1, peers - 1) AS hi,
        -- the peers are `sorted` without this home's element (0-based rank - 1)
        arrayElement(sorted, lo + 1 + (lo >= rank - 1)) AS v_lo,
        arrayElement(sorted, hi + 1 + (hi >= rank - 1)) AS v_hi,
        v_lo + (pos - lo) * (v_hi - v_lo) AS peers_quantile_kwh
    FROM
    (
        SELECT
            region,
            hour,
            home_id,
            energy_kwh,
            row_number() OVER (PARTITION BY region, hour ORDER BY energy_kwh, home_id) AS rank
        FROM hourly
    ) AS h
    INNER JOIN
    (
        SELECT region, hour, arraySort(groupArray(energy_kwh)) AS sorted
        FROM hourly
        GROUP BY region, hour
    ) AS s USING (region, hour)
    WHERE length(sorted) >= greatest({min_homes:UInt32}, 2)
)
WHERE energy_kwh > {ratio:Float64} * peers_quantile_kwh
ORDER BY hour, region, ratio_to_peers DESC, home_id
LIMIT {limit:UInt64};
