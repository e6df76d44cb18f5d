"""Roll-ups (sinks/sql/015_rollups.sql) and TTLs against the real local stack.

Readings are inserted straight into ``telemetry`` with clickhouse-connect: the roll-up
views hang off that table, so every insert into it feeds them (one test also goes
through Kafka, to show the cascade queue -> telemetry -> roll-ups). The expected
aggregates are computed in Python from the very rows inserted, and from the raw table
where it still holds them. Every test uses its own regions.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import shutil
import time
import uuid
from collections import defaultdict

import pytest

from sinks import warehouse
from helpers import fresh_region, unique

UTC = dt.timezone.utc
COLUMNS = [
    "home_id", "region", "ts", "seq", "indoor_temp_c", "outdoor_temp_c", "power_w", "energy_kwh",
    "voltage_v", "vibration_mm_s", "water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2",
    "pump_pressure_bar", "kafka_partition", "kafka_offset",
]
ROLLUPS = ("energy_hourly_by_home", "energy_hourly_by_region", "energy_daily_by_home", "energy_daily_by_region")




def readings(region: str, homes: list[str], start: dt.datetime, count: int, step_s: int, seed: int) -> list[dict]:
    """``count`` readings per home every ``step_s`` seconds from ``start``: random power
    (no two equal), a meter that integrates it, outdoor temperature around 5 C."""
    rng = random.Random(seed)
    out = []
    for h in homes:
        meter = rng.uniform(1000, 5000)
        for i in range(count):
            power = rng.uniform(200, 3000)
            meter += power * step_s / 3.6e6
            out.append({
                "home_id": h, "region": region, "ts": start + dt.timedelta(seconds=i * step_s), "seq": i,
                "indoor_temp_c": rng.uniform(18, 23), "outdoor_temp_c": rng.uniform(-2, 12),
                "power_w": power, "energy_kwh": meter, "voltage_v": rng.uniform(225, 235),
                "vibration_mm_s": rng.uniform(0.1, 2.0), "water_flow_lpm": None, "water_temp_c": None,
                "uv_intensity_mw_cm2": None, "pump_pressure_bar": None, "kafka_partition": 0, "kafka_offset": i,
            })
    return out


def insert(client, rows: list[dict], batches: int = 1, seed: int = 0) -> None:
    """Insert in ``batches`` shuffled blocks: each block adds its own partial-state rows
    to the roll-ups, which merges must then fold correctly."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    for b in range(batches):
        part = rows[b::batches]
        client.insert("telemetry", [[r[c] for c in COLUMNS] for r in part], column_names=COLUMNS)


def group(rows: list[dict], key) -> dict:
    out = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def hour_of(ts: dt.datetime) -> dt.datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def mean(xs) -> float:
    xs = list(xs)
    return math.fsum(xs) / len(xs)


def naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def expected_rollups(rows: list[dict]) -> dict[str, dict]:
    """The four roll-ups, computed in Python from the raw rows."""

    def peak(g):
        return max(g, key=lambda r: r["power_w"])

    def energies(period) -> dict:
        """Energy per (region, home, period): the meter at the period's last reading
        minus the meter at the home's last reading before the period (or at the
        period's first reading, for the home's first period)."""
        out, last_before = {}, {}
        for r in sorted(rows, key=lambda r: (r["region"], r["home_id"], r["ts"])):
            key = (r["region"], r["home_id"], period(r["ts"]))
            if key not in out:
                home = key[:2]
                start = last_before.get(home, r["energy_kwh"])
                out[key] = [start, r["energy_kwh"]]
            out[key][1] = r["energy_kwh"]
            last_before[key[:2]] = r["energy_kwh"]
        return {k: end - start for k, (start, end) in out.items()}

    hourly_energy = energies(hour_of)
    daily_energy = energies(lambda ts: ts.date())
    exp = {}
    exp["hourly_home"] = {
        (k[0], k[1], naive(k[2])): dict(
            readings=len(g), energy_kwh=hourly_energy[k],
            power_avg_w=mean(r["power_w"] for r in g), power_min_w=min(r["power_w"] for r in g),
            power_max_w=max(r["power_w"] for r in g), indoor_avg_c=mean(r["indoor_temp_c"] for r in g),
            outdoor_avg_c=mean(r["outdoor_temp_c"] for r in g), outdoor_min_c=min(r["outdoor_temp_c"] for r in g),
            outdoor_max_c=max(r["outdoor_temp_c"] for r in g), peak_at=naive(peak(g)["ts"]),
            first_ts=naive(min(r["ts"] for r in g)), last_ts=naive(max(r["ts"] for r in g)))
        for k, g in group(rows, lambda r: (r["region"], r["home_id"], hour_of(r["ts"]))).items()
    }
    exp["hourly_region"] = {
        (k[0], naive(k[1])): dict(
            readings=len(g), homes=len({r["home_id"] for r in g}), power_avg_w=mean(r["power_w"] for r in g),
            power_max_w=max(r["power_w"] for r in g), indoor_avg_c=mean(r["indoor_temp_c"] for r in g),
            outdoor_avg_c=mean(r["outdoor_temp_c"] for r in g))
        for k, g in group(rows, lambda r: (r["region"], hour_of(r["ts"]))).items()
    }

    exp["daily_home"] = {
        (k[0], k[1], k[2]): dict(
            readings=len(g), energy_kwh=daily_energy[k],
            power_avg_w=mean(r["power_w"] for r in g), power_peak_w=peak(g)["power_w"],
            peak_at=naive(peak(g)["ts"]), load_factor=mean(r["power_w"] for r in g) / peak(g)["power_w"],
            outdoor_avg_c=mean(r["outdoor_temp_c"] for r in g), outdoor_min_c=min(r["outdoor_temp_c"] for r in g),
            outdoor_max_c=max(r["outdoor_temp_c"] for r in g))
        for k, g in group(rows, lambda r: (r["region"], r["home_id"], r["ts"].date())).items()
    }
    exp["daily_region"] = {
        (k[0], k[1]): dict(
            readings=len(g), homes=len({r["home_id"] for r in g}), power_avg_w=mean(r["power_w"] for r in g),
            power_peak_w=peak(g)["power_w"], peak_home_id=peak(g)["home_id"], peak_at=naive(peak(g)["ts"]),
            outdoor_avg_c=mean(r["outdoor_temp_c"] for r in g), outdoor_min_c=min(r["outdoor_temp_c"] for r in g),
            outdoor_max_c=max(r["outdoor_temp_c"] for r in g))
        for k, g in group(rows, lambda r: (r["region"], r["ts"].date())).items()
    }
    return exp


VIEWS = {
    "hourly_home": ("energy_hourly_by_home_v", ("region", "home_id", "hour")),
    "hourly_region": ("energy_hourly_by_region_v", ("region", "hour")),
    "daily_home": ("energy_daily_by_home_v", ("region", "home_id", "day")),
    "daily_region": ("energy_daily_by_region_v", ("region", "day")),
}


def read_views(client, regions: list[str]) -> dict[str, dict]:
    out = {}
    for name, (view, key) in VIEWS.items():
        res = client.query(f"SELECT * FROM {view} WHERE region IN %(r)s", parameters={"r": regions})
        cols = res.column_names
        out[name] = {}
        for row in res.result_rows:
            d = dict(zip(cols, row))
            d = {c: naive(v) if isinstance(v, dt.datetime) else v for c, v in d.items()}
            out[name][tuple(d[c] for c in key)] = d
    return out


def assert_views_match(got: dict, exp: dict) -> None:
    for name in VIEWS:
        assert set(got[name]) == set(exp[name]), name
        for key, want in exp[name].items():
            row = got[name][key]
            for col, v in want.items():
                if isinstance(v, float):
                    assert row[col] == approx(v), (name, key, col)
                else:
                    assert row[col] == v, (name, key, col)


def rollup_rows(client, regions: list[str]) -> dict[str, int]:
    return {t: client.query(f"SELECT count() FROM {t} WHERE region IN %(r)s",
                            parameters={"r": regions}).result_rows[0][0] for t in ROLLUPS}


