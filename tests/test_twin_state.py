"""Twin state: event-time live state, versioned merge patches, search."""

import threading

import pytest

from producers.simulator import CitySimulator
from maintenance.fleet import Fleet
from twin.attributes import DAY_MS, register
from twin.state import PatchError, PreconditionFailed, PreconditionRequired, TwinStore, merge_patch

NOW = 1_790_000_000_000


@pytest.fixture()
def store():
    sim = CitySimulator(40, ("north", "south", "east"), seed=9, start_ms=NOW)
    fleet = Fleet(9, sim.home_ids, sim.home_regions, sim.has_water, NOW)
    boms: dict = {}
    for a in fleet.register():
        boms.setdefault(a["home_id"], []).append(a)
    return TwinStore(register(sim), boms), sim, fleet


def test_register_covers_every_home_with_bom_and_compliance(store):
    st, sim, _ = store
    assert set(st.twins) == set(sim.home_ids)
    t = st.get("H000000")
    assert {a["asset_type"] for a in t.bom} >= {"heat_pump", "envelope", "meter", "inverter"}
    statuses = {c["status"] for tw in st.twins.values() for c in tw.compliance(NOW)}
    assert statuses == {"ok", "due_soon", "overdue"}
    for tw in st.twins.values():
        items = {c["item"] for c in tw.attributes["compliance"]}
        assert ("legionella_risk_assessment" in items) == tw.attributes["building"]["water_system"]


def test_late_reading_never_overwrites_a_newer_one(store):
    st, sim, _ = store
    rows = sim.tick()
    late = dict(rows[0], ts=rows[0]["ts"] - 5000, power_w=-1.0, voltage_v=1.0)
    st.apply("telemetry", rows[0])
    assert st.apply("telemetry", late)
    t = st.get(rows[0]["home_id"])
    assert t.metrics["power_w"] == {"ts": rows[0]["ts"], "value": rows[0]["power_w"]}
    assert t.metrics["voltage_v"]["value"] == rows[0]["voltage_v"]
    assert t.late_readings == 1 and t.last_ts == rows[0]["ts"]
    # a newer reading lacking a metric leaves that metric as it was
    newer = dict(rows[0], ts=rows[0]["ts"] + 1000, water_flow_lpm=None, power_w=7.0)
    st.apply("telemetry", newer)
    assert t.metrics["power_w"]["value"] == 7.0
    assert not st.apply("telemetry", dict(rows[0], home_id="H999999"))


def test_status_online_silent_alert(store):
    st, sim, _ = store
    rows = sim.tick()
    for r in rows:
        st.apply("telemetry", r)
    ts = rows[0]["ts"]
    t = st.get("H000003")
    assert t.status(ts + 1000) == "online" and t.status(ts + 61_000) == "silent"
    alert = {"alert_id": "H000003/voltage_v/1", "home_id": "H000003", "region": t.region, "metric": "voltage_v",
             "state": "firing", "severity": "critical", "started_at": ts, "ts": ts, "anomalies": 1,
             "detector": "ewzscore", "score": 0.99}
    st.apply("alerts", alert)
    assert t.status(ts + 1000) == "alert"
    st.apply("alerts", dict(alert, state="resolved", ts=ts + 120_000))
    st.apply("alerts", dict(alert, state="firing", anomalies=3))  # late firing after resolved: stays resolved
    assert t.status(ts + 1000) == "online"
    total, hits = st.search(ts + 1000, in_alert=False)
    assert total == 40
    city = st.city(ts + 1000)
    assert city["total"]["online"] == 40 and city["readings_total"] == 40


def test_work_orders_keep_the_newest_version(store):
    st, _, fleet = store
    orders = fleet.drain_orders()
    for o in orders:
        st.apply("work_orders", o)
    for o in reversed(orders):  # replayed out of order: still the newest version
        st.apply("work_orders", o)
    newest: dict = {}
    for o in orders:
        if o["order_id"] not in newest or o["version"] >= newest[o["order_id"]]["version"]:
            newest[o["order_id"]] = o
    held = {oid: o for t in st.twins.values() for oid, o in t.work_orders.items()}
    assert held == newest


def test_merge_patch_rfc7386_examples():
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}


def test_patch_validates_and_versions(store):
    st, _, _ = store
    t = st.get("H000001")
    etag = t.etag
    with pytest.raises(PatchError) as e:
        st.patch("H000001", {"building": {"u_value_w_m2k": "thin"}}, etag)
    assert e.value.field == "building.u_value_w_m2k"
    for bad, field in [({"building": {"floors": 3}}, "building.floors"), ({"region": "west"}, "region"),
                       ({"location": None}, "location"), ({"building": {"energy_rating": "Z"}},
                                                          "building.energy_rating")]:
        with pytest.raises(PatchError) as e:
            st.patch("H000001", bad, etag)
        assert e.value.field == field
    assert t.version == 1 and t.etag == etag  # nothing applied
    with pytest.raises(PreconditionRequired):
        st.patch("H000001", {"address": "x"}, None)
    st.patch("H000001", {"address": "9 Canal Side, North"}, etag)
    with pytest.raises(PreconditionFailed):
        st.patch("H000001", {"address": "lost"}, etag)
    assert t.attributes["address"] == "9 Canal Side, North" and t.version == 2
    due = t.attributes["compliance"][0]
    st.patch("H000001", {"compliance": [dict(c, last_done_ms=NOW, due_ms=NOW + 400 * DAY_MS)
                                        for c in t.attributes["compliance"]]}, t.etag)
    assert all(c["status"] == "ok" for c in t.compliance(NOW)) and due["item"] == t.attributes["compliance"][0]["item"]


def test_concurrent_read_modify_write_loses_nothing(store):
    st, _, _ = store
    t = st.get("H000002")
    start_area = t.attributes["building"]["floor_area_m2"]
    workers, per_worker = 8, 25
    conflicts = []

    def bump():
        for _ in range(per_worker):
            while True:
                etag, area = t.etag, t.attributes["building"]["floor_area_m2"]  # ETag first: then the value is never older
                try:
                    st.patch("H000002", {"building": {"floor_area_m2": area + 0.5}}, etag)
                    break
                except PreconditionFailed:
                    conflicts.append(1)

    threads = [threading.Thread(target=bump) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.attributes["building"]["floor_area_m2"] == pytest.approx(start_area + 0.5 * workers * per_worker)
    assert t.version == 1 + workers * per_worker
