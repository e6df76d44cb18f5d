"""The twin service as the local stack runs it (`ecoretrofit stack up` starts it):
every endpoint and error against the real broker, registry and warehouse; a late
reading does not overwrite a newer one; concurrent patches lose nothing; an
undecodable message, an implausible reading or work order is counted and skipped."""

import threading
import time

import httpx
import pytest

import schemas
from ecoretrofit.serde import encoder_for
from producers.producer import TelemetryProducer
from producers.simulator import CitySimulator
from twin.auth import Tokens
from twin_seed import SEEDED_HOMES, seed_once


@pytest.fixture(scope="module")
def twin(stack_settings):
    s = stack_settings
    tokens = Tokens.for_data_dir(s.data_dir)
    base = f"http://127.0.0.1:{s.port('twin')}"
    now = int(time.time() * 1000)
    seed_once(s)
    with httpx.Client(base_url=base, timeout=60) as http:
        yield {"http": http, "settings": s, "r": {"Authorization": f"Bearer {tokens.read}"},
               "w": {"Authorization": f"Bearer {tokens.write}"}, "now": now}


def _health(t):
    return t["http"].get("/health").json()


def _wait(cond, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_live_state_by_event_time_and_hostile_messages(twin):
    s, http, r = twin["settings"], twin["http"], twin["r"]
    _wait(lambda: _health(twin)["live"]["ready"])
    sim = CitySimulator(s.homes, s.regions, s.seed, twin["now"])
    rows = {x["home_id"]: x for x in sim.tick()}
    newer = dict(rows["H000001"], ts=twin["now"], power_w=1234.5)
    late = dict(rows["H000001"], ts=twin["now"] - 10_000, power_w=9.0)
    # stamped in 2100: had the twin taken it, it would stay the home's "latest" reading for ever
    future = dict(rows["H000001"], ts=4_102_444_800_000, power_w=7.0)
    before = _health(twin)["live"].get("telemetry", 0)
    from confluent_kafka import Producer

    with TelemetryProducer(s) as p:
        p.send(newer)
        p.flush()
        raw = Producer(s.producer_config())
        raw.produce(s.topic_telemetry, b"\x00garbage", b"H000001")  # hostile bytes on the topic
        raw.flush(10)
        del raw
        p.send(future)
        p.send(late)
        p.send(dict(rows["H000002"], ts=twin["now"]))
        p.flush()
    h = _wait(lambda: (lambda x: x if x.get("telemetry", 0) >= before + 3 else None)(_health(twin)["live"]))
    assert h["telemetry_undecodable"] >= 1 and h["telemetry_implausible"] >= 1
    doc = http.get("/twins/H000001", headers=r).json()
    assert doc["metrics"]["power_w"] == {"ts": twin["now"], "value": 1234.5}
    # other tests of the session share the stack: the home may also be in alert, never silent
    assert doc["late_readings"] >= 1 and doc["status"] in ("online", "alert")


def test_alerts_from_the_topic(twin):
    s, http, r = twin["settings"], twin["http"], twin["r"]
    from confluent_kafka import Producer

    enc = encoder_for(s, s.topic_alerts, schemas.ALERT_EVENT)
    alert = {"alert_id": f"H000002/voltage_v/{twin['now']}", "home_id": "H000002", "region":
             http.get("/twins/H000002", headers=r).json()["region"], "metric": "voltage_v", "state": "firing",
             "severity": "critical", "started_at": twin["now"], "ts": twin["now"], "anomalies": 3,
             "detector": "ewzscore", "score": 0.999}
    p = Producer(s.producer_config())
    p.produce(s.topic_alerts, enc.encode(alert), b"H000002")
    p.flush(10)
    del p
    def ours():
        return [a for a in http.get("/twins/H000002/alerts", params={"state": "firing"}, headers=r).json()
                if a["alert_id"] == alert["alert_id"]]

    _wait(ours)
    assert ours()[0]["metric"] == "voltage_v" and ours()[0]["anomalies"] == 3
    listed = http.get("/twins", params={"in_alert": True}, headers=r).json()
    assert "H000002" in [i["home_id"] for i in listed["items"]]
    assert http.get("/city", headers=r).json()["total"]["in_alert"] >= 1


def test_work_orders_from_the_topic(twin):
    """A new version of an order replaces the old one; an older version arriving late does not."""
    s, http, r = twin["settings"], twin["http"], twin["r"]
    from confluent_kafka import Producer

    enc = encoder_for(s, s.topic_workorders, schemas.WORK_ORDER)
    order = {"order_id": "WO-H000006-CP-9001", "asset_id": "H000006-CP", "home_id": "H000006",
             "region": http.get("/twins/H000006", headers=r).json()["region"], "asset_type": "circulation_pump",
             "model": "CP-25", "kind": "predictive", "source": "model:test@1", "opened_ms": twin["now"],
             "status": "open", "closed_ms": None, "failure_ms": None, "failure_code": None, "cause_code": None,
             "resolution_code": None, "replaced": False, "version": 1}
    closed = dict(order, status="closed", closed_ms=twin["now"] + 1000, resolution_code="REPLACE_BEARINGS",
                  replaced=True, version=2)
    # implausible: version 3 of the same order, for a component of another home
    foreign = dict(closed, asset_id="H000007-CP", version=3, status="open", closed_ms=None)
    p = Producer(s.producer_config())
    for rec in (order, closed, foreign, order):  # the first version again, late
        p.produce(s.topic_workorders, enc.encode(rec), rec["asset_id"].encode())
    p.flush(10)
    del p

    def held():
        orders = http.get("/twins/H000006/work-orders", headers=r).json()
        return next((o for o in orders if o["order_id"] == order["order_id"]), None)

    _wait(lambda: (held() or {}).get("version") == 2 and _health(twin)["live"].get("work_orders", 0) >= 3
          and _health(twin)["live"].get("work_orders_implausible", 0) >= 1)
    assert held()["status"] == "closed" and held()["asset_id"] == "H000006-CP"


def test_predictions_from_the_topic(twin):
    """The newest prediction per asset (by event time) is the twin's; an older one arriving late is not."""
    s, http, r = twin["settings"], twin["http"], twin["r"]
    from confluent_kafka import Producer

    enc = encoder_for(s, s.topic_predictions, schemas.MAINTENANCE_PREDICTION)
    base = {"asset_id": "H000007-HP", "home_id": "H000007", "region": "", "asset_type": "heat_pump",
            "model": "model:test@1", "horizon_hours": 168.0, "top_signals": ["power_w"],
            "top_contributions_hours": [12.0], "order_id": None}
    newer = dict(base, prediction_id=f"H000007-HP/{twin['now']}/test", ts=twin["now"], p_fail=0.8, rul_hours=50.0)
    older = dict(base, prediction_id=f"H000007-HP/{twin['now'] - 60_000}/test", ts=twin["now"] - 60_000,
                 p_fail=0.1, rul_hours=900.0)
    p = Producer(s.producer_config())
    for rec in (newer, older):
        p.produce(s.topic_predictions, enc.encode(rec), rec["asset_id"].encode())
    p.flush(10)
    del p
    _wait(lambda: _health(twin)["live"].get("predictions", 0) >= 2)
    held = http.get("/twins/H000007/predictions", headers=r).json()
    assert [(x["asset_id"], x["p_fail"]) for x in held] == [("H000007-HP", 0.8)]


def test_read_endpoints_and_errors(twin):
    s, http, r = twin["settings"], twin["http"], twin["r"]
    assert http.get("/twins").status_code == 401
    assert http.get("/twins", headers={"Authorization": "Bearer wrong"}).status_code == 401
    body = http.get("/twins", params={"limit": 5, "offset": 5}, headers=r).json()
    assert body["total"] == s.homes and len(body["items"]) == 5 and body["items"][0]["home_id"] == "H000005"
    region = s.regions[0]
    assert all(i["region"] == region for i in http.get("/twins", params={"region": region}, headers=r).json()["items"])
    assert http.get("/twins", params={"q": "H000007"}, headers=r).json()["total"] == 1
    assert http.get("/twins/H999999", headers=r).status_code == 404
    hist = http.get("/twins/H000003/telemetry", params={"start_ms": twin["now"] - 86_400_000,
                                                        "end_ms": twin["now"]}, headers=r).json()["rows"]
    assert 23 <= len(hist) <= 25 and all(h["readings"] > 0 for h in hist)
    days = http.get("/twins/H000003/telemetry", params={"start_ms": twin["now"] - 3 * 86_400_000, "step": "day"},
                    headers=r).json()["rows"]
    assert sum(d["readings"] for d in days) >= sum(h["readings"] for h in hist)
    assert http.get("/twins/H000003/telemetry", params={"step": "week"}, headers=r).status_code == 422
    wo = http.get("/twins/H000003/work-orders", headers=r).json()
    assert all(o["home_id"] == "H000003" for o in wo)
    assert http.get("/twins/H000003/predictions", headers=r).status_code == 200
    assert http.get("/twins/H000003/anomalies", headers=r).status_code == 200
    assert http.get("/docs").status_code == 200


def test_patch_versions_and_concurrency(twin):
    http, r, w = twin["http"], twin["r"], twin["w"]
    etag = http.get("/twins/H000004", headers=r).headers["ETag"]
    assert http.patch("/twins/H000004", json={"address": "x"}, headers={**r, "If-Match": etag}).status_code == 403
    assert http.patch("/twins/H000004", json={"address": "x"}, headers=w).status_code == 428
    bad = http.patch("/twins/H000004", json={"building": {"u_value_w_m2k": 99}}, headers={**w, "If-Match": etag})
    assert bad.status_code == 422 and bad.json()["field"] == "building.u_value_w_m2k"
    ok = http.patch("/twins/H000004", json={"building": {"u_value_w_m2k": 0.3}},
                    headers={**w, "If-Match": etag, "Content-Type": "application/merge-patch+json"})
    assert ok.status_code == 200
    assert http.patch("/twins/H000004", json={"address": "y"}, headers={**w, "If-Match": etag}).status_code == 412
    # eight writers doing read-modify-write with retries: every increment lands
    start_area = http.get("/twins/H000004", headers=r).json()["attributes"]["building"]["floor_area_m2"]

    def writer():
        with httpx.Client(base_url=str(http.base_url), timeout=30) as c:
            for _ in range(5):
                while True:
                    g = c.get("/twins/H000004", headers=r)
                    area = g.json()["attributes"]["building"]["floor_area_m2"]
                    p = c.patch("/twins/H000004", json={"building": {"floor_area_m2": area + 1.0}},
                                headers={**w, "If-Match": g.headers["ETag"]})
                    if p.status_code == 200:
                        break
                    assert p.status_code == 412

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = http.get("/twins/H000004", headers=r).json()["attributes"]["building"]["floor_area_m2"]
    assert final == pytest.approx(start_area + 40.0)


def test_what_if_calibrated_from_the_warehouse(twin):
    http, r = twin["http"], twin["r"]
    res = http.post("/twins/H000005/what-if", json={"u_value_w_m2k": 0.2, "horizon_days": 14}, headers=r)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["calibration"]["window_hours"] >= 40
    assert abs(body["calibration"]["energy_error_pct"]) < 5
    assert body["delta"]["kwh"] < 0 and len(body["scenario"]["daily_kwh"]) == 14
    bad = http.post("/twins/H000005/what-if", json={"night_setback_c": -3}, headers=r)
    assert bad.status_code == 422 and bad.json()["field"] == "night_setback_c"
    assert http.post("/twins/H999999/what-if", json={}, headers=r).status_code == 404
    # a home with no history in the window cannot be calibrated: a clear 409
    assert http.post(f"/twins/H000{SEEDED_HOMES + 100:03d}/what-if", json={}, headers=r).status_code == 409
