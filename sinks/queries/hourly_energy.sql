-- hourly_energy: energy and power per hour, per home or per region, from the
-- hourly roll-ups (kept 400 days).
--
-- Energy of an hour: the meter's rise since the home's last reading before the hour
-- (energy_hourly_by_home_between, sinks/sql/015_rollups.sql), so the hours of a day
-- add up to the day.
-- by = home: one row per home and hour (energy_hourly_by_home_between): metered energy,
-- mean / min / max power, mean indoor and outdoor temperature, readings.
-- by = region: one row per region and hour: the region's metered energy (the sum
-- of its homes'), the homes reporting, mean reading and highest reading of power
-- and the mean temperatures (energy_hourly_by_region_v).
--
-- Parameters (name, type, default, meaning):
--   by      String   home   home or region
--   region  String   ''     one region; '' = every region
--   home    String   ''     one home id (by = home only); '' = every home
--   since   String   ''     first hour (UTC, e.g. 2026-01-31 06:00:00); '' = until - hours
--   until   String   ''     end (exclusive); '' = now
--   hours   UInt32   24     length of the report when since is ''
--   limit   UInt64   10000  at most this many rows
WITH
    if({until:String} = '', now64(3, 'UTC'),
       parseDateTime64BestEffort(if({until:String} = '', '1970-01-01', {until:String}), 3, 'UTC')) AS t_until,
    if({since:String} = '', t_until - toIntervalHour({hours:UInt32}),
       parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC')) AS t_since
SELECT
    region,
    home_id,
    hour,
    readings,
    homes,
    energy_kwh,
    power_avg_w,
    power_min_w,
    power_max_w,
    indoor_avg_c,
    outdoor_avg_c
FROM
(
    SELECT
        region,
        toString(home_id) AS home_id,
        hour,
        readings,
        toUInt64(1) AS homes,
        energy_kwh,
        power_avg_w,
        power_min_w,
        power_max_w,
        indoor_avg_c,
        outdoor_avg_c
    FROM {database}.energy_hourly_by_home_between(since = t_since, until = t_until)
    WHERE {by:String} = 'home'
      AND hour >= toStartOfHour(t_since) AND hour < t_until
      AND ({region:String} = '' OR region = {region:String})
      AND ({home:String} = '' OR home_id = {home:String})

    UNION ALL

    SELECT
        r.region AS region,
        '' AS home_id,
        r.hour AS hour,
        r.readings AS readings,
        r.homes AS homes,
        e.energy_kwh AS energy_kwh,
        r.power_avg_w AS power_avg_w,
        CAST(NULL AS Nullable(Float64)) AS power_min_w,
        r.power_max_w AS power_max_w,
        r.indoor_avg_c AS indoor_avg_c,
        r.outdoor_avg_c AS outdoor_avg_c
    FROM
    (
        SELECT *
        FROM {database}.energy_hourly_by_region_v
        WHERE {by:String} = 'region'
          AND hour >= toStartOfHour(t_since) AND hour < t_until
          AND ({region:String} = '' OR region = {region:String})
    ) AS r
    LEFT JOIN
    (
        SELECT region, hour, sum(energy_kwh) AS energy_kwh
        FROM {database}.energy_hourly_by_home_between(since = t_since, until = t_until)
        WHERE {by:String} = 'region'
          AND hour >= toStartOfHour(t_since) AND hour < t_until
          AND ({region:String} = '' OR region = {region:String})
        GROUP BY region, hour
    ) AS e ON e.region = r.region AND e.hour = r.hour
)
WHERE (SELECT throwIf({by:String} NOT IN ('home', 'region'), 'by must be home or region')) = 0
ORDER BY region, home_id, hour
LIMIT {limit:UInt64};
