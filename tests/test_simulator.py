"""The city simulator and its fault plans: pure code, no stack needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from producers.faults import KIND_SPECS, KINDS, VALUE_METRICS, WATER_METRICS, FaultPlan, FaultRecord
from producers.simulator import FIELDS, WATER_FIELDS, CitySimulator, home_id

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "telemetry_reading.avsc"
REGIONS = ("north", "south", "east", "west", "central")
JAN_15 = 1_705_276_800_000  # 2024-01-15T00:00:00Z, a Monday
STEP = 10_000
HOUR = 3_600_000


def run(homes=6, ticks=2160, seed=3, plan=None, step=STEP, start=JAN_15, **kw):
    """Columns stacked over ticks: name -> [tick, home]."""
    sim = CitySimulator(homes, REGIONS, seed, start, step_ms=step, faults=plan, **kw)
    cols = [sim.tick_columns() for _ in range(ticks)]
    out = {k: np.stack([c[k] for c in cols]) for k in cols[0] if k not in ("home_id", "region")}
    out["sim"] = sim
    return out


def same(a, b) -> bool:
    return np.array_equal(a, b, equal_nan=True)


# ------------------------------------------------------------------ basics
def test_deterministic_for_a_seed():
    a, b, c = run(seed=11, ticks=50), run(seed=11, ticks=50), run(seed=12, ticks=50)
    for name in FIELDS[2:]:
        assert same(a[name], b[name]), name
    assert not same(a["power_w"], c["power_w"])
    s1 = CitySimulator(5, REGIONS, 4, JAN_15)
    s2 = CitySimulator(5, REGIONS, 4, JAN_15)
    assert [s1.tick() for _ in range(3)] == [s2.tick() for _ in range(3)]


def test_noise_drawn_ahead_is_the_generators_own_sequence():
    """Each tick's noise is drawn ahead on a thread shared by every simulator: cities
    ticked in turn, or one of them resumed after a pause, see exactly the numbers a
    lone city drawing in order sees."""
    alone = run(homes=40, ticks=30, seed=5, step=1000)
    a = CitySimulator(40, REGIONS, 5, JAN_15, step_ms=1000)
    b = CitySimulator(40, REGIONS, 5, JAN_15, step_ms=1000)
    other = CitySimulator(300, REGIONS, 6, JAN_15, step_ms=1000)
    ticks_a, ticks_b = [], []
    for k in range(30):
        ticks_a.append(a.tick_columns())
        other.tick_columns()
        if k % 7 != 3:  # b skips a turn now and then; its next draw waits meanwhile
            ticks_b.append(b.tick_columns())
    while len(ticks_b) < 30:
        ticks_b.append(b.tick_columns())
    for name in FIELDS[2:]:
        assert same(np.stack([c[name] for c in ticks_a]), alone[name]), name
        assert same(np.stack([c[name] for c in ticks_b]), alone[name]), name
    # and the draws are the generator's own, in order: one per tick, nothing skipped
    rng = np.random.default_rng(5)
    assert [rng.standard_normal(a._nz)[0] for _ in range(31)][-1] == a._next_z.result()[0]


def test_homes_are_the_same_homes_in_any_city_size():
    small, big = CitySimulator(10, REGIONS, 9, JAN_15), CitySimulator(500, REGIONS, 9, JAN_15)
    assert small.home_ids == big.home_ids[:10]
    assert small.home_regions == big.home_regions[:10]
    assert np.array_equal(small.has_water, big.has_water[:10])
    assert home_id(42) == "H000042" and big.home_ids[42] == "H000042"
    assert set(big.home_regions) == set(REGIONS)


def test_every_reading_matches_the_avro_schema():
    schema = parse_schema(json.loads(SCHEMA_PATH.read_text()))
    names = [f["name"] for f in json.loads(SCHEMA_PATH.read_text())["fields"]]
    assert tuple(names) == FIELDS
    plan = FaultPlan()
    plan.inject("H000001", "meter_dropout", JAN_15 + 3 * STEP, 4 * STEP)
    plan.inject("H000002", "stuck_sensor", JAN_15, 10 * STEP, metric="power_w")
    plan.inject("H000003", "spike", JAN_15 + 5 * STEP, STEP, metric="voltage_v")
    sim = CitySimulator(40, REGIONS, 5, JAN_15, step_ms=STEP, faults=plan)
    count = 0
    for _ in range(20):
        for r in sim.tick():
            assert list(r) == names
            validate(r, schema, raise_errors=True)
            assert type(r["ts"]) is int and type(r["seq"]) is int
            for f in FIELDS[4:10]:
                assert type(r[f]) is float and np.isfinite(r[f])
            for f in WATER_FIELDS:
                assert r[f] is None or type(r[f]) is float
            count += 1
    assert count == 40 * 20 - 4


def test_tick_and_tick_columns_agree():
    a, b = CitySimulator(8, REGIONS, 1, JAN_15), CitySimulator(8, REGIONS, 1, JAN_15)
    for _ in range(3):
        rows, cols = a.tick(), b.tick_columns()
        for j, r in enumerate(rows):
            assert r["home_id"] == cols["home_id"][j] and r["ts"] == cols["ts"][j] and r["seq"] == cols["seq"][j]
            for f in FIELDS[4:]:
                assert r[f] == cols[f][j] or (r[f] is None and np.isnan(cols[f][j]))


def test_explicit_timestamps_and_clock():
    sim = CitySimulator(2, REGIONS, 1, JAN_15, step_ms=1000)
    assert sim.tick()[0]["ts"] == JAN_15 and sim.now_ms == JAN_15 + 1000
    rows = sim.tick(ts_ms=JAN_15 + 5000)  # live mode: wall clock
    assert rows[0]["ts"] == JAN_15 + 5000 and rows[0]["seq"] == 1 and sim.now_ms == JAN_15 + 6000
    with pytest.raises(ValueError):
        sim.tick(ts_ms=JAN_15)


def test_energy_is_monotonic_and_integrates_power():
    r = run(homes=20, ticks=400)
    d = np.diff(r["energy_kwh"], axis=0)
    assert (d > 0).all()
    # each increment is the power of the new tick over the step
    assert np.allclose(d, r["power_w"][1:] * STEP / 3.6e9, rtol=1e-6)


def test_daily_pattern_evening_above_night():
    r = run(homes=200, ticks=2 * 144, step=600_000)  # two days at 10-minute steps
    hour = (r["ts"][:, 0] % 86_400_000) / HOUR
    p = r["power_w"].mean(axis=1)
    evening, night = p[(hour >= 18) & (hour < 21)].mean(), p[(hour >= 3) & (hour < 5)].mean()
    assert evening > 1.2 * night
    t_out = r["outdoor_temp_c"].mean(axis=1)
    assert t_out[(hour >= 13) & (hour < 17)].mean() > t_out[(hour >= 3) & (hour < 7)].mean() + 2
    assert -15 < t_out.mean() < 12  # January
    t_in = r["indoor_temp_c"]
    assert 16 < t_in.mean() < 24 and abs(r["voltage_v"].mean() - 230) < 5
    summer = run(homes=50, ticks=144, step=600_000, start=JAN_15 + 182 * 86_400_000)
    assert summer["outdoor_temp_c"].mean() > t_out.mean() + 8


def test_water_fields_null_exactly_for_homes_without_water():
    sim = CitySimulator(2000, REGIONS, 8, JAN_15)
    assert 0.30 < len(sim.water_homes) / 2000 < 0.40
    for row in sim.tick():
        has = row["home_id"] in sim.water_homes
        for f in WATER_FIELDS:
            assert (row[f] is not None) == has
    none = CitySimulator(50, REGIONS, 8, JAN_15, water_fraction=0.0)
    assert not none.water_homes and all(r["water_flow_lpm"] is None for r in none.tick())


def test_seq_counts_reading_slots():
    r = run(homes=5, ticks=100)
    assert (r["seq"] == np.arange(100)[:, None]).all()
    assert r["emitted"].all()


# ------------------------------------------------------------------ faults
def _window(r, rec: FaultRecord):
    ts = r["ts"][:, 0]
    return (ts >= rec.start_ms) & (ts < rec.end_ms)


def _check_untouched_elsewhere(base, f, j, except_metrics=()):
    """Homes other than j are never affected; home j only on its fault's metrics."""
    others = [i for i in range(base["power_w"].shape[1]) if i != j]
    for name in FIELDS[2:]:
        assert same(base[name][:, others], f[name][:, others]), name
        if name not in except_metrics:
            assert same(base[name][:, j], f[name][:, j]), name


