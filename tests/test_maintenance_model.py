"""Components in the simulator: bill of materials, wear in telemetry, failures,
technicians. Pure code, no stack."""

from __future__ import annotations

import numpy as np
import pytest

from maintenance.assets import ASSET_TYPES, DAY_MS, HOUR_MS
from maintenance.fleet import Fleet, MaintenanceConfig
from producers.simulator import CitySimulator

REGIONS = ("north", "south", "east")
START = 1_705_276_800_000  # 2024-01-15
STEP = HOUR_MS
TICKS = 24 * 75
HOMES = 300
METRICS = ("indoor_temp_c", "power_w", "voltage_v", "vibration_mm_s", "water_flow_lpm", "water_temp_c",
           "uv_intensity_mw_cm2", "pump_pressure_bar")


def _run(maintenance):
    sim = CitySimulator(HOMES, REGIONS, 5, START, step_ms=STEP, maintenance=maintenance)
    worn = set()
    cols = []
    for _ in range(TICKS):
        ts = sim.now_ms
        c = sim.tick_columns()
        if sim.fleet is not None:
            for i, _, _ in sim.fleet.wear(ts).values():
                worn.update(i.tolist())
        cols.append(c)
    out = {k: np.stack([c[k] for c in cols]) for k in METRICS + ("emitted", "ts")}
    return sim, out, worn


@pytest.fixture(scope="module")
def city():
    with_assets = _run(MaintenanceConfig())
    without = _run(None)
    return with_assets, without


def test_every_type_wears_out():
    assert all(t.shape > 1 for t in ASSET_TYPES.values())
    assert all(t.failure_modes for t in ASSET_TYPES.values())


def test_bill_of_materials_is_deterministic_and_independent_of_city_size():
    def fleet(n):
        return Fleet(3, [f"H{i:06d}" for i in range(n)], ["north"] * n, [i % 2 == 0 for i in range(n)], START)

    small, big = fleet(10), fleet(50)
    assert [a for a in small.register() if a["home_id"] < "H000010"] == \
        [a for a in big.register() if a["home_id"] < "H000010"]
    h0 = {a.asset_type for a in small.assets if a.home_id == "H000000"}
    h1 = {a.asset_type for a in small.assets if a.home_id == "H000001"}
    assert h0 == set(ASSET_TYPES)
    assert h1 == {t for t, s in ASSET_TYPES.items() if not s.water_only}
    reg = small.register()
    assert all(r["commissioned_ms"] <= r["install_ms"] <= START for r in reg)
    assert len({r["asset_id"] for r in reg}) == len(reg)
    other = Fleet(4, [f"H{i:06d}" for i in range(10)], ["north"] * 10, [i % 2 == 0 for i in range(10)], START)
    assert [r["install_ms"] for r in other.register()] != [r["install_ms"] for r in reg]


def test_components_change_only_the_homes_they_reach(city):
    (sim, a, worn), (_, b, _) = city
    assert worn, "some component must wear out in 75 days of 300 homes"
    untouched = np.array(sorted(set(range(HOMES)) - worn))
    for m in METRICS:
        assert np.array_equal(a[m][:, untouched], b[m][:, untouched], equal_nan=True), m
    changed = np.array(sorted(worn))
    assert not np.array_equal(a["power_w"][:, changed], b["power_w"][:, changed])


# type -> (metric, direction of the wear's signature, relative size at least)
SIGNATURES = {
    "circulation_pump": [("vibration_mm_s", +1, 0.5), ("pump_pressure_bar", -1, 0.05)],
    "uv_lamp": [("uv_intensity_mw_cm2", -1, 0.2)],
    "water_filter": [("water_flow_lpm", -1, 0.1), ("pump_pressure_bar", +1, 0.05)],
    "inverter": [("voltage_v", -1, 0.01)],
}


@pytest.mark.parametrize("asset_type", sorted(SIGNATURES))
def test_wear_shows_in_telemetry_before_the_failure(city, asset_type):
    (sim, a, _), (_, b, _) = city
    spec = ASSET_TYPES[asset_type]
    late = spec.degrade_days * DAY_MS * 0.2  # the last fifth of the visible wear
    fails = [f for f in sim.fleet.failures if f.asset_type == asset_type and f.ts - late > START]
    assert fails, f"no {asset_type} failure in the run"
    for f in fails:
        h = sim.home_index[sim.fleet.asset(f.asset_id).home_id]
        rows = (a["ts"][:, 0] >= f.ts - late) & (a["ts"][:, 0] < f.ts)
        for metric, sign, size in SIGNATURES[asset_type]:
            with_wear, healthy = a[metric][rows, h].mean(), b[metric][rows, h].mean()
            assert sign * (with_wear - healthy) > size * abs(healthy), (f, metric, with_wear, healthy)


