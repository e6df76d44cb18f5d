"""Behaviour every detector must have, plus each one's own corner cases."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from processors.detectors import Evidence, available, make
from processors.detectors.calibration import TailCalibrator
from processors.detectors.ensemble import Ensemble
from processors.detectors.zscore import EWZScore, RollingZScore, score_to_z, z_to_score

DETECTORS = ["zscore", "ewzscore", "robust", "extreme", "knn", "hst", "ensemble", "seasonal", "seasonal_ensemble"]
# "seasonal" has no opinion on a series without a period (it scores 0 there by design)
POINT_DETECTORS = [d for d in DETECTORS if d != "seasonal"]


def noise(n: int, seed: int = 0, level: float = 50.0, sigma: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sigma) for _ in range(n)]


def feed(det, values) -> list[float]:
    out = []
    for x in values:
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


def test_registry_has_every_detector():
    assert set(DETECTORS) <= set(available())
    for name in DETECTORS:
        assert make(name).name == name


@pytest.mark.parametrize("name", DETECTORS)
def test_warmup_scores_zero(name):
    det = make(name)
    scores = feed(det, [1.0, 1000.0, -5.0, 3.0, 1e6])
    assert scores == [0.0] * 5


@pytest.mark.parametrize("name", DETECTORS)
def test_flat_signal_scores_low(name):
    det = make(name)
    feed(det, [42.0] * 1500)
    assert det.score_one(42.0) < 0.5
    det2 = make(name)
    feed(det2, noise(1500, seed=1))
    assert det2.score_one(50.2) < 0.9


@pytest.mark.parametrize("name", POINT_DETECTORS)
def test_spike_scores_high(name):
    det = make(name)
    feed(det, noise(1500, seed=2))
    assert det.score_one(50.0 + 25.0) > 0.999
    assert det.score_one(50.0 - 25.0) > 0.999


@pytest.mark.parametrize("name", DETECTORS)
def test_score_does_not_change_the_model(name):
    det = make(name)
    feed(det, noise(600, seed=3))
    before = pickle.dumps(det)
    for x in (50.0, 80.0, 50.0, -1e9):
        det.score_one(x)
    assert det.score_one(51.0) == pickle.loads(before).score_one(51.0)


@pytest.mark.parametrize("name", DETECTORS)
def test_pickle_roundtrip_gives_identical_scores(name):
    rng = random.Random(4)
    data = [50.0 + 5 * math.sin(i / 20) + rng.gauss(0, 1) + (30 if i % 997 == 0 else 0) for i in range(5000)]
    det = make(name)
    feed(det, data[:3500])
    clone = pickle.loads(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL))
    assert feed(clone, data[3500:]) == feed(det, data[3500:])
    assert clone.evidence() == det.evidence()


@pytest.mark.parametrize("name", DETECTORS)
def test_state_roundtrip_through_json_gives_identical_scores(name):
    """Checkpoints hold ``to_state()`` as JSON (never pickles): every detector a
    processor can run must come back from it scoring exactly as before."""
    import json

    from processors.detectors.state import dump, load

    if name == "hst":
        with pytest.raises(NotImplementedError):
            make(name).to_state()
        return
    rng = random.Random(4)
    data = [50.0 + 5 * math.sin(i / 20) + rng.gauss(0, 1) + (30 if i % 997 == 0 else 0) for i in range(5000)]
    det = make(name)
    feed(det, data[:3500])
    clone = load(json.loads(json.dumps(dump(det))))
    assert type(clone) is type(det)
    assert feed(clone, data[3500:]) == feed(det, data[3500:])
    assert clone.evidence() == det.evidence()


@pytest.mark.parametrize("name", [d for d in DETECTORS if d != "hst"])
def test_malformed_state_raises_instead_of_building_a_broken_detector(name):
    import json

    from processors.detectors.state import dump, load

    det = make(name)
    feed(det, noise(600, seed=6))
    good = json.loads(json.dumps(dump(det)))
    for key in list(good["state"]):
        for bad in (None, "x" * 10, [1, 2], {"a": 1}, -1):
            state = dict(good["state"], **{key: bad})
            try:
                clone = load({"name": name, "state": state})
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                continue
            # accepted: then it must work
            clone.score_one(50.0)
            clone.learn_one(50.0)


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_stay_in_unit_interval(name):
    rng = random.Random(5)
    data = []
    for i in range(3000):
        x = 1e9 + rng.gauss(0, 1) if i < 1000 else rng.expovariate(0.01) * rng.choice((-1, 1))
        if i % 500 == 0:
            x = float("nan")
        data.append(x)
    det = make(name)
    scores = feed(det, data)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert isinstance(det.evidence(), Evidence)


@pytest.mark.parametrize("name", DETECTORS)
def test_calibration_on_stationary_noise(name):
    det = make(name)
    scores = feed(det, noise(4000, seed=6))[1000:]
    frac = sum(s > 0.99 for s in scores) / len(scores)
    assert frac < 0.03, frac  # a calibrated 0.99 fires ~1% of the time, not 10%


# --------------------------------------------------------------------------- zscore


def test_z_to_score_roundtrip():
    for z in (0.5, 1.0, 3.0, 4.5):
        assert score_to_z(z_to_score(z)) == pytest.approx(z, abs=1e-9)
    assert z_to_score(3.0) == pytest.approx(0.9973, abs=1e-4)


def test_rolling_zscore_is_exact_with_large_offsets():
    det = RollingZScore(window=100, warmup=10)
    rng = random.Random(7)
    vals = [1e12 + rng.gauss(0, 1) for _ in range(5000)]
    for x in vals:
        det.learn_one(x)
    window = vals[-100:]
    mean = math.fsum(window) / 100
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in window) / 99)
    ev = det.evidence()
    assert ev.count == 100
    assert ev.mean == pytest.approx(mean, abs=1e-3)
    assert ev.std == pytest.approx(std, rel=1e-6)


def test_rolling_zscore_loads_old_pickles():
    det = RollingZScore(window=10, warmup=3)
    for x in range(20):
        det.learn_one(float(x))
    state = {"window": 10, "warmup": 3, "min_std": 1e-6, "_values": det._values,
             "_sum": 1.0, "_sumsq": 2.0}  # the pre-Welford layout
    old = RollingZScore.__new__(RollingZScore)
    old.__setstate__(state)
    assert old.evidence() == pytest.approx(det.evidence())


def test_ewzscore_adapts_to_a_level_shift():
    det = EWZScore(halflife=20, warmup=10)
    feed(det, noise(500, seed=8, level=10.0))
    assert det.score_one(30.0) > 0.999
    feed(det, noise(300, seed=9, level=30.0))
    assert det.score_one(30.0) < 0.9


# --------------------------------------------------------------------------- others


def test_tail_calibrator_uniform_scores():
    rng = random.Random(10)
    cal = TailCalibrator(size=2000)
    for _ in range(2000):
        cal.learn_one(rng.random())
    assert cal.score(0.5) == pytest.approx(0.5, abs=0.05)
    assert cal.score(0.99) == pytest.approx(0.99, abs=0.01)
    assert cal.score(2.0) > cal.score(1.0) > 0.99


def test_extreme_forgets_beyond_its_horizon():
    from processors.detectors.extreme import ExtremeValue

    det = ExtremeValue(horizon=1000, blocks=10, warmup=50)
    feed(det, noise(300, seed=11, level=100.0) + noise(300, seed=16, level=0.0))
    assert det.score_one(50.0) == 0.0         # between the remembered extremes
    feed(det, noise(1200, seed=12, level=0.0))
    assert det.score_one(50.0) > 0.999        # 100 has left the horizon


def test_knn_sees_shape_anomalies_of_ordinary_values():
    det = make("knn", lags=8, history=1000)
    wave = [math.sin(i * 2 * math.pi / 50) for i in range(3000)]
    feed(det, wave)
    # the wave stops in mid-range: every value is ordinary, the shape is not
    scores = feed(det, [0.0] * 10)
    assert max(scores) > 0.999


def test_knn_compaction_keeps_history():
    det = make("knn", lags=5, history=50, warmup=20)
    feed(det, noise(500, seed=13))
    assert det._len <= len(det._vals)
    clone = pickle.loads(pickle.dumps(det))
    assert clone.score_one(55.0) == det.score_one(55.0)


def test_ensemble_combinations_and_refractory():
    members = (("zscore", {"window": 100, "warmup": 10}), ("ewzscore", {"halflife": 30, "warmup": 10}))
    for combine in ("geometric", "bonferroni", "max", "mean"):
        e = Ensemble(members=members, combine=combine, refractory=0)
        feed(e, noise(300, seed=14))
        assert e.score_one(90.0) > 0.99
    e = Ensemble(members=members, refractory=20)
    feed(e, noise(300, seed=15))
    first = e.score_one(90.0)
    e.learn_one(90.0)
    assert first > 0.99 and e.score_one(90.0) == 0.0   # reported once
    with pytest.raises(ValueError):
        Ensemble(members=members, weights=[1.0])
    with pytest.raises(ValueError):
        Ensemble(members=[("ensemble", {})])


# --------------------------------------------------------------------------- seasonal


def daily(n: int, seed: int, period: int = 96, sigma: float = 0.3) -> list[float]:
    """A daily-like cycle (``period`` events a day) with noise."""
    rng = random.Random(seed)
    return [20.0 + 5.0 * math.sin(2 * math.pi * i / period) + rng.gauss(0.0, sigma) for i in range(n)]


def test_seasonal_finds_the_period_and_flags_a_broken_cycle():
    det = make("seasonal")
    history = daily(2000, seed=20)
    feed(det, history)
    assert det.period == 96 and det.has_opinion()
    # the next "day" repeats the cycle: quiet
    repeat = daily(2096, seed=21)[2000:]
    normal = feed(det, repeat[:48])
    assert max(normal) < 0.999
    # the cycle stops at mid-level (every value ordinary, the pattern not)
    broken = feed(det, [20.0] * 48)
    assert max(broken) > 0.999
    assert det.evidence().count == 2096


def test_seasonal_has_no_opinion_without_a_period():
    det = make("seasonal")
    scores = feed(det, noise(3000, seed=22))
    assert det.period is None and not det.has_opinion()
    assert max(scores) == 0.0


def test_seasonal_restarts_its_calibration_when_the_period_changes():
    det = make("seasonal", every=100)
    feed(det, daily(1500, seed=23, period=96))
    assert det.period == 96
    feed(det, daily(2500, seed=24, period=60))
    assert det.period == 60 and det.has_opinion()


def test_dominant_period_rejects_short_and_flat_series():
    from processors.detectors.seasonal import dominant_period

    assert dominant_period([1.0] * 500, 4, 200, 0.5) is None
    assert dominant_period([1.0, 2.0, 3.0], 4, 200, 0.5) is None
    with pytest.raises(ValueError):
        make("seasonal", min_lag=1)


# --------------------------------------------------------------------------- seasonal_ensemble


def test_ensemble_leaves_out_members_without_an_opinion():
    members = (("zscore", {"window": 100, "warmup": 10}), ("seasonal", {}))
    with_seasonal = Ensemble(members=members, weights=[0.5, 0.5], refractory=0)
    alone = Ensemble(members=members[:1], refractory=0)
    data = noise(800, seed=25)
    assert feed(with_seasonal, data) == feed(alone, data)  # no period: zscore decides alone


def test_ensemble_p_floor_keeps_one_member_from_deciding_alone():
    members = (("zscore", {"window": 100, "warmup": 10}), ("ewzscore", {"halflife": 30, "warmup": 10}))
    capped = Ensemble(members=members, refractory=0, p_floor=1e-6)
    feed(capped, noise(300, seed=26))
    assert capped.score_one(1e9) == pytest.approx(1.0 - 1e-6)
    with pytest.raises(ValueError):
        Ensemble(members=members, p_floor=1.0)


def test_ensemble_hold_reports_an_incident_once():
    members = (("zscore", {"window": 200, "warmup": 10}),)
    e = Ensemble(members=members, refractory=0, alarm=0.999, hold=30)
    feed(e, noise(300, seed=27))
    scores = feed(e, [90.0] + [90.0 + i for i in range(30)] + [150.0])
    assert scores[0] > 0.999
    assert scores[1:31] == [0.0] * 30          # the incident is open: quiet, even as it grows
    assert scores[31] > 0.999                  # the hold is over: a new incident pages


def test_ensemble_checkpoints_from_before_the_hold_still_load():
    e = make("ensemble")
    data = noise(1200, seed=35) + [90.0] + noise(50, seed=36)
    feed(e, data[:1000])
    state = dict(pickle.loads(pickle.dumps(e)).__dict__)  # its own copy of the members
    for key in ("p_floor", "alarm", "hold", "_since_alarm"):  # the older layout
        del state[key]
    old = Ensemble.__new__(Ensemble)
    old.__setstate__(state)
    assert feed(old, data[1000:]) == feed(e, data[1000:])


def test_seasonal_ensemble_flags_level_shift_and_spike_and_stays_quiet_on_noise():
    quiet = make("seasonal_ensemble")
    scores = feed(quiet, noise(5000, seed=29))[1000:]
    # calibrated: p < 0.005 on fewer than 0.5% of the events, nothing at the processor's z=4
    assert sum(s >= 0.995 for s in scores) < 0.005 * len(scores)
    assert max(scores) < 0.9999

    det = make("seasonal_ensemble")
    feed(det, daily(3000, seed=30))
    shift = feed(det, [x + 8.0 for x in daily(3048, seed=31)[3000:]])
    assert max(shift) >= 0.995 and shift.index(max(shift)) < 10   # found at its start

    det = make("seasonal_ensemble")
    feed(det, daily(3000, seed=32))
    assert det.score_one(20.0 + 15.0) > 0.999


def test_seasonal_ensemble_sees_a_skipped_peak():
    det = make("seasonal_ensemble")
    feed(det, daily(3000, seed=33))
    day = daily(3096, seed=34)[3000:]
    # the peak of the next day never comes: the value stays at its mid-level
    flat = [min(x, 20.5) for x in day]
    assert max(feed(det, flat)) >= 0.995


def test_measure_detector_costs():
    from processors.detectors.bench import measure_detector_costs, measure_state_sizes

    costs = measure_detector_costs(n_events=400, names=["zscore", "extreme"])
    assert set(costs) == {"zscore", "extreme"} and all(v > 100 for v in costs.values())
    sizes = measure_state_sizes(n_events=400, names=["zscore"])
    assert 0 < sizes["zscore"] < 20_000