@pytest.fixture(scope="module")
def base():
    return run()


@pytest.fixture(scope="module")
def water_home(base):
    homes = sorted(base["sim"].water_homes)
    assert homes
    return homes[0]


START = JAN_15 + 1 * HOUR


@pytest.mark.parametrize("metric", ["power_w", "voltage_v", "indoor_temp_c"])
def test_spike(base, metric):
    plan = FaultPlan()
    rec = plan.inject("H000002", "spike", START, 2 * STEP, metric=metric)
    f = run(plan=plan)
    w = _window(f, rec)
    assert w.sum() == 2
    diff = f[metric][:, 2] - base[metric][:, 2]
    assert np.allclose(diff[w], rec.magnitude) and (diff[~w] == 0).all()
    _check_untouched_elsewhere(base, f, 2, except_metrics=(metric,))


@pytest.mark.parametrize("kind,factor", [("voltage_sag", -1), ("voltage_surge", 1)])
def test_voltage_sag_and_surge(base, kind, factor):
    plan = FaultPlan()
    rec = plan.inject("H000001", kind, START, 3 * 60_000)
    f = run(plan=plan)
    w = _window(f, rec)
    ratio = f["voltage_v"][:, 1] / base["voltage_v"][:, 1]
    assert np.allclose(ratio[w], 1 + factor * rec.magnitude) and (ratio[~w] == 1).all()
    lo, hi = (190, 210) if factor < 0 else (240, 260)
    assert lo < f["voltage_v"][w, 1].mean() < hi
    _check_untouched_elsewhere(base, f, 1, except_metrics=("voltage_v",))