# ---------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def client(stack_settings):
    return warehouse.connect(stack_settings)


def test_rollups_equal_raw_aggregates_across_midnight_regions_and_merges(client):
    """Two regions, data spanning midnight two days ago (two raw partitions per region),
    inserted in shuffled blocks: every roll-up view equals the aggregates of the raw
    rows, both computed in Python and in SQL over `telemetry`, before and after forced
    merges."""
    regions = [unique("ru-a"), unique("ru-b")]
    midnight = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    start = midnight - dt.timedelta(minutes=90) + dt.timedelta(seconds=7)
    rows = []
    for n, region in enumerate(regions):
        homes = [f"H{n}{i:03d}" for i in range(4)]
        rows += readings(region, homes, start, count=360, step_s=30, seed=n)  # 3 h at 30 s
    exp = expected_rollups(rows)
    assert len(exp["daily_region"]) == 4 and len(exp["hourly_region"]) == 8  # 2 days x 2 regions, 4 hours each
    keys = {"energy_hourly_by_home": len(exp["hourly_home"]), "energy_hourly_by_region": len(exp["hourly_region"]),
            "energy_daily_by_home": len(exp["daily_home"]), "energy_daily_by_region": len(exp["daily_region"])}
    # merges held back while inserting, so the views must finish unmerged partial states
    # (background merges would otherwise fold six small parts within a second)
    for table in ROLLUPS:
        client.command(f"SYSTEM STOP MERGES {table}")
    try:
        insert(client, rows, batches=6, seed=1)
        before = rollup_rows(client, regions)
        assert all(before[t] > keys[t] for t in ROLLUPS), (before, keys)  # several partial rows per key
        got = read_views(client, regions)
    finally:
        for table in ROLLUPS:
            client.command(f"SYSTEM START MERGES {table}")
    assert_views_match(got, exp)

    # the same aggregates computed by ClickHouse from the raw table: each reading's
    # meter increment since the home's previous reading, summed per hour
    raw = client.query(
        "SELECT region, home_id, toStartOfHour(ts) AS hour, count(), sum(increment), avg(power_w), max(power_w) "
        "FROM (SELECT *, energy_kwh - lagInFrame(energy_kwh, 1, energy_kwh) OVER (PARTITION BY region, home_id "
        "ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS increment FROM telemetry WHERE region IN %(r)s) "
        "GROUP BY region, home_id, hour",
        parameters={"r": regions}).result_rows
    assert len(raw) == len(got["hourly_home"])
    for region, home, hour, n, energy, avg_p, max_p in raw:
        row = got["hourly_home"][(region, home, naive(hour))]
        assert (row["readings"], row["power_max_w"]) == (n, max_p)
        assert row["energy_kwh"] == approx(energy) and row["power_avg_w"] == approx(avg_p)
    raw_daily = client.query(
        "SELECT region, toDate(ts) AS day, argMax(home_id, power_w), argMax(ts, power_w), max(power_w) "
        "FROM telemetry WHERE region IN %(r)s GROUP BY region, day", parameters={"r": regions}).result_rows
    for region, day, home, at, peak in raw_daily:
        row = got["daily_region"][(region, day)]
        assert (row["peak_home_id"], row["peak_at"], row["power_peak_w"]) == (home, naive(at), peak)

    # forced merges fold the partial states of the six blocks into one row per key
    for table in ROLLUPS:
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert rollup_rows(client, regions) == keys
    assert_views_match(read_views(client, regions), exp)


