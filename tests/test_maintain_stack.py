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
import os
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
from helpers import home_ids, unique, wait_for

# Event time of the first pump's first reading: four months ago, midnight (readings must
# pass the plausibility contract: at most 400 days old, never in the future)
T0 = (int(time.time() * 1000) // DAY_MS - 120) * DAY_MS


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
    homes = home_ids(8)
    telemetry = unique_topic("maintain.telemetry")
    ensure_topics(s, {telemetry: s.telemetry_partitions})
    client = connect(s)
    db = s.clickhouse_database

    # six pumps wear out and fail; each failure comes back as a corrective order (the label)
    train, labels = [], []
    for i in range(6):
        home = homes[i]
        aid = f"{home}-CP"
        train += _readings(home, T0, 70, _wear)
        fail = T0 + 70 * DAY_MS
        labels += [_order(aid, home, 1, "corrective", fail + 2 * HOUR_MS, failure_ms=fail),
                   _order(aid, home, 1, "corrective", fail + 2 * HOUR_MS, failure_ms=fail, status="closed",
                          closed_ms=fail + DAY_MS, replaced=True, resolution_code="REPLACE_BEARINGS", version=2)]
    _produce(s, telemetry, train)
    publish_work_orders(s, labels)

    home = homes[7]
    aid = f"{home}-CP"
    fails_at = T0 + 70 * DAY_MS  # when this pump would fail, untouched

    # the simulator's technicians for this home (its pump, seed 1, does not fail by itself in these months)
    fleet = Fleet(1, [home], ["north"], [True], T0, MaintenanceConfig(history_years=1, preventive_days={},
                                                                         history_preventive_days={}),
                  home_indices=[7])
    technicians = TopicTechnicians(s, fleet)
    ckpt = tmp_path / "maintain.sqlite"
    worker = spawn(s.replace(topic_telemetry=telemetry), "maintain", "--checkpoint", str(ckpt), "--hold", "300",
                   log_name="maintain-1")
    try:
        # once the worker has learned from the six failures (its checkpoint says so), a
        # seventh pump wears out the same way, streamed in half days until the worker asks
        # for an order (readings after that depend on when the technician comes)
        def saved():
            from maintenance.checkpoint import CheckpointStore

            if not ckpt.exists():
                return None
            store = CheckpointStore(ckpt)
            try:
                return store.load()[0] or None
            finally:
                store.close()

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


def _metric_values(port: int, name: str) -> dict[tuple, float]:
    """Every sample of ``name`` on a /metrics endpoint, by its label values."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {tuple(sorted(smp.labels.items())): smp.value for fam in text_string_to_metric_families(text)
            for smp in fam.samples if smp.name == name}


def test_every_message_is_used_or_dead_lettered_with_its_reason(stack_settings, tmp_path):
    """Readings that do not decode or break the plausibility contract, and work orders that
    do not decode, each land once in the dead letters (reason, source offset, raw bytes,
    refused_by=maintain); every good one is used; counts in = counts out."""
    from confluent_kafka import Consumer, Producer

    from ecoretrofit import metrics
    from helpers import free_port, malformed_avro, offset_recorder

    name = unique("mtdl")
    s = stack_settings.replace(topic_telemetry=f"eco.test.{name}.telemetry",
                               topic_workorders=f"eco.test.{name}.workorders",
                               topic_deadletter=f"eco.test.{name}.deadletter",
                               metrics_port=free_port() - metrics.PORT_OFFSETS["maintain"])
    ensure_topics(s, {s.topic_telemetry: s.telemetry_partitions, s.topic_workorders: 4, s.topic_deadletter: 1})
    home = home_ids(1)[0]
    start = (int(time.time() * 1000) // HOUR_MS - 48) * HOUR_MS
    good_readings = _readings(home, start, 2, lambda d: 1.0)
    good_orders = [_order(f"{home}-CP", home, 1, "corrective", start + HOUR_MS, failure_ms=start),
                   _order(f"{home}-UV", home, 1, "inspection", start + 2 * HOUR_MS, asset_type="uv_lamp")]
    tel_enc = encoder_for(s, s.topic_telemetry, schemas.TELEMETRY_READING)
    wo_enc = encoder_for(s, s.topic_workorders, schemas.WORK_ORDER)
    one = tel_enc.encode(good_readings[0])
    bad_readings = {**{f"reading {k}": (v, k) for k, v in malformed_avro(one).items()},
                    "NaN power": (tel_enc.encode({**good_readings[0], "power_w": float("nan")}), "implausible"),
                    "unknown region": (tel_enc.encode({**good_readings[0], "region": "mars"}), "implausible"),
                    "year 1970": (tel_enc.encode({**good_readings[0], "ts": 0}), "implausible"),
                    "bad home id": (tel_enc.encode({**good_readings[0], "home_id": "../../etc"}), "implausible"),
                    "oversized": (b"\0" * 10_000, "oversized"),
                    "tombstone": (None, "truncated")}
    bad_orders = {f"order {k}": (v, k) for k, v in malformed_avro(wo_enc.encode(good_orders[0])).items()}
    bad_orders["empty order"] = (b"", "truncated")
    # valid Avro, implausible: a component of another home (it would teach the fleet a
    # failure of a unit that is not there), an order opened in 2100
    bad_orders["foreign asset"] = (wo_enc.encode({**good_orders[0], "asset_id": "H000001-CP"}), "implausible")
    bad_orders["opened in 2100"] = (wo_enc.encode({**good_orders[0], "opened_ms": 4_102_444_800_000}), "implausible")

    # bad messages between good ones, each on the key's partition, offsets recorded
    offsets: dict = {}
    record = offset_recorder(offsets)
    p = Producer(s.producer_config())
    for i, r in enumerate(good_readings):
        p.produce(s.topic_telemetry, tel_enc.encode(r), key=home.encode())
        if i < len(bad_readings):
            label, (raw, _) = list(bad_readings.items())[i]
            p.produce(s.topic_telemetry, raw, key=home.encode(), on_delivery=record(label))
    for label, (raw, _) in bad_orders.items():
        p.produce(s.topic_workorders, raw, key=good_orders[0]["asset_id"].encode(), on_delivery=record(label))
    for o in good_orders:
        p.produce(s.topic_workorders, wo_enc.encode(o), key=o["asset_id"].encode())
    assert p.flush(30) == 0
    bad = {**{k: (s.topic_telemetry, *v) for k, v in bad_readings.items()},
           **{k: (s.topic_workorders, *v) for k, v in bad_orders.items()}}
    total = len(good_readings) + len(good_orders) + len(bad)

    port = metrics.port_for(s, "maintain")
    worker = spawn(s, "maintain", "--checkpoint", str(tmp_path / "state.sqlite"), log_name=f"maintain-{name}")
    try:
        wait_for(lambda: sum(_metric_values(port, "eco_maintenance_messages_total").values()) >= total, 120,
                 what=f"the worker to read all {total} messages")
        time.sleep(2)  # nothing more than that arrives
        counted = {dict(k)["topic"] + "/" + dict(k)["outcome"]: v
                   for k, v in _metric_values(port, "eco_maintenance_messages_total").items()}
        assert worker.running()
    finally:
        assert stop(worker) == 0

    # counts in = counts out: every good message used, every bad one dead-lettered
    assert counted == {f"{s.topic_telemetry}/used": len(good_readings),
                       f"{s.topic_telemetry}/dead_letter": len(bad_readings),
                       f"{s.topic_workorders}/used": len(good_orders),
                       f"{s.topic_workorders}/dead_letter": len(bad_orders)}
    c = Consumer({**s.kafka_client_config(), "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([s.topic_deadletter])
    letters = []
    try:
        wait_for(lambda: letters.extend(m for m in c.consume(100, 1.0) if m.error() is None)
                 or len(letters) >= len(bad), 60, interval=0, what="the dead letters")
        time.sleep(2)
        letters += [m for m in c.consume(100, 1.0) if m.error() is None]
    finally:
        c.close()
    assert len(letters) == len(bad)
    got = {(h["source_topic"].decode(), int(h["source_offset"])): (h, m.value())
           for m in letters for h in [dict(m.headers())]}
    for label, (topic, raw, reason) in bad.items():
        h, value = got[(topic, offsets[label])]
        assert h["reason"].decode() == reason, (label, h)
        assert h["refused_by"] == b"maintain" and h["error"], label
        assert (value or b"") == (raw or b""), label  # the raw bytes, whole (none is over the bound)
    assert "power_w: nan is not a finite number" in got[(s.topic_telemetry, offsets["NaN power"])][0]["error"].decode()


def test_eval_through_kafka_agrees_with_the_in_process_run(stack_settings):
    """``eval maintenance --through-kafka`` on a small city: the real worker, between the
    real topics, opens the same predictive orders at the same times as the workflow in
    process, so every figure of the closed loop is the same."""
    from evaluation.maintenance_eval import outcome, policy_config, prediction_quality, simulate
    from evaluation.maintenance_kafka import simulate_through_kafka

    homes, days, seed, step = 40, 90, 42, 2 * HOUR_MS
    kafka = simulate_through_kafka(stack_settings, homes, days, seed, step, policy_config("predictive"))
    local = simulate("predictive", homes, days, seed, stack_settings.regions, step, start_ms=kafka["start_ms"])

    k = kafka["kafka"]
    assert k["readings_read"] == k["readings"] == homes * days * 12 and k["dead_letters"] == 0
    assert k["predictive_orders"] == len(kafka["requests"]) > 0, "a run without predictive orders proves little"

    def requests(run):
        return sorted((r["asset_id"], r["ts"], r["fail_ms"], r["failed"]) for r in run["requests"])

    assert requests(kafka) == requests(local)
    # the same orders at the same times: every figure is computed from the same numbers
    assert outcome(kafka) == outcome(local)
    assert prediction_quality(kafka, 7.0) == prediction_quality(local, 7.0)
    assert sorted((o["asset_id"], o["kind"], o["version"], o["opened_ms"]) for o in kafka["orders"]) == \
        sorted((o["asset_id"], o["kind"], o["version"], o["opened_ms"]) for o in local["orders"])


def test_eval_maintenance_command_through_kafka_leaves_the_running_stack_alone(stack_settings):
    import subprocess
    import sys

    from ecoretrofit.admin import kafka_ok
    from ecoretrofit.processes import cli_argv

    out = subprocess.run(cli_argv("eval", "maintenance", "--through-kafka", "--homes", "5", "--months", "0.2",
                                  "--step-min", "120", "--json"), env={**os.environ, **stack_settings.env()},
                         capture_output=True, text=True, timeout=600, cwd=stack_settings.data_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    k = report["through_kafka"]
    assert k["readings"] == k["readings_read"] == 5 * 6 * 12 and k["dead_letters"] == 0
    assert k["agrees_with_in_process"] is True
    assert [p["policy"] for p in report["policies"]] == ["run-to-failure", "fixed-interval", "predictive"]
    assert "through Kafka" in out.stderr and "360 readings read" in out.stderr  # progress on stderr
    assert kafka_ok(stack_settings.kafka_bootstrap), "the command stopped a broker it had not started"