@pytest.mark.parametrize("metric", ["indoor_temp_c", "power_w", "voltage_v", "outdoor_temp_c", "energy_kwh", "water"])
def test_stuck_sensor(base, water_home, metric):
    home = water_home if metric == "water" else "H000004"
    metric = "water_temp_c" if metric == "water" else metric
    j = int(home[1:])
    plan = FaultPlan()
    rec = plan.inject(home, "stuck_sensor", START, 30 * 60_000, metric=metric)
    f = run(plan=plan)
    w = _window(f, rec)
    first = np.flatnonzero(w)[0]
    stuck = f[metric][w, j]
    assert (stuck == base[metric][first, j]).all()  # flat at its value when it froze
    assert len(np.unique(base[metric][w, j])) == w.sum()  # ...where the real one varies
    assert same(f[metric][~w, j], base[metric][~w, j])
    _check_untouched_elsewhere(base, f, j, except_metrics=(metric,))


def test_meter_dropout_removes_rows_but_seq_advances(base):
    plan = FaultPlan()
    rec = plan.inject("H000003", "meter_dropout", START, 10 * 60_000)
    f = run(plan=plan)
    w = _window(f, rec)
    assert w.sum() == 60
    assert (~f["emitted"][w, 3]).all() and f["emitted"][~w, 3].all()
    assert f["emitted"][:, [0, 1, 2, 4, 5]].all()
    _check_untouched_elsewhere(base, f, 3)  # values and seq of kept rows are unchanged
    # through tick(): the home's rows skip the window and seq jumps by the rows lost
    sim = CitySimulator(6, REGIONS, 3, JAN_15, step_ms=STEP, faults=plan)
    seqs = [r["seq"] for _ in range(720) for r in sim.tick() if r["home_id"] == "H000003"]
    jumps = np.diff(seqs)
    assert len(seqs) == 720 - 60 and sorted(set(jumps.tolist())) == [1, 61]


