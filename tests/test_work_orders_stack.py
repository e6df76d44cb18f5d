"""Work orders through the real stack: Avro contract on their topic -> ClickHouse table
keeping the latest version of each order; malformed messages -> dead letters."""

from __future__ import annotations

import time

from confluent_kafka import Producer

import schemas
from ecoretrofit.serde import encoder_for
from maintenance.fleet import Fleet
from maintenance.publish import publish_work_orders
from sinks.warehouse import connect
from helpers import home_ids, malformed_avro, offset_recorder, unique, wait_for


def _orders(prefix: str, home: str):
    """Every version of a small city's back-dated work orders, all moved to one home of
    this test's own (order ids prefixed) so this test's rows are its own."""
    now = int(time.time() * 1000)
    fleet = Fleet(3, [f"H{i:06d}" for i in range(40)], ["north"] * 40, [i % 2 == 0 for i in range(40)], now)
    out = []
    for o in fleet.drain_orders():
        aid = f"{home}-{o['asset_id'].rsplit('-', 1)[1]}"
        out.append({**o, "asset_id": aid, "order_id": f"{prefix}-{o['order_id']}", "home_id": home})
    return out


def test_latest_version_of_every_order_lands_and_bad_messages_are_dead_letters(stack_settings):
    s = stack_settings
    prefix = unique("wo")
    home = home_ids(1)[0]  # a home no other test has
    versions = _orders(prefix, home)
    latest = {}
    for o in versions:
        if o["order_id"] not in latest or o["version"] > latest[o["order_id"]]["version"]:
            latest[o["order_id"]] = o
    assert len(versions) > len(latest) > 20  # orders that changed: several versions each

    # malformed messages between the good ones, on one partition, with their offsets
    enc = encoder_for(s, s.topic_workorders, schemas.WORK_ORDER)
    good = enc.encode(versions[0])
    bad = malformed_avro(good)
    # valid Avro, implausible orders: a component of another home, opened in 2100, version 0
    implausible = {"foreign asset": dict(versions[0], asset_id="H000001-CP"),
                   "opened in 2100": dict(versions[0], opened_ms=4_102_444_800_000),
                   "version 0": dict(versions[0], version=0)}
    bad.update({name: enc.encode(o) for name, o in implausible.items()})
    offsets = {}
    record = offset_recorder(offsets)

    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for name, raw in bad.items():
        p.produce(s.topic_workorders, raw, key=prefix.encode(), partition=0, on_delivery=record(name))
    assert p.flush(10) == 0
    assert publish_work_orders(s, versions) == len(versions)

    client = connect(s)
    db = s.clickhouse_database

    def latest_stored():
        return client.query(f"SELECT count(), sum(version) FROM {db}.work_orders FINAL WHERE home_id = %(h)s",
                            parameters={"h": home}).result_rows[0]

    # versions of one order collapse as they land (ReplacingMergeTree): wait until every
    # order is there at its latest version, then check each one
    want = (len(latest), sum(o["version"] for o in latest.values()))
    wait_for(lambda: tuple(latest_stored()) == want, 180, what="the latest version of every order")
    client.command(f"OPTIMIZE TABLE {db}.work_orders FINAL")
    rows = client.query(
        f"SELECT order_id, version, status, kind, source, failure_code, replaced FROM {db}.work_orders "
        f"WHERE home_id = %(h)s ORDER BY order_id", parameters={"h": home}).result_rows
    # ... and the table keeps exactly the latest version of each order
    assert len(rows) == len(latest)
    for order_id, version, status, kind, source, failure_code, replaced in rows:
        want = latest[order_id]
        assert (version, status, kind, source, failure_code, bool(replaced)) == (
            want["version"], want["status"], want["kind"], want["source"], want["failure_code"], want["replaced"])

    bad_offsets = tuple(offsets[n] for n in bad)
    dead = wait_for(lambda: (lambda r: r if len(r) == len(bad) else None)(client.query(
        f"SELECT offset, error FROM {db}.dead_letters WHERE topic = %(t)s AND partition = 0 "
        f"AND offset IN %(o)s ORDER BY offset", parameters={"t": s.topic_workorders, "o": bad_offsets}).result_rows),
        60, what=f"{len(bad)} dead letters")
    assert [r[0] for r in dead] == sorted(bad_offsets) and all(r[1] for r in dead)
    errors = dict(dead)
    assert "is not a component of home" in errors[offsets["foreign asset"]]
    assert "opened_ms: 4102444800000 is more than 10 minutes after now" in errors[offsets["opened in 2100"]]
    assert "version: 0 is outside [1, 2**53]" in errors[offsets["version 0"]]


def test_failure_signatures_join_work_orders_with_telemetry(stack_settings):
    """The named query shows a worn pump's vibration rising in the days before it failed."""
    import datetime as dt

    from sinks import named_queries

    s = stack_settings
    client = connect(s)
    home = unique("sig")
    fail = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=1)
    cols = ["home_id", "region", "ts", "seq", "indoor_temp_c", "outdoor_temp_c", "power_w", "energy_kwh",
            "voltage_v", "vibration_mm_s", "water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2",
            "pump_pressure_bar", "kafka_partition", "kafka_offset"]
    rows = []
    for h in range(4 * 24):  # hourly readings for four days before the failure
        ts = fail - dt.timedelta(hours=h, minutes=30)
        day = h // 24
        rows.append([home, "north", ts, h, 21.0, 5.0, 500.0, 1000.0 + h, 230.0, 1.0 + 2.0 * (3 - day), 4.0, 57.0,
                     35.0, 3.0 - 0.2 * (3 - day), 0, h])
    client.insert("telemetry", rows, column_names=cols)
    order = {"order_id": f"WO-{home}-CP-0001", "asset_id": f"{home}-CP", "home_id": home, "region": "north",
             "asset_type": "circulation_pump", "model": "CP-25", "kind": "corrective", "source": "manual",
             "opened_ms": fail + dt.timedelta(hours=2), "status": "open", "closed_ms": None, "failure_ms": fail,
             "failure_code": "NOISE_VIBRATION", "cause_code": "BEARING_WEAR", "resolution_code": "REPLACE_BEARINGS",
             "replaced": False, "version": 1}
    closed = {**order, "status": "closed", "closed_ms": fail + dt.timedelta(hours=30), "replaced": True, "version": 2}
    names = list(order)
    client.insert("work_orders", [[o[c] for c in names] for o in (order, closed)], column_names=names)

    q = named_queries.load_named("failure_signatures")
    res = client.query(q.sql(s), parameters=q.bind({"home": home, "days": "3"}))
    got = [dict(zip(res.column_names, r)) for r in res.result_rows]
    assert [r["days_before"] for r in got] == [2, 1, 0]
    assert all(r["readings"] == 24 and r["order_id"] == order["order_id"] for r in got)
    assert [round(r["vibration_mm_s"], 6) for r in got] == [3.0, 5.0, 7.0]  # rising toward the failure
    assert got[-1]["pump_pressure_bar"] < got[0]["pump_pressure_bar"]
    assert got[0]["cause_code"] == "BEARING_WEAR"
