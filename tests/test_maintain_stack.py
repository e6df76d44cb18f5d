"""The predictive-maintenance worker (``ecoretrofit maintain``) through the real stack:
telemetry and corrective work orders in, predictions (ClickHouse
``maintenance_predictions``) and predictive work orders (ClickHouse ``work_orders``)
out; one order per asset and episode across a hard restart; a repair resets the
prediction.

Telemetry goes to a topic of the test's own: its readings span months of event time,
which the warehouse's daily-partitioned telemetry table must not ingest in one block.
"""

from __future__ import annotations

import json
import signal
import time

import schemas
from conftest import spawn, stop
from ecoretrofit.admin import ensure_topics, unique_topic
from ecoretrofit.serde import encoder_for
from maintenance.assets import DAY_MS, HOUR_MS
from maintenance.fleet import Fleet, MaintenanceConfig
from maintenance.publish import publish_work_orders
from maintenance.technicians import TopicTechnicians
from sinks.warehouse import connect
from helpers import unique, wait_for

T0 = 1_735_689_600_000  # 2025-01-01: event time of the first pump's first reading


def _wear(day: float) -> float:
    """Vibration of a pump that runs healthy for 40 days, then wears out over 30."""
    return 1.0 + 3.0 * max(0.0, (day - 40.0) / 30.0)


def _readings(home: str, start_ms: int, days: float, level) -> list[dict]:
    out = []
    for k in range(int(days * 24)):
        v = level(k / 24.0)
        out.append({"home_id": home, "region": "north", "ts": start_ms + k * HOUR_MS, "seq": k,
                    "indoor_temp_c": 21.0, "outdoor_temp_c": 5.0, "power_w": 900.0, "energy_kwh": 10.0 + k,
                    "voltage_v": 230.0, "vibration_mm_s": v, "water_flow_lpm": 6.0, "water_temp_c": 55.0,
                    "uv_intensity_mw_cm2": 40.0, "pump_pressure_bar": 3.0 - 0.1 * v})
    return out


