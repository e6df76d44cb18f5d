"""The plausibility contract as SQL (sinks/plausibility_sql.py) agrees with the Python
contract (schemas/plausibility.py) on the same readings, run in real ClickHouse (chdb,
in process); and the warehouse's partitions are bounded by the contract, whatever the
data."""

from __future__ import annotations

import math
import random

import pytest

from schemas import plausibility as contract
from sinks.plausibility_sql import literal, reasons_sql

NOW = 1_780_000_000_000
REGIONS = ("north", "south", "east")
COLUMNS = [
    ("home_id", "String"), ("region", "String"), ("ts", "DateTime64(3, 'UTC')"), ("seq", "Int64"),
    ("indoor_temp_c", "Float64"), ("outdoor_temp_c", "Float64"), ("power_w", "Float64"),
    ("energy_kwh", "Float64"), ("voltage_v", "Float64"), ("vibration_mm_s", "Float64"),
    ("water_flow_lpm", "Nullable(Float64)"), ("water_temp_c", "Nullable(Float64)"),
    ("uv_intensity_mw_cm2", "Nullable(Float64)"), ("pump_pressure_bar", "Nullable(Float64)"),
]

GOOD = {"home_id": "H000042", "region": "north", "ts": NOW - 1000, "seq": 7, "indoor_temp_c": 20.5,
        "outdoor_temp_c": 3.0, "power_w": 850.0, "energy_kwh": 1234.5, "voltage_v": 231.0,
        "vibration_mm_s": 0.4, "water_flow_lpm": None, "water_temp_c": None,
        "uv_intensity_mw_cm2": None, "pump_pressure_bar": None}

DAY = 86_400_000


def samples() -> list[dict]:
    """Hand-picked boundaries and the issue's hostile values, then random mutations."""
    out = [GOOD, dict(GOOD, water_flow_lpm=12.0, water_temp_c=55.0, uv_intensity_mw_cm2=3.0, pump_pressure_bar=2.5)]
    edits = [
        {"voltage_v": -5.0}, {"power_w": math.nan}, {"power_w": math.inf}, {"power_w": -math.inf},
        {"power_w": 1.7e308}, {"energy_kwh": -0.0}, {"water_temp_c": math.nan}, {"pump_pressure_bar": 40.0},
        {"pump_pressure_bar": 40.000001}, {"indoor_temp_c": -40.0}, {"indoor_temp_c": -40.1},
        {"ts": 0}, {"ts": -2_208_988_800_000}, {"ts": 4_102_444_800_000},  # 1970, 1900, 2100
        {"ts": NOW + contract.MAX_FUTURE_MS}, {"ts": NOW + contract.MAX_FUTURE_MS + 1},
        {"ts": NOW - contract.MAX_PAST_MS}, {"ts": NOW - contract.MAX_PAST_MS - 1},
        {"home_id": ""}, {"home_id": "H" + "9" * 10_000}, {"home_id": "H000001\n"}, {"home_id": "h000001"},
        {"home_id": "H12345"}, {"home_id": "H123456789"}, {"home_id": "H1234567890"}, {"home_id": "H00000é"},
        {"region": "mars"}, {"region": ""}, {"region": "North"}, {"region": "x" * 5000},
        {"seq": -1}, {"seq": 2**53}, {"seq": 2**53 + 1}, {"seq": 10**15},
        {"voltage_v": -1.0, "home_id": "", "ts": 0, "region": "mars"},
    ]
    out += [dict(GOOD, **e) for e in edits]
    rng = random.Random(9)
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, -1e-300, 1.7e308, -1.7e308]
    for _ in range(300):
        r = dict(GOOD)
        for name in rng.sample(list(contract.METRIC_RANGES), rng.randint(1, 3)):
            rng_ = contract.METRIC_RANGES[name]
            r[name] = rng.choice(specials + [rng_.lo, rng_.hi, rng.uniform(rng_.lo - 10, rng_.hi + 10)])
        if rng.random() < 0.2:
            r["ts"] = NOW + rng.randint(-500 * DAY, 2 * DAY)
        if rng.random() < 0.1:
            r["region"] = rng.choice(REGIONS + ("west", ""))
        out.append(r)
    return out


