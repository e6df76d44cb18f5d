-- daily_peaks: each day's highest power readings, per region, from the daily
-- roll-ups (energy_daily_by_home_v, kept 5 years).
--
-- Per home and day: the peak reading and when it was read, the mean power, the
-- load factor (mean / peak: low = a peaky load worth shifting), the metered energy
-- and the outdoor temperature range. The `top` homes with the highest peaks of each
-- region and day, highest first.
--
-- Parameters (name, type, default, meaning):
--   region  String   ''    region to report; '' = every region
--   home    String   ''    one home id; '' = every home
--   since   String   ''    first day (e.g. 2026-01-01); '' = until - days
--   until   String   ''    day after the last one (exclusive); '' = tomorrow (UTC), so today is included
--   days    UInt32   7     number of days when since is ''
--   top     UInt32   10    homes per region and day
SELECT
    day,
    region,
    home_id,
    power_peak_w,
    peak_at,
    power_avg_w,
    load_factor,
    energy_kwh,
    outdoor_min_c,
    outdoor_max_c,
    readings
FROM
(
    WITH
        if({until:String} = '', toDate(now(), 'UTC') + 1,
           toDate(parseDateTime64BestEffort(if({until:String} = '', '1970-01-01', {until:String}), 3, 'UTC'))) AS d_until,
        if({since:String} = '', d_until - {days:UInt32},
           toDate(parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC'))) AS d_since
    SELECT *
    FROM {database}.energy_daily_by_home_v
    WHERE day >= d_since
      AND day < d_until
      AND ({region:String} = '' OR region = {region:String})
      AND ({home:String} = '' OR home_id = {home:String})
)
ORDER BY day, region, power_peak_w DESC, home_id
LIMIT {top:UInt32} BY day, region;