def test_long_lived_components_heat_pump_and_water_heater():
    n = 2000  # they live 10-15 years: a big city for a few failures in 40 days
    sim = CitySimulator(n, REGIONS, 5, START, step_ms=STEP, maintenance=MaintenanceConfig())
    ref = CitySimulator(n, REGIONS, 5, START, step_ms=STEP)
    names = ("power_w", "indoor_temp_c", "water_temp_c")
    got, want, ts = {k: [] for k in names}, {k: [] for k in names}, []
    for _ in range(24 * 40):
        ts.append(sim.now_ms)
        c, r = sim.tick_columns(), ref.tick_columns()
        for k in names:
            got[k].append(c[k]), want[k].append(r[k])
    ts = np.array(ts)
    got = {k: np.array(v) for k, v in got.items()}
    want = {k: np.array(v) for k, v in want.items()}
    power, ref_power, indoor, ref_indoor = got["power_w"], want["power_w"], got["indoor_temp_c"], want["indoor_temp_c"]
    heaters = [f for f in sim.fleet.failures if f.asset_type == "water_heater" and START + 5 * DAY_MS < f.ts]
    assert heaters
    for f in heaters:  # scaling cools the hot water, a failed heater leaves it cold
        h = sim.home_index[sim.fleet.asset(f.asset_id).home_id]
        before = (ts >= f.ts - 5 * DAY_MS) & (ts < f.ts)
        assert got["water_temp_c"][before, h].mean() < want["water_temp_c"][before, h].mean() - 7.0
        after = (ts >= f.ts) & (ts < f.ts + 12 * HOUR_MS)
        if after.any():
            assert got["water_temp_c"][after, h].mean() < want["water_temp_c"][after, h].mean() - 30.0
    fails = [f for f in sim.fleet.failures if f.asset_type == "heat_pump" and START + 5 * DAY_MS < f.ts]
    assert fails
    for f in fails:
        h = sim.home_index[sim.fleet.asset(f.asset_id).home_id]
        before = (ts >= f.ts - 5 * DAY_MS) & (ts < f.ts)
        assert power[before, h].mean() > 1.1 * ref_power[before, h].mean()
        after = (ts >= f.ts + 6 * HOUR_MS) & (ts < f.ts + 24 * HOUR_MS)
        if after.any():  # winter: without heating the home cools
            assert indoor[after, h].mean() < ref_indoor[after, h].mean() - 2.0


def test_a_failed_meter_sends_nothing(city):
    (sim, a, _), _ = city
    for f in sim.fleet.failures:
        if f.asset_type == "meter" and START < f.ts < a["ts"][-1, 0] - HOUR_MS:
            h = sim.home_index[sim.fleet.asset(f.asset_id).home_id]
            row = int(np.searchsorted(a["ts"][:, 0], f.ts))
            assert not a["emitted"][row, h]
            return
    pytest.skip("no meter failed in this run")


def test_technicians_repair_after_the_delay_and_reset_wear(city):
    (sim, _, _), _ = city
    cfg = sim.fleet.config
    fleet = Fleet(5, sim.home_ids, sim.home_regions, sim.has_water, START, cfg, home_indices=range(HOMES))
    fleet.drain_orders()
    fleet.advance(START + TICKS * STEP)
    closed = [o for o in fleet.drain_orders() if o["status"] == "closed" and o["kind"] == "corrective"]
    assert closed
    for o in closed:
        assert o["opened_ms"] - o["failure_ms"] == cfg.report_delay_ms
        assert o["closed_ms"] - o["opened_ms"] >= cfg.technician_delay_ms
        assert o["failure_code"] and o["cause_code"] and o["resolution_code"] and o["replaced"]
        install, fail, failed = fleet.current_unit(o["asset_id"])
        assert install >= o["closed_ms"] and fail > install and not failed or fail <= START + TICKS * STEP
    # the same city with slower technicians: same failures, longer downtime
    slow = Fleet(5, sim.home_ids, sim.home_regions, sim.has_water, START,
                 MaintenanceConfig(technician_delay_ms=5 * 24 * HOUR_MS), home_indices=range(HOMES))
    slow.drain_orders()
    slow.advance(START + 30 * DAY_MS)
    fast = Fleet(5, sim.home_ids, sim.home_regions, sim.has_water, START, cfg, home_indices=range(HOMES))
    fast.drain_orders()
    fast.advance(START + 30 * DAY_MS)

    def downtime(f):
        return [o["closed_ms"] - o["failure_ms"] for o in f.drain_orders()
                if o["status"] == "closed" and o["failure_ms"] and o["failure_ms"] >= START]

    assert np.median(downtime(slow)) > np.median(downtime(fast)) + 3 * 24 * HOUR_MS


def test_a_replacement_before_failure_prevents_it():
    fleet = Fleet(2, ["H000000"], ["north"], [True], START, MaintenanceConfig(preventive_days={}))
    install, fail, _ = fleet.current_unit("H000000-CP")
    fleet.open_order("H000000-CP", fail - 3 * DAY_MS, "predictive", "model:test@1")
    fleet.advance(fail + DAY_MS)
    assert not [f for f in fleet.failures if f.asset_id == "H000000-CP" and f.ts >= START]
    new_install, new_fail, failed = fleet.current_unit("H000000-CP")
    assert new_install > fail - 3 * DAY_MS and new_fail > new_install and not failed
    orders = [o for o in fleet.drain_orders() if o["asset_id"] == "H000000-CP" and o["kind"] == "predictive"]
    assert orders[-1]["status"] == "closed" and orders[-1]["failure_ms"] is None
    assert orders[-1]["resolution_code"] == "REPLACED_WORN_PART"


def test_config_validation():
    with pytest.raises(ValueError):
        MaintenanceConfig(preventive_days={"toaster": 10})
    with pytest.raises(ValueError):
        MaintenanceConfig(technician_delay_ms=-1)
    fleet = Fleet(2, ["H000000"], ["north"], [True], START)
    with pytest.raises(KeyError):
        fleet.open_order("H999999-CP", START, "predictive", "manual")
    with pytest.raises(ValueError):
        fleet.open_order("H000000-CP", START, "emergency", "manual")