def sql_value(name: str, v) -> str:
    if v is None:
        return "NULL"
    if name == "ts":
        return f"fromUnixTimestamp64Milli(toInt64({v}), 'UTC')"
    if isinstance(v, str):
        return literal(v)
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    return str(v)


@pytest.fixture(scope="module")
def chdb_session():
    chdb = pytest.importorskip("chdb")
    with chdb.session.Session() as s:
        yield s


def fields(reasons) -> list[str]:
    return [r.split(":", 1)[0] for r in reasons]


def test_sql_and_python_contract_agree_on_every_sample(chdb_session):
    readings = samples()
    table = "readings"
    chdb_session.query(f"CREATE TABLE {table} (n UInt32, {', '.join(f'{c} {t}' for c, t in COLUMNS)}) ENGINE = Memory")
    rows = ", ".join(
        "(" + ", ".join([str(i)] + [sql_value(c, r[c]) for c, _ in COLUMNS]) + ")" for i, r in enumerate(readings))
    chdb_session.query(f"INSERT INTO {table} VALUES {rows}")
    out = chdb_session.query(
        f"SELECT n, {reasons_sql(REGIONS, now_ms=str(NOW))} AS reasons FROM {table} ORDER BY n FORMAT JSONEachRow",
    ).bytes().decode()
    import json

    got = [json.loads(line)["reasons"] for line in out.splitlines()]
    assert len(got) == len(readings)
    disagreements = []
    for r, sql_reasons in zip(readings, got):
        py = contract.check(r, now_ms=NOW, regions=REGIONS)
        if fields(py) != fields(sql_reasons):
            disagreements.append((r, py, sql_reasons))
    assert not disagreements, disagreements[:3]
    # the samples exercise both verdicts and every field
    verdicts = [bool(g) for g in got]
    assert verdicts.count(False) >= 2 and verdicts.count(True) >= 30
    assert {"home_id", "region", "ts", "seq", *contract.METRIC_RANGES} <= {f for g in got for f in fields(g)}
    # a 10 kB home id makes a short reason
    assert max(len(x) for g in got for x in g) < 200


def test_extra_regions_are_accepted_but_never_simulated():
    """A district's devices may report before the simulator models it (and tests keep
    private regions): its readings are stored, yet no simulated home is placed there."""
    from ecoretrofit.config import Settings
    from producers.simulator import CitySimulator
    from sinks.warehouse import render_ddl

    settings = Settings.from_env({"ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x", "ECO_S3_SECRET_KEY": "x",
                                  "ECO_REGIONS": "north,south", "ECO_EXTRA_REGIONS": "harbour,south"})
    assert settings.known_regions == ("north", "south", "harbour")
    reading = {**samples()[0], "region": "harbour"}
    assert not contract.check(reading, now_ms=reading["ts"], regions=settings.known_regions)
    assert "'harbour'" in "\n".join(render_ddl(settings))  # the warehouse's plausibility view knows it
    sim = CitySimulator.from_settings(settings, start_ms=1_700_000_000_000)
    assert set(sim.tick_columns(1_700_000_000_000)["region"]) == {"north", "south"}