def _produce(s, topic: str, readings: list[dict]) -> None:
    from confluent_kafka import Producer

    enc = encoder_for(s, topic, schemas.TELEMETRY_READING)
    p = Producer(s.producer_config())
    for r in readings:
        while True:
            try:
                p.produce(topic, enc.encode(r), key=r["home_id"].encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def _order(aid: str, home: str, n: int, kind: str, opened: int, **kw) -> dict:
    base = {"order_id": f"WO-{aid}-{n:04d}", "asset_id": aid, "home_id": home, "region": "north",
            "asset_type": "circulation_pump", "model": "CP-25", "kind": kind, "source": "manual",
            "opened_ms": opened, "status": "open", "closed_ms": None, "failure_ms": None, "failure_code": None,
            "cause_code": None, "resolution_code": None, "replaced": False, "version": 1}
    return {**base, **kw}


def test_degrading_pump_gets_one_predictive_order_across_restarts_and_repair_resets(stack_settings, tmp_path):
    s = stack_settings
    prefix = unique("mt")
    telemetry = unique_topic("maintain.telemetry")
    ensure_topics(s, {telemetry: s.telemetry_partitions})
    client = connect(s)
    db = s.clickhouse_database

    # six pumps wear out and fail; each failure comes back as a corrective order (the label)
    train, labels = [], []
    for i in range(6):
        home = f"{prefix}-H{i}"
        aid = f"{home}-CP"
        train += _readings(home, T0, 70, _wear)
        fail = T0 + 70 * DAY_MS
        labels += [_order(aid, home, 1, "corrective", fail + 2 * HOUR_MS, failure_ms=fail),
                   _order(aid, home, 1, "corrective", fail + 2 * HOUR_MS, failure_ms=fail, status="closed",
                          closed_ms=fail + DAY_MS, replaced=True, resolution_code="REPLACE_BEARINGS", version=2)]
    _produce(s, telemetry, train)
    publish_work_orders(s, labels)

    home = f"{prefix}-H7"
    aid = f"{home}-CP"
    fails_at = T0 + 70 * DAY_MS  # when this pump would fail, untouched

    # the simulator's technicians for this home (its pump, seed 1, does not fail by itself in these months)
    fleet = Fleet(1, [home], ["north"], [True], T0, MaintenanceConfig(history_years=1, preventive_days={},
                                                                         history_preventive_days={}),
                  home_indices=[7])
    technicians = TopicTechnicians(s, fleet)
    ckpt = tmp_path / "maintain.json"
    worker = spawn(s.replace(topic_telemetry=telemetry), "maintain", "--checkpoint", str(ckpt), "--hold", "300",
                   log_name="maintain-1")
    try:
        # once the worker has learned from the six failures (its checkpoint says so), a
        # seventh pump wears out the same way, streamed in half days until the worker asks
        # for an order (readings after that depend on when the technician comes)
        def saved():
            return json.loads(ckpt.read_text()) if ckpt.exists() else None

        wait_for(lambda: (saved() or {"workflow": {"failures_seen": {"circulation_pump": 0}}})["workflow"]
                 ["failures_seen"]["circulation_pump"] >= 6, 120, what="the worker to learn from the six failures")
        wear = _readings(home, T0, 70, _wear)
        sent = 58 * 24
        _produce(s, telemetry, wear[:sent])
        while True:
            st = wait_for(lambda: (lambda c: c if c and c["last_ts"].get(home, 0) >= wear[sent - 1]["ts"] else None)(
                saved()), 60, what="the worker to read the pump's readings")
            if f"PM-{aid}-0" in st["workflow"]["requested"]:
                break
            assert sent < 69 * 24, "no predictive order a day before the failure"
            _produce(s, telemetry, wear[sent:sent + 12])
            sent += 12

        def predictive_orders():
            return client.query(
                f"SELECT order_id, toUnixTimestamp64Milli(opened_ms), source, status FROM {db}.work_orders FINAL "
                f"WHERE asset_id = %(a)s AND kind = 'predictive'", parameters={"a": aid}).result_rows

        orders = wait_for(predictive_orders, 240, interval=1.0, what="a predictive order on the degrading pump")
        assert len(orders) == 1
        order_id, opened, source, status = orders[0]
        assert order_id == f"PM-{aid}-0" and source.startswith("model:rul@") and status == "open"
        assert fails_at - opened > 24 * HOUR_MS, "opened too late for a technician to come before the failure"
        # its prediction is in the warehouse, with the signals behind it
        pred = wait_for(lambda: client.query(
            f"SELECT p_fail, rul_hours, top_signals FROM {db}.maintenance_predictions FINAL "
            f"WHERE asset_id = %(a)s AND order_id = %(o)s", parameters={"a": aid, "o": order_id}).result_rows,
            60, what="the prediction that opened the order")
        assert pred[0][0] >= 0.5 and pred[0][1] < 7 * 24 and "vibration_mm_s" in pred[0][2]

        # a hard stop (no final checkpoint) and a restart: the worker replays from its last
        # checkpoint and sees the pump's further wear, but opens no second order
        time.sleep(3)  # past one checkpoint interval
        stop(worker, signal.SIGKILL)
        worker = spawn(s.replace(topic_telemetry=telemetry), "maintain", "--checkpoint", str(ckpt),
                       "--hold", "300", log_name="maintain-2")
        arrival = opened + fleet.config.technician_delay_ms  # until then the worn pump runs on
        more = [r for r in wear[sent:] if r["ts"] < arrival]
        assert more, "the pump wears on until the technician comes"
        _produce(s, telemetry, more)
        last = more[-1]["ts"] - more[-1]["ts"] % (6 * HOUR_MS)  # the last closed window's end
        wait_for(lambda: client.query(
            f"SELECT count() FROM {db}.maintenance_predictions WHERE asset_id = %(a)s "
            f"AND toUnixTimestamp64Milli(ts) >= %(t)s AND p_fail >= 0.5", parameters={"a": aid, "t": last})
            .result_rows[0][0], 120, interval=1.0, what="predictions after the restart, still at risk")
        assert [r[0] for r in predictive_orders()] == [order_id]

        # the simulator's technicians read the order from the topic and come after their
        # delay (24 h of fleet time): they replace the pump before it fails and publish the
        # closed order; the new unit reads healthy and its prediction drops
        wait_for(lambda: (technicians.step(), technicians.taken)[1], 60, what="the technicians to take the order")
        fleet.advance(arrival + 2 * DAY_MS)
        technicians.step()
        technicians.producer.flush(30)
        closed = wait_for(lambda: client.query(
            f"SELECT status, replaced, toUnixTimestamp64Milli(closed_ms) FROM {db}.work_orders FINAL "
            f"WHERE order_id = %(o)s AND status = 'closed'", parameters={"o": order_id}).result_rows,
            60, what="the technicians' closed order")
        assert closed[0][1]
        repaired = closed[0][2]
        assert arrival < repaired < fails_at
        resume = more[-1]["ts"] + HOUR_MS  # the new pump's readings follow the worn one's
        _produce(s, telemetry, _readings(home, resume, 20, lambda d: 1.0))
        end = resume + 20 * DAY_MS - 12 * HOUR_MS

        def after_repair():
            rows = client.query(
                f"SELECT p_fail FROM {db}.maintenance_predictions FINAL WHERE asset_id = %(a)s "
                f"AND toUnixTimestamp64Milli(ts) >= %(t)s ORDER BY ts DESC LIMIT 1",
                parameters={"a": aid, "t": end}).result_rows
            return rows

        latest = wait_for(after_repair, 120, interval=1.0, what="predictions after the repair")
        assert latest[0][0] < 0.1
        assert [r[0] for r in predictive_orders()] == [order_id]  # still the one order, now closed
        stop(worker)
        worker = None
    finally:
        technicians.close()
        if worker is not None:
            stop(worker)
