"""The twin API in process (FastAPI's TestClient): every endpoint, auth and error.
History comes from a simulated city held in memory; the real-stack test is separate."""

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from maintenance.fleet import Fleet
from producers.simulator import CitySimulator
from twin.attributes import building_for_model, register
from twin.auth import Tokens
from twin.model import Climate, Observations, sim_climate
from twin.service import create_app
from twin.state import TwinStore

START = 1_704_067_200_000 + 10 * 86_400_000
HOMES, DAYS = 6, 2


class SimHistory:
    """Telemetry of a simulated city, kept in memory (what the warehouse would hold)."""

    def __init__(self, sim, ticks):
        self.sim = sim
        cols = {k: [] for k in ("ts", "indoor_temp_c", "outdoor_temp_c", "power_w", "water_flow_lpm")}
        self.last_rows = None
        for _ in range(ticks):
            c = sim.tick_columns()
            for k in cols:
                cols[k].append(c[k].copy())
        self.cols = {k: np.array(v) for k, v in cols.items()}

    def telemetry(self, home_id, start_ms, end_ms, step):
        i = self.sim.home_index[home_id]
        ts = self.cols["ts"][:, i]
        sel = (ts >= start_ms) & (ts < end_ms)
        width = 3_600_000 if step == "hour" else 86_400_000
        out = {}
        for t, p in zip(ts[sel] // width * width, self.cols["power_w"][sel, i]):
            out.setdefault(int(t), []).append(float(p))
        return [{"t": t, "power_avg_w": float(np.mean(v))} for t, v in sorted(out.items())]

    def observations(self, home_id, end_ms):
        i = self.sim.home_index[home_id]
        flow = self.cols["water_flow_lpm"][:, i] if self.sim.has_water[i] else None
        c = self.cols
        return Observations(c["ts"][:, i], c["indoor_temp_c"][:, i], c["outdoor_temp_c"][:, i], c["power_w"][:, i],
                            flow)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    sim = CitySimulator(HOMES, ("north", "south"), seed=11, start_ms=START, step_ms=60_000)
    fleet = Fleet(11, sim.home_ids, sim.home_regions, sim.has_water, START)
    boms: dict = {}
    for a in fleet.register():
        boms.setdefault(a["home_id"], []).append(a)
    attrs = register(sim)
    store = TwinStore(attrs, boms)
    for o in fleet.drain_orders():
        store.apply("work_orders", o)
    history = SimHistory(sim, DAYS * 1440)
    now = sim.now_ms
    cm, cs, cd = sim_climate(sim)

    def building_of(h):
        i = sim.home_index[h]
        return building_for_model(store.get(h).attributes, store.get(h).bom,
                                  Climate(float(cm[i]), float(cs[i]), float(cd[i])))

    tokens = Tokens.for_data_dir(tmp_path_factory.mktemp("tokens"))
    app = create_app(store, tokens, history, building_of, clock=lambda: now / 1000)
    client = TestClient(app)
    return {"client": client, "store": store, "sim": sim, "tokens": tokens, "now": now,
            "r": {"Authorization": f"Bearer {tokens.read}"}, "w": {"Authorization": f"Bearer {tokens.write}"}}


def test_auth_is_required_and_scoped(api):
    c = api["client"]
    assert c.get("/health").status_code == 200
    assert c.get("/twins").status_code == 401
    assert c.get("/twins", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/twins", headers=api["r"]).status_code == 200
    etag = c.get("/twins/H000000", headers=api["r"]).headers["ETag"]
    r = c.patch("/twins/H000000", json={"address": "x"}, headers={**api["r"], "If-Match": etag})
    assert r.status_code == 403
    assert "/twins/{home_id}/what-if" in c.get("/openapi.json").json()["paths"]


def test_list_search_get(api):
    c, h = api["client"], api["r"]
    store = api["store"]
    now = api["now"]
    for r in api["sim"].tick():  # live state: one reading per home at "now"
        store.apply("telemetry", dict(r, ts=now - 1000))
    body = c.get("/twins", params={"limit": 2}, headers=h).json()
    assert body["total"] == HOMES and len(body["items"]) == 2
    north = c.get("/twins", params={"region": "north"}, headers=h).json()
    assert north["total"] == sum(1 for t in store.twins.values() if t.region == "north")
    assert all(i["region"] == "north" for i in north["items"])
    overdue = c.get("/twins", params={"compliance_overdue": True}, headers=h).json()
    assert all(i["compliance_overdue"] > 0 for i in overdue["items"])
    assert c.get("/twins", params={"status": "bogus"}, headers=h).status_code == 422
    assert c.get("/twins", params={"limit": 0}, headers=h).status_code == 422
    doc = c.get("/twins/H000001", headers=h)
    assert doc.status_code == 200 and doc.headers["ETag"] == '"H000001-1"'
    d = doc.json()
    assert d["status"] == "online" and d["metrics"]["power_w"]["ts"] == now - 1000
    assert {a["asset_type"] for a in d["bill_of_materials"]} >= {"heat_pump", "meter"}
    assert c.get("/twins/H999999", headers=h).status_code == 404
    assert c.get("/city", headers=h).json()["total"]["homes"] == HOMES


def test_events_and_history(api):
    c, h = api["client"], api["r"]
    wo = c.get("/twins/H000002/work-orders", headers=h).json()
    assert wo == list(api["store"].get("H000002").work_orders.values())
    assert all(o["status"] == "open" for o in c.get("/twins/H000002/work-orders", params={"status": "open"},
                                                    headers=h).json())
    for path in ("anomalies", "alerts", "predictions"):
        assert c.get(f"/twins/H000002/{path}", headers=h).status_code == 200
        assert c.get(f"/twins/H999999/{path}", headers=h).status_code == 404
    rows = c.get("/twins/H000002/telemetry", params={"start_ms": START, "end_ms": START + 6 * 3_600_000},
                 headers=h).json()["rows"]
    assert len(rows) == 6
    bad = c.get("/twins/H000002/telemetry", params={"start_ms": START, "end_ms": START - 1}, headers=h)
    assert bad.status_code == 422


def test_patch_etag_412_428_422(api):
    c, w = api["client"], api["w"]
    etag = c.get("/twins/H000003", headers=w).headers["ETag"]
    ok = c.patch("/twins/H000003", json={"building": {"u_value_w_m2k": 0.25}},
                 headers={**w, "If-Match": etag, "Content-Type": "application/merge-patch+json"})
    assert ok.status_code == 200 and ok.headers["ETag"] != etag
    assert ok.json()["attributes"]["building"]["u_value_w_m2k"] == 0.25
    stale = c.patch("/twins/H000003", json={"address": "1 Lost Lane"}, headers={**w, "If-Match": etag})
    assert stale.status_code == 412
    assert c.patch("/twins/H000003", json={"address": "y"}, headers=w).status_code == 428
    bad = c.patch("/twins/H000003", json={"building": {"year_built": "old"}},
                  headers={**w, "If-Match": ok.headers["ETag"]})
    assert bad.status_code == 422 and bad.json()["field"] == "building.year_built"
    assert c.patch("/twins/H999999", json={}, headers={**w, "If-Match": "*"}).status_code == 404


def test_concurrent_patches_through_http(api):
    c, w = api["client"], api["w"]
    statuses = []

    def one(i):
        etag = c.get("/twins/H000004", headers=w).headers["ETag"]
        statuses.append(c.patch("/twins/H000004", json={"address": f"{i} Oak Lane"},
                                headers={**w, "If-Match": etag}).status_code)

    start_version = api["store"].get("H000004").version
    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 412}
    assert api["store"].get("H000004").version == start_version + statuses.count(200)


def test_what_if(api):
    c, h = api["client"], api["r"]
    r = c.post("/twins/H000005/what-if", json={"u_value_w_m2k": 0.2, "horizon_days": 7}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scenario"]["kwh"] < body["baseline"]["kwh"] and body["delta"]["kwh"] < 0
    assert len(body["baseline"]["daily_kwh"]) == 7
    assert abs(body["calibration"]["energy_error_pct"]) < 5
    bad = c.post("/twins/H000005/what-if", json={"cop": 99}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "cop"
    bad = c.post("/twins/H000005/what-if", json={"insulation": 1}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "insulation"
    assert c.post("/twins/H999999/what-if", json={}, headers=h).status_code == 404
    dry = next(hid for hid, t in api["store"].twins.items() if not t.attributes["building"]["water_system"])
    bad = c.post(f"/twins/{dry}/what-if", json={"pump_w": 20}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "pump_w"