def test_warehouse_partitions_per_insert_are_bounded_by_the_contract(chdb_session):
    """A block of plausible readings as spread out as the contract allows (every region,
    one reading a week across the whole window) is accepted by the raw-readings tables
    of the DDL in one insert. With the old (day, region) key ClickHouse refused it (more
    than max_partitions_per_insert_block = 100 partitions), and a refused Kafka-engine
    block is retried forever."""
    from ecoretrofit.config import Settings
    from sinks.warehouse import render_ddl

    settings = Settings.from_env({"ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x",
                                  "ECO_S3_SECRET_KEY": "x", "ECO_CLICKHOUSE_DATABASE": "bound"})
    wanted = ("CREATE DATABASE", "CREATE TABLE IF NOT EXISTS bound.telemetry\n",
              "CREATE TABLE IF NOT EXISTS bound.telemetry_sink")
    for sql in render_ddl(settings):
        if sql.startswith(wanted):
            chdb_session.query(sql)
    week = 7 * DAY
    now = contract.MAX_PAST_MS + 10 * week + 3 * DAY  # any instant
    stamps = range(now - contract.MAX_PAST_MS, now + contract.MAX_FUTURE_MS + 1, week)
    assert len(stamps) * len(settings.regions) > 100
    rows = ", ".join(
        f"('H000001', {literal(region)}, fromUnixTimestamp64Milli(toInt64({ts}), 'UTC'), 1, 20, 5, 100, 1, 230, 0.1,"
        " NULL, NULL, NULL, NULL, 0, 0)"
        for ts in stamps for region in settings.regions)

    def insert(table):
        chdb_session.query(f"INSERT INTO bound.{table} (home_id, region, ts, seq, indoor_temp_c, outdoor_temp_c, "
                           "power_w, energy_kwh, voltage_v, vibration_mm_s, water_flow_lpm, water_temp_c, "
                           "uv_intensity_mw_cm2, pump_pressure_bar, kafka_partition, kafka_offset) "
                           f"SETTINGS max_partitions_per_insert_block = 100 VALUES {rows}")

    for table in ("telemetry", "telemetry_sink"):
        insert(table)
    # (the rows older than the 7-day TTL are dropped at once: the point is the insert)
    # the same block into the old (day, region) key: refused
    chdb_session.query("CREATE TABLE bound.old_key AS bound.telemetry ENGINE = MergeTree "
                       "PARTITION BY (toDate(ts), region) ORDER BY (region, home_id, ts)")
    with pytest.raises(Exception, match="TOO_MANY_PARTS|max_partitions_per_insert_block"):
        insert("old_key")



def test_anomaly_tables_never_partition_by_the_events_fields(chdb_session):
    """The anomalies topic is not held to the reading contract, so its tables are
    partitioned by arrival: one block of events with 150 regions and times years apart
    is one insert (with the old (day, region) key ClickHouse refused it)."""
    from ecoretrofit.config import Settings
    from sinks.warehouse import render_ddl

    settings = Settings.from_env({"ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x",
                                  "ECO_S3_SECRET_KEY": "x", "ECO_CLICKHOUSE_DATABASE": "anom"})
    wanted = ("CREATE DATABASE", "CREATE TABLE IF NOT EXISTS anom.anomalies\n",
              "CREATE TABLE IF NOT EXISTS anom.anomalies_sink")
    for sql in render_ddl(settings):
        if sql.startswith(wanted):
            chdb_session.query(sql)
    rows = ", ".join(
        f"('e{i}', 'H{i:06d}', 'region-{i}', 'power_w', fromUnixTimestamp64Milli(toInt64({i * 30 * DAY}), 'UTC'), "
        f"now64(3), 1, 1, 'zscore', 0, 1, 30, NULL, 'critical')" for i in range(150))
    columns = ("event_id, home_id, region, metric, ts, detected_at, value, score, detector, window_mean, "
               "window_std, window_count, zscore, severity")
    for table in ("anomalies", "anomalies_sink"):
        chdb_session.query(f"INSERT INTO anom.{table} ({columns}) SETTINGS max_partitions_per_insert_block = 100 "
                           f"VALUES {rows}")
        assert chdb_session.query(f"SELECT count() FROM anom.{table}").bytes().strip() == b"150"

