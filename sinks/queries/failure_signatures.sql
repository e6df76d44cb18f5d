-- failure_signatures: what each component's telemetry looked like in the days before
-- it failed (work orders joined with telemetry).
--
-- For every work order on a failure (its latest version has failure_ms), the home's
-- readings per day before the failure (days_before 0 = the last 24 hours): readings,
-- and the means of vibration, pump pressure, water flow, UV intensity, hot-water
-- temperature, voltage and power. Latest failures first; raw telemetry keeps 7 days.
--
-- Parameters (name, type, default, meaning):
--   asset_type  String  ''   component type (e.g. circulation_pump); '' = every type
--   home        String  ''   one home id; '' = every home
--   days        UInt32  3    days of telemetry before each failure
--   failures    UInt32  100  failures to report, latest first
SELECT
    w.order_id AS order_id,
    w.asset_id AS asset_id,
    w.asset_type AS asset_type,
    w.failure_code AS failure_code,
    w.cause_code AS cause_code,
    w.failure_at AS failure_at,
    intDiv(toUnixTimestamp64Milli(w.failure_at) - toUnixTimestamp64Milli(t.ts), 86400000) AS days_before,
    count() AS readings,
    avg(t.vibration_mm_s) AS vibration_mm_s,
    avg(t.pump_pressure_bar) AS pump_pressure_bar,
    avg(t.water_flow_lpm) AS water_flow_lpm,
    avg(t.uv_intensity_mw_cm2) AS uv_intensity_mw_cm2,
    avg(t.water_temp_c) AS water_temp_c,
    avg(t.voltage_v) AS voltage_v,
    avg(t.power_w) AS power_w
FROM
(
    SELECT order_id, asset_id, home_id, asset_type, failure_code, cause_code,
           assumeNotNull(failure_ms) AS failure_at
    FROM {database}.work_orders FINAL
    WHERE failure_ms IS NOT NULL
      AND ({asset_type:String} = '' OR asset_type = {asset_type:String})
      AND ({home:String} = '' OR home_id = {home:String})
    ORDER BY failure_at DESC
    LIMIT {failures:UInt32}
) AS w
INNER JOIN {database}.telemetry AS t ON t.home_id = w.home_id
WHERE t.ts < w.failure_at
  AND t.ts >= w.failure_at - toIntervalDay({days:UInt32})
GROUP BY order_id, asset_id, asset_type, failure_code, cause_code, failure_at, days_before
ORDER BY failure_at DESC, order_id, days_before DESC;
