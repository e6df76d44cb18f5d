-- inefficient_homes: the homes using the most energy per heating degree-day,
-- compared with their region's peers (candidates for a retrofit).
--
-- From the hourly roll-ups (energy_hourly_by_home_between, kept 400 days): a home's
-- energy is the sum of its metered hourly energy (each hour from the home's last
-- reading before it, so the sum is the meter's rise); its heating degree-days are
-- sum(max(0, base_c - hourly mean outdoor_temp_c)) / 24 over the same hours (its
-- own sensor, so a home and its energy always cover the same time). Homes with
-- fewer than `min_hdd` degree-days are left out: in mild weather the ratio is mostly
-- base load. ratio = the home's kWh/HDD over the median kWh/HDD of its region's
-- homes (all of them, itself included); the `top` highest per region with
-- ratio >= min_ratio are returned, rank 1 first.
--
-- Parameters (name, type, default, meaning):
--   region     String   ''     region to rank; '' = every region
--   base_c     Float64  18     base temperature of the degree-days, degrees C
--   top        UInt32   10     homes per region
--   min_ratio  Float64  1      only homes at least this far above the region median (1 = above it)
--   min_hdd    Float64  1      leave out homes with fewer degree-days
--   since      String   ''     from this time (UTC, e.g. 2026-01-01); '' = until - days
--   until      String   ''     up to this time (exclusive); '' = now
--   days       UInt32   30     length of the period when since is ''
SELECT
    region,
    rank,
    home_id,
    energy_kwh,
    hdd,
    kwh_per_hdd,
    region_median_kwh_per_hdd,
    ratio_to_region,
    region_homes,
    hours
FROM
(
    SELECT
        region,
        home_id,
        energy_kwh,
        hdd,
        hours,
        energy_kwh / hdd AS kwh_per_hdd,
        quantileExactInclusive(0.5)(kwh_per_hdd) OVER (PARTITION BY region) AS region_median_kwh_per_hdd,
        count() OVER (PARTITION BY region) AS region_homes,
        kwh_per_hdd / region_median_kwh_per_hdd AS ratio_to_region,
        row_number() OVER (PARTITION BY region ORDER BY kwh_per_hdd DESC, home_id) AS rank
    FROM
    (
        WITH
            if({until:String} = '', now64(3, 'UTC'),
               parseDateTime64BestEffort(if({until:String} = '', '1970-01-01', {until:String}), 3, 'UTC')) AS t_until,
            if({since:String} = '', t_until - toIntervalDay({days:UInt32}),
               parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC')) AS t_since
        SELECT
            region,
            home_id,
            sum(energy_kwh) AS energy_kwh,
            sum(greatest(0, {base_c:Float64} - outdoor_avg_c)) / 24 AS hdd,
            count() AS hours
        FROM {database}.energy_hourly_by_home_between(since = t_since, until = t_until)
        WHERE hour >= toStartOfHour(t_since)
          AND hour < t_until
          AND ({region:String} = '' OR region = {region:String})
        GROUP BY region, home_id
        HAVING hdd >= greatest({min_hdd:Float64}, 1e-9)
    )
)
WHERE rank <= {top:UInt32}
  AND ratio_to_region >= {min_ratio:Float64}
ORDER BY region, rank;