def test_a_view_made_by_an_older_ddl_gets_todays_query(chdb_session):
    """IF NOT EXISTS leaves an existing materialized view alone, so the rendered DDL
    follows each one with ALTER ... MODIFY QUERY: a view from before the contract (or
    with other regions) stores implausible readings no longer once the DDL is applied."""
    from ecoretrofit.config import Settings
    from sinks.warehouse import render_ddl

    settings = Settings.from_env({"ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x",
                                  "ECO_S3_SECRET_KEY": "x", "ECO_CLICKHOUSE_DATABASE": "upgrade"})
    statements = render_ddl(settings)
    create = next(s for s in statements if s.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS upgrade.telemetry_mv"))
    alter = statements[statements.index(create) + 1]
    assert alter.startswith("ALTER TABLE upgrade.telemetry_mv MODIFY QUERY SELECT")
    assert alter.split("MODIFY QUERY", 1)[1].strip() == create.split(" AS", 1)[1].strip()
    # in ClickHouse: a stand-in source (a Null table of the queue's columns), the old view, then the ALTER
    chdb_session.query("CREATE DATABASE upgrade")
    chdb_session.query("CREATE TABLE upgrade.telemetry_queue (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
                       + ", _error String, _partition UInt64, _offset UInt64) ENGINE = Null")
    chdb_session.query("CREATE TABLE upgrade.telemetry (" + ", ".join(f"{c} {t}" for c, t in COLUMNS)
                       + ", kafka_partition UInt32, kafka_offset UInt64) ENGINE = Memory")
    old = create.split("WHERE")[0] + "WHERE length(_error) = 0"
    chdb_session.query(old)
    for _ in range(2):  # idempotent
        chdb_session.query(alter)
    import time

    now_good = dict(GOOD, ts=int(time.time() * 1000))  # the views judge against the real clock
    good = ", ".join(sql_value(c, now_good[c]) for c, _ in COLUMNS)
    bad = ", ".join(sql_value(c, dict(now_good, voltage_v=-5.0)[c]) for c, _ in COLUMNS)
    chdb_session.query(f"INSERT INTO upgrade.telemetry_queue VALUES ({good}, '', 0, 1), ({bad}, '', 0, 2)")
    stored = chdb_session.query("SELECT voltage_v FROM upgrade.telemetry").bytes().decode().split()
    assert stored == ["231"]


ORDER_COLUMNS = [
    ("order_id", "String"), ("asset_id", "String"), ("home_id", "String"), ("region", "String"),
    ("asset_type", "String"), ("model", "String"), ("kind", "String"), ("source", "String"),
    ("opened_ms", "DateTime64(3, 'UTC')"), ("status", "String"), ("closed_ms", "Nullable(DateTime64(3, 'UTC'))"),
    ("failure_ms", "Nullable(DateTime64(3, 'UTC'))"), ("failure_code", "Nullable(String)"),
    ("cause_code", "Nullable(String)"), ("resolution_code", "Nullable(String)"), ("replaced", "Bool"),
    ("version", "Int64"),
]
GOOD_ORDER = {"order_id": "WO-H000042-CP-1", "asset_id": "H000042-CP", "home_id": "H000042", "region": "north",
              "asset_type": "circulation_pump", "model": "CP-25", "kind": "corrective", "source": "manual",
              "opened_ms": NOW - 5 * DAY, "status": "closed", "closed_ms": NOW - DAY, "failure_ms": NOW - 6 * DAY,
              "failure_code": "NOISE_VIBRATION", "cause_code": "BEARING_WEAR", "resolution_code": "REPLACE_BEARINGS",
              "replaced": True, "version": 3}


def order_samples() -> list[dict]:
    out = [GOOD_ORDER, dict(GOOD_ORDER, status="open", closed_ms=None, failure_ms=None, failure_code=None,
                            cause_code=None, resolution_code=None, replaced=False, version=1)]
    year = 365 * DAY
    edits = [
        {"order_id": ""}, {"order_id": "x" * 65}, {"order_id": "WO\n1"}, {"order_id": "WO-é"},
        {"asset_id": "H000043-CP"}, {"asset_id": "H000042-cp"}, {"asset_id": "H000042-CPXYZ"}, {"asset_id": ""},
        {"asset_id": "H000042"}, {"home_id": "H42"}, {"home_id": "H42", "asset_id": "H42-CP"},
        {"region": "mars"}, {"region": ""}, {"asset_type": ""}, {"model": "m" * 1000}, {"source": "\x00"},
        {"kind": "urgent"}, {"kind": "Corrective"}, {"status": "done"}, {"status": "closed", "closed_ms": None},
        {"opened_ms": NOW + contract.MAX_FUTURE_MS}, {"opened_ms": NOW + contract.MAX_FUTURE_MS + 1},
        {"opened_ms": NOW - contract.ORDER_MAX_PAST_MS}, {"opened_ms": NOW - contract.ORDER_MAX_PAST_MS - 1},
        {"opened_ms": -2_208_988_800_000}, {"opened_ms": 4_102_444_800_000}, {"opened_ms": 0},
        {"closed_ms": NOW - 6 * DAY}, {"closed_ms": 4_102_444_800_000}, {"closed_ms": NOW - 40 * year},
        {"failure_ms": 4_102_444_800_000}, {"failure_ms": NOW - 31 * year},
        {"failure_code": ""}, {"cause_code": "c" * 65}, {"resolution_code": "ok\t"},
        {"version": 0}, {"version": -1}, {"version": 2**53}, {"version": 2**53 + 1},
        {"version": 0, "kind": "x", "region": "mars", "order_id": ""},
    ]
    out += [dict(GOOD_ORDER, **e) for e in edits]
    rng = random.Random(11)
    for _ in range(200):
        o = dict(GOOD_ORDER)
        for e in rng.sample(edits, rng.randint(1, 3)):
            o.update(e)
        out.append(o)
    return out


def test_sql_and_python_work_order_contract_agree_on_every_sample(chdb_session):
    """The work-order rules (schemas/plausibility.check_work_order) and their SQL
    (sinks/plausibility_sql.work_order_reasons_sql) give the same verdict, field by field."""
    import json

    from sinks.plausibility_sql import work_order_reasons_sql

    orders = order_samples()
    chdb_session.query(f"CREATE TABLE orders (n UInt32, {', '.join(f'{c} {t}' for c, t in ORDER_COLUMNS)}) "
                       "ENGINE = Memory")

    def value(name, v):
        if name.endswith("_ms") and v is not None:
            return f"fromUnixTimestamp64Milli(toInt64({v}), 'UTC')"
        if isinstance(v, bool):
            return "true" if v else "false"
        return sql_value(name, v)

    rows = ", ".join("(" + ", ".join([str(i)] + [value(c, o[c]) for c, _ in ORDER_COLUMNS]) + ")"
                     for i, o in enumerate(orders))
    chdb_session.query(f"INSERT INTO orders VALUES {rows}")
    out = chdb_session.query(
        f"SELECT n, {work_order_reasons_sql(REGIONS, now_ms=str(NOW))} AS reasons FROM orders ORDER BY n "
        "FORMAT JSONEachRow").bytes().decode()
    got = [json.loads(line)["reasons"] for line in out.splitlines()]
    assert len(got) == len(orders)
    disagreements = [(o, py, sq) for o, sq in zip(orders, got)
                     if fields(py := contract.check_work_order(o, now_ms=NOW, regions=REGIONS)) != fields(sq)]
    assert not disagreements, disagreements[:3]
    verdicts = [bool(g) for g in got]
    assert verdicts.count(False) >= 2 and verdicts.count(True) >= 40
    assert {"order_id", "asset_id", "home_id", "region", "asset_type", "model", "kind", "source", "opened_ms",
            "status", "closed_ms", "failure_ms", "failure_code", "cause_code", "resolution_code",
            "version"} <= {f for g in got for f in fields(g)}
    assert max(len(x) for g in got for x in g) < 200