def test_pump_bearing_wear(base, water_home):
    j = int(water_home[1:])
    plan = FaultPlan()
    rec = plan.inject(water_home, "pump_bearing_wear", START, 2 * HOUR)
    f = run(plan=plan)
    w = _window(f, rec)
    ratio = f["vibration_mm_s"][:, j] / base["vibration_mm_s"][:, j]
    assert (ratio[~w] == 1).all()
    idx = np.flatnonzero(w)
    early, late = ratio[idx[: len(idx) // 10]], ratio[idx[-len(idx) // 10 :]]
    assert early.mean() < 1.2 and late.mean() > 1 + 0.7 * rec.magnitude  # rising
    dp = f["pump_pressure_bar"][:, j] - base["pump_pressure_bar"][:, j]
    assert (dp[~w] == 0).all() and dp[idx[-len(idx) // 5 :]].std() > 0.05  # oscillating
    _check_untouched_elsewhere(base, f, j, except_metrics=("vibration_mm_s", "pump_pressure_bar"))


def test_hvac_failure_drifts_toward_outdoor_then_recovers(base):
    plan = FaultPlan()
    rec = plan.inject("H000002", "hvac_failure", START, 2 * HOUR)
    f = run(plan=plan)
    w = _window(f, rec)
    before = f["ts"][:, 0] < rec.start_ms
    d_in = f["indoor_temp_c"][:, 2] - base["indoor_temp_c"][:, 2]
    d_p = f["power_w"][:, 2] - base["power_w"][:, 2]
    assert (d_in[before] == 0).all() and (d_p[before] == 0).all()
    idx = np.flatnonzero(w)
    # January: the home cools toward the (colder) outdoor air, and HVAC power is gone
    assert d_in[idx[-10:]].mean() < -2.0
    assert np.all(np.diff(d_in[idx[::30]]) < 0)
    assert d_p[idx].mean() < -300
    after = idx[-1] + 1
    # repaired: the heat pump recovers the lost degrees over the next hours
    assert abs(d_in[-20:].mean()) < 0.25 * abs(d_in[after - 5 : after].mean())
    # (the supply voltage sags a little less under the lighter load: physics, not signature)
    _check_untouched_elsewhere(base, f, 2, except_metrics=("indoor_temp_c", "power_w", "energy_kwh", "voltage_v"))


def test_insulation_degradation_raises_power_slowly(base):
    plan = FaultPlan()
    rec = plan.inject("H000005", "insulation_degradation", START, 3 * HOUR, magnitude=0.8)
    f = run(plan=plan)
    w = _window(f, rec)
    d_p = f["power_w"][:, 5] - base["power_w"][:, 5]
    d_e = np.diff(f["energy_kwh"][:, 5]) - np.diff(base["energy_kwh"][:, 5])
    assert (d_p[~w & (f["ts"][:, 0] < rec.start_ms)] == 0).all()
    idx = np.flatnonzero(w)
    q = len(idx) // 4
    first, last = d_p[idx[:q]].mean(), d_p[idx[-q:]].mean()
    assert 0 <= first < last and last > 200  # slow, growing
    assert d_e[idx[-q:] - 1].mean() > 0  # more energy for the same weather
    assert abs(d_p[-180:]).mean() < 0.2 * last  # back to normal once repaired
    assert abs(f["indoor_temp_c"][:, 5] - base["indoor_temp_c"][:, 5]).max() < 1.0  # the HVAC copes
    _check_untouched_elsewhere(base, f, 5, except_metrics=("power_w", "energy_kwh", "indoor_temp_c", "voltage_v"))


def test_every_kind_is_covered_by_a_signature_test():
    tested = {"spike", "voltage_sag", "voltage_surge", "stuck_sensor", "meter_dropout", "pump_bearing_wear",
              "hvac_failure", "insulation_degradation"}
    assert tested == set(KINDS)


# ------------------------------------------------------------------ plans
def test_random_plan_is_seeded_and_well_formed():
    homes = [home_id(i) for i in range(30)]
    water = set(homes[:8])
    span = 12 * HOUR
    a = FaultPlan.random(homes, JAN_15, span, seed=5, faults_per_kind=3, water_homes=water, step_ms=STEP)
    b = FaultPlan.random(homes, JAN_15, span, seed=5, faults_per_kind=3, water_homes=water, step_ms=STEP)
    c = FaultPlan.random(homes, JAN_15, span, seed=6, faults_per_kind=3, water_homes=water, step_ms=STEP)
    assert a.ground_truth() == b.ground_truth() != c.ground_truth()
    gt = a.ground_truth()
    assert len(gt) == 3 * len(KINDS)
    for r in gt:
        assert JAN_15 + span // 10 <= r.start_ms < r.end_ms <= JAN_15 + span - span // 20
        assert (r.start_ms - JAN_15) % STEP == 0 and r.duration_ms % STEP == 0
        assert r.metric in KIND_SPECS[r.kind].metrics
        if r.kind == "pump_bearing_wear" or r.metric in WATER_METRICS:
            assert r.home_id in water
        if r.kind == "stuck_sensor":
            assert r.metric in VALUE_METRICS
        if r.kind == "spike":
            assert 1 <= r.duration_ms // STEP <= 3
    by_home: dict[str, list[FaultRecord]] = {}
    for r in gt:
        by_home.setdefault(r.home_id, []).append(r)
    for recs in by_home.values():
        recs.sort(key=lambda r: r.start_ms)
        for x, y in zip(recs, recs[1:]):
            assert y.start_ms >= x.end_ms  # never two faults at once on a home


def test_plan_validation():
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.inject("H000001", "gremlins", JAN_15, 1000)
    with pytest.raises(ValueError):
        plan.inject("H000001", "voltage_sag", JAN_15, 1000, metric="power_w")
    with pytest.raises(ValueError):
        plan.inject("H000001", "spike", JAN_15, 0)
    plan.inject("H999999", "spike", JAN_15, 1000)
    with pytest.raises(ValueError, match="unknown home"):
        CitySimulator(3, REGIONS, 1, JAN_15, faults=plan)


def _in_a_forked_child(work) -> str:
    """``work()``'s result, or its exception as text, from a forked child."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            out = str(work())
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        return f.read()


def test_a_forked_child_refuses_to_tick_its_parents_simulator_and_ticks_its_own():
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    sim = CitySimulator(10, REGIONS, 1, JAN_15)
    sim.tick_columns()  # its next draw is now in flight on the parent's noise thread
    assert _in_a_forked_child(sim.tick_columns).startswith(
        "RuntimeError: a simulator cannot go on ticking in a forked process")
    fresh = lambda: len([CitySimulator(10, REGIONS, 1, JAN_15).tick_columns() for _ in range(2)][-1]["power_w"])  # noqa: E731
    assert _in_a_forked_child(fresh) == "10"
    assert sim.tick_columns()["power_w"].shape == (10,)  # the parent goes on


def test_a_pickled_simulator_continues_with_the_same_readings():
    import pickle

    a = CitySimulator(30, REGIONS, 2, JAN_15)
    b = CitySimulator(30, REGIONS, 2, JAN_15)
    a.tick_columns(), b.tick_columns()
    a = pickle.loads(pickle.dumps(a))
    for _ in range(3):
        ca, cb = a.tick_columns(), b.tick_columns()
        for name in FIELDS[2:]:
            assert same(ca[name], cb[name]), name
