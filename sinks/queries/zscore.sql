-- zscore: rolling z-score of the raw readings, per home and metric, in SQL.
--
-- The warehouse twin of the stream processor's detector (RollingZScore in
-- processors/detectors/zscore.py): each reading is scored against the `window`
-- readings of the same home and metric BEFORE it (score, then learn), with their
-- mean and sample standard deviation (n - 1); z = (value - mean) / max(std, 1e-6);
-- no z until the window holds `warmup` readings (at least 2, at most `window`).
-- NULL and non-finite values are skipped, as the processor skips them. Readings of
-- a home are ordered by (ts, seq). score = erf(|z| / sqrt 2), the processor's scale.
-- Reads the raw table, which keeps 7 days. Windows reach back `lookback_minutes`
-- before `since`, so the first reported readings have full windows (the processor
-- has seen everything before them).
--
-- Parameters (name, type, default, meaning):
--   region            String   ''       region to scan; '' = every region
--   home              String   ''       one home id; '' = every home
--   metric            String   power_w  indoor_temp_c, power_w, voltage_v, vibration_mm_s, water_flow_lpm, water_temp_c, uv_intensity_mw_cm2, pump_pressure_bar, or all
--   window            UInt32   120      readings in the window (ECO_ZSCORE_WINDOW of the processor)
--   warmup            UInt32   30       readings the window needs before a z is given (ECO_ZSCORE_WARMUP)
--   threshold         Float64  4        report readings with |z| >= threshold; 0 = every reading, also those without z
--   since             String   ''       report from this time on (UTC, e.g. 2026-01-31 12:00:00); '' = until - hours
--   until             String   ''       report up to this time (exclusive); '' = now
--   hours             UInt32   1        length of the report when since is ''
--   lookback_minutes  UInt32   60       readings this long before since fill the first windows
--   limit             UInt64   10000    at most this many rows
SELECT
    region,
    home_id,
    metric,
    ts,
    value,
    window_mean,
    window_std,
    window_count,
    zscore,
    if(zscore IS NULL, NULL, erf(abs(zscore) / sqrt(2))) AS score
FROM
(
    SELECT
        region,
        home_id,
        metric,
        ts,
        value,
        reported,
        avg(value) OVER (PARTITION BY region, home_id, metric ORDER BY ts, seq
                         ROWS BETWEEN {window:UInt32} PRECEDING AND 1 PRECEDING) AS window_mean,
        stddevSampStable(value) OVER (PARTITION BY region, home_id, metric ORDER BY ts, seq
                                      ROWS BETWEEN {window:UInt32} PRECEDING AND 1 PRECEDING) AS window_sd,
        count() OVER (PARTITION BY region, home_id, metric ORDER BY ts, seq
                      ROWS BETWEEN {window:UInt32} PRECEDING AND 1 PRECEDING) AS window_count,
        if(window_count >= 2, window_sd, 0) AS window_std,
        if(window_count >= greatest(2, least({warmup:UInt32}, {window:UInt32})),
           (value - window_mean) / greatest(window_std, 1e-6),
           NULL) AS zscore
    FROM
    (
        WITH
            if({until:String} = '', now64(3, 'UTC'),
               parseDateTime64BestEffort(if({until:String} = '', '1970-01-01', {until:String}), 3, 'UTC')) AS t_until,
            if({since:String} = '', t_until - toIntervalHour({hours:UInt32}),
               parseDateTime64BestEffort(if({since:String} = '', '1970-01-01', {since:String}), 3, 'UTC')) AS t_since
        SELECT
            region,
            home_id,
            ts,
            seq,
            m.1 AS metric,
            assumeNotNull(m.2) AS value,
            ts >= t_since AS reported
        FROM {database}.telemetry
        ARRAY JOIN arrayFilter(
            x -> ({metric:String} = 'all' OR x.1 = {metric:String}) AND x.2 IS NOT NULL AND isFinite(assumeNotNull(x.2)),
            [('indoor_temp_c', toNullable(indoor_temp_c)), ('power_w', toNullable(power_w)),
             ('voltage_v', toNullable(voltage_v)), ('vibration_mm_s', toNullable(vibration_mm_s)),
             ('water_flow_lpm', water_flow_lpm), ('water_temp_c', water_temp_c),
             ('uv_intensity_mw_cm2', uv_intensity_mw_cm2), ('pump_pressure_bar', pump_pressure_bar)]
        ) AS m
        WHERE ts >= t_since - toIntervalMinute({lookback_minutes:UInt32})
          AND ts < t_until
          AND ({region:String} = '' OR region = {region:String})
          AND ({home:String} = '' OR home_id = {home:String})
          -- parameter checks: scalar subqueries run even when no row matches
          AND (SELECT throwIf({metric:String} NOT IN ('all', 'indoor_temp_c', 'power_w', 'voltage_v', 'vibration_mm_s',
                                  'water_flow_lpm', 'water_temp_c', 'uv_intensity_mw_cm2', 'pump_pressure_bar'),
                              'metric must be all or one of indoor_temp_c, power_w, voltage_v, vibration_mm_s, water_flow_lpm, water_temp_c, uv_intensity_mw_cm2, pump_pressure_bar')) = 0
          AND (SELECT throwIf({window:UInt32} < 2, 'window must be at least 2')) = 0
    )
)
WHERE reported
  AND ({threshold:Float64} <= 0 OR abs(zscore) >= {threshold:Float64})
ORDER BY region, home_id, metric, ts
LIMIT {limit:UInt64};