def test_rollups_across_year_and_month_partitions(client):
    """Data spanning the last New Year's midnight crosses the roll-ups' month and year
    partitions (and is older than the raw table's 7 days, so only the roll-ups keep
    it): still equal to the raw aggregates, before and after merges."""
    region = unique("ru-ny")
    new_year = dt.datetime(dt.datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    rows = readings(region, ["H1", "H2", "H3"], new_year - dt.timedelta(minutes=45), count=90, step_s=60, seed=5)
    insert(client, rows, batches=3, seed=2)
    exp = expected_rollups(rows)
    assert len(exp["daily_region"]) == 2
    assert_views_match(read_views(client, [region]), exp)
    for table in ROLLUPS:
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert_views_match(read_views(client, [region]), exp)
    parts = client.query(
        "SELECT table, uniqExact(partition) FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table IN %(t)s AND rows > 0 GROUP BY table", parameters={"t": list(ROLLUPS)}).result_rows
    assert all(n >= 2 for _, n in parts)


def test_hourly_energy_adds_up_to_the_day_and_the_meter_at_5_minute_sampling(client, stack_settings):
    """One reading per 5 minutes, a whole day and an hour either side, in blocks: the
    hours of the day add up to the day's energy, which is the meter's rise over the day
    (last reading of the day minus last reading before it); the named queries
    hourly_energy (per home and per region) and inefficient_homes report the same.
    (max - min within each hour lost the rise across every hour boundary: 8% low.)"""
    from sinks import named_queries

    region = unique("ru-5min")
    day_start = (dt.datetime.now(UTC) - dt.timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    homes = ["H500001", "H500002", "H500003"]
    rows = readings(region, homes, day_start - dt.timedelta(hours=1), count=26 * 12, step_s=300, seed=21)
    insert(client, rows, batches=5, seed=3)
    day = day_start.date()
    meter_rise = {}
    for h in homes:
        mine = sorted((r for r in rows if r["home_id"] == h), key=lambda r: r["ts"])
        before = [r["energy_kwh"] for r in mine if r["ts"] < day_start][-1]
        last = [r["energy_kwh"] for r in mine if r["ts"].date() == day][-1]
        meter_rise[h] = last - before
    hourly = dict(client.query(
        "SELECT home_id, sum(energy_kwh) FROM energy_hourly_by_home_v WHERE region = %(r)s AND toDate(hour) = %(d)s "
        "GROUP BY home_id", parameters={"r": region, "d": day}).result_rows)
    daily = dict(client.query(
        "SELECT home_id, energy_kwh FROM energy_daily_by_home_v WHERE region = %(r)s AND day = %(d)s",
        parameters={"r": region, "d": day}).result_rows)

    def named(name, **params):
        q = named_queries.load_named(name)
        res = client.query(q.sql(stack_settings), parameters=q.bind({k: str(v) for k, v in params.items()}))
        return [dict(zip(res.column_names, r)) for r in res.result_rows]

    span = {"since": f"{day} 00:00:00", "until": f"{day + dt.timedelta(days=1)} 00:00:00"}
    by_home = defaultdict(float)
    for g in named("hourly_energy", region=region, **span):
        by_home[g["home_id"]] += g["energy_kwh"]
    by_region = sum(g["energy_kwh"] for g in named("hourly_energy", by="region", region=region, **span))
    ineff = {g["home_id"]: g["energy_kwh"] for g in named("inefficient_homes", region=region, top=100, min_ratio=0,
                                                          min_hdd=0, base_c=40, **span)}
    for h in homes:
        assert hourly[h] == approx(meter_rise[h]), h
        assert daily[h] == approx(meter_rise[h]), h
        assert by_home[h] == approx(meter_rise[h]), h
        assert ineff[h] == approx(meter_rise[h]), h
    assert by_region == approx(sum(meter_rise.values()))


def test_a_meter_that_goes_back_gives_no_negative_energy(client):
    """A home's meter restarts lower (replaced, reset, or the same home ids simulated
    again from a lower reading): the hour and the day after the reset count their own
    rise, never a negative amount; the hours before it are unchanged."""
    region = unique("ru-reset")
    midnight = (dt.datetime.now(UTC) - dt.timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    # 22:00-23:55 of one day, then the reset, then 00:00-00:55 of the next
    first = readings(region, ["H510001"], midnight - dt.timedelta(hours=2), count=2 * 12, step_s=300, seed=5)
    second = readings(region, ["H510001"], midnight, count=12, step_s=300, seed=6)
    top = max(r["energy_kwh"] for r in first)
    low = min(r["energy_kwh"] for r in second)
    shift = low - (top - 500.0)  # the meter after the reset starts 500 kWh below where it stopped
    for r in second:
        r["energy_kwh"] -= shift
        r["seq"] += len(first)
    insert(client, first + second, batches=3, seed=1)
    hours = client.query(
        "SELECT hour, energy_kwh FROM energy_hourly_by_home_v WHERE region = %(r)s ORDER BY hour",
        parameters={"r": region}).result_rows
    assert len(hours) == 3
    starts = sorted({hour_of(r["ts"]) for r in first + second})
    by_hour = [sorted((r for r in first + second if hour_of(r["ts"]) == h), key=lambda r: r["ts"]) for h in starts]
    rise = [b[-1]["energy_kwh"] - b[0]["energy_kwh"] for b in by_hour]
    assert hours[0][1] == approx(rise[0])
    assert hours[1][1] == approx(by_hour[1][-1]["energy_kwh"] - by_hour[0][-1]["energy_kwh"])
    assert hours[2][1] == approx(rise[2])  # after the reset: its own rise, not -500 kWh
    days = client.query(
        "SELECT day, energy_kwh FROM energy_daily_by_home_v WHERE region = %(r)s ORDER BY day",
        parameters={"r": region}).result_rows
    assert [e for _, e in days] == [approx(first[-1]["energy_kwh"] - first[0]["energy_kwh"]), approx(rise[2])]


def test_ttl_drops_old_raw_rows_but_rollups_keep_them(client, stack_settings, tmp_path):
    region = unique("ttl")
    now = dt.datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    recent = readings(region, ["H1", "H2"], now - dt.timedelta(days=1), count=20, step_s=60, seed=1)
    # 15 days: raw parts are weekly, so a row lives 7 to 14 days
    old = readings(region, ["H1", "H2"], now - dt.timedelta(days=15), count=20, step_s=60, seed=2)
    ancient = readings(region, ["H1", "H2"], now - dt.timedelta(days=500), count=20, step_s=60, seed=3)
    insert(client, recent + old + ancient)

    # raw: a week whose rows are all older than 7 days goes at the next merge
    parts = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'telemetry' AND active AND max_time < now() - INTERVAL 7 DAY").result_rows
    for (pid,) in parts:
        client.command(f"OPTIMIZE TABLE telemetry PARTITION ID '{pid}' FINAL")
    days = client.query("SELECT toDate(ts) AS d, count() FROM telemetry WHERE region = %(r)s GROUP BY d ORDER BY d",
                        parameters={"r": region}).result_rows
    assert days == [((now - dt.timedelta(days=1)).date(), 40)]

    # roll-ups: hourly keep 400 days, daily 5 years
    for table in ROLLUPS:
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    hourly = client.query("SELECT toDate(hour) AS d, sum(readings) FROM energy_hourly_by_home_v "
                          "WHERE region = %(r)s GROUP BY d ORDER BY d", parameters={"r": region}).result_rows
    assert [d for d, _ in hourly] == [(now - dt.timedelta(days=k)).date() for k in (15, 1)]
    assert [n for _, n in hourly] == [40, 40]
    daily = client.query("SELECT day, readings FROM energy_daily_by_region_v WHERE region = %(r)s ORDER BY day",
                         parameters={"r": region}).result_rows
    assert daily == [((now - dt.timedelta(days=k)).date(), 40) for k in (500, 15, 1)]

    # every table carries its TTL
    ttls = dict(client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND name IN %(t)s",
        parameters={"t": ["telemetry", *ROLLUPS]}).result_rows)
    assert "TTL toDateTime(ts) + toIntervalDay(7)" in ttls["telemetry"]
    for t in ROLLUPS:
        want = "TTL hour + toIntervalDay(400)" if "hourly" in t else "TTL day + toIntervalYear(5)"
        assert want in ttls[t], ttls[t]

    # applying the DDL again (every warehouse start does) changes nothing and starts no mutation
    for name in ("001_database.sql", "010_telemetry.sql", "015_rollups.sql"):
        shutil.copy(warehouse.SQL_DIR / name, tmp_path / name)
    mutations = "SELECT count() FROM system.mutations WHERE database = currentDatabase()"
    before = client.query(mutations).result_rows[0][0]
    assert warehouse.apply_ddl(client, stack_settings, tmp_path) > 0
    assert client.query(mutations).result_rows[0][0] == before


def test_ttl_added_to_a_table_created_without_it(client, stack_settings):
    """The ALTER … MODIFY TTL of 010: a `telemetry` made by the old DDL gets the TTL
    (and drops its expired rows, once); applied again it is a no-op."""
    db = f"ttl_upgrade_{uuid.uuid4().hex[:8]}"
    old_ddl = [s for s in warehouse.render_ddl(stack_settings.replace(clickhouse_database=db))
               if s.startswith(f"CREATE TABLE IF NOT EXISTS {db}.telemetry\n")][0]
    old_ddl = old_ddl.split("TTL toDateTime")[0]  # as before the TTL was added
    client.command(f"CREATE DATABASE {db}")
    try:
        client.command(old_ddl)
        now = dt.datetime.now(UTC)
        rows = readings("r", ["H1"], now - dt.timedelta(days=9), 5, 60, 1) + readings("r", ["H1"], now, 5, 60, 2)
        client.insert(f"{db}.telemetry", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
        alters = [s for s in warehouse.render_ddl(stack_settings.replace(clickhouse_database=db))
                  if s.startswith(f"ALTER TABLE {db}.telemetry ") and "COMMENT COLUMN" not in s]  # TTL's only
        assert len(alters) == 2
        for _ in range(2):
            for sql in alters:
                client.command(sql)
        count = f"SELECT count() FROM {db}.telemetry"
        deadline = time.monotonic() + 20
        while client.query(count).result_rows[0][0] != 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.query(count).result_rows[0][0] == 5
        muts = client.query("SELECT count() FROM system.mutations WHERE database = %(d)s", parameters={"d": db})
        assert muts.result_rows[0][0] == 1  # the first ALTER materialised the TTL; the second did nothing
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")  # not SYNC: that never returns on chdb 26.1


def test_kafka_readings_reach_the_rollups(client, stack_settings):
    """Through the broker: telemetry_queue -> telemetry_mv -> telemetry cascades into the
    roll-up views, so the roll-ups count exactly what the raw table received."""
    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator

    region = fresh_region()
    start_ms = int(time.time() * 1000) // 1000 * 1000 - 120_000
    sim = CitySimulator(5, [region], seed=11, start_ms=start_ms)
    with TelemetryProducer(stack_settings) as producer:
        stats = run_backfill(sim, producer, start_ms, 40, progress=False)
    assert stats.failed == 0 and stats.acked == 200
    # the parts of one insert become visible table by table: wait for the last view too
    q = ("SELECT (SELECT count() FROM telemetry WHERE region = %(r)s), "
         "(SELECT sum(readings) FROM energy_daily_by_home WHERE region = %(r)s)")
    deadline = time.monotonic() + 90
    while min(client.query(q, parameters={"r": region}).result_rows[0]) < 200:
        assert time.monotonic() < deadline, "readings did not reach telemetry and the roll-ups"
        time.sleep(0.5)
    raw = client.query("SELECT count(), avg(power_w), max(power_w) FROM telemetry WHERE region = %(r)s",
                       parameters={"r": region}).result_rows[0]
    hourly = client.query("SELECT sum(readings), sum(power_avg_w * readings) / sum(readings), max(power_max_w) "
                          "FROM energy_hourly_by_region_v WHERE region = %(r)s", parameters={"r": region}).result_rows[0]
    daily = client.query("SELECT sum(readings), uniqExact(home_id) FROM energy_daily_by_home_v WHERE region = %(r)s",
                         parameters={"r": region}).result_rows[0]
    assert hourly[0] == raw[0] == 200 and hourly[1] == approx(raw[1]) and hourly[2] == raw[2]
    assert daily == (200, 5)
