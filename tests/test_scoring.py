"""The per-home model the Faust agent runs, on simulated homes with injected faults
(pure code: no broker)."""

from __future__ import annotations

import collections
import json
import os
import pickle

import pytest

from ecoretrofit.config import Settings
from processors.scoring import HomeModel, ScoringConfig
from producers.faults import FaultPlan
from producers.simulator import CitySimulator

START = 1_700_000_000_000
FAULTS = {
    "H000001": ("spike", "power_w", 1_000, "ewzscore"),
    "H000002": ("stuck_sensor", "indoor_temp_c", 120_000, "stuck"),
    "H000003": ("meter_dropout", None, 30_000, "gap"),
    "H000004": ("voltage_sag", "voltage_v", 60_000, "ewzscore"),
}


@pytest.fixture(scope="module")
def city_events():
    plan = FaultPlan()
    for home, (kind, metric, duration, _) in FAULTS.items():
        plan.inject(home, kind, START + 400_000, duration, metric=metric)
    sim = CitySimulator(100, ["north", "south"], seed=1, start_ms=START, faults=plan)
    config = ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"}))
    models = collections.defaultdict(lambda: HomeModel(config))
    events = []
    for _ in range(900):
        for reading in sim.tick():
            events += models[reading["home_id"]].update(reading)
    return events, models


@pytest.mark.parametrize("home", sorted(FAULTS))
def test_each_injected_fault_is_found_by_its_detector(city_events, home):
    events, _ = city_events
    kind, metric, duration, detector = FAULTS[home]
    hits = [e for e in events if e["home_id"] == home and e["detector"] == detector
            and START + 400_000 <= e["ts"] <= START + 400_000 + duration + 30_000]
    assert hits, f"{kind} on {home} not found by {detector}"
    if metric:
        assert metric in {e["metric"] for e in hits}


def test_false_alarms_are_rare_and_episodes_are_merged(city_events):
    events, _ = city_events
    false = [e for e in events if e["home_id"] not in FAULTS]
    # 96 clean homes x up to 8 metrics x 15 minutes: 19 episodes measured with ewzscore.
    assert len(false) <= 40, collections.Counter((e["metric"], e["detector"]) for e in false)
    per_series = collections.Counter((e["home_id"], e["metric"], e["detector"]) for e in false)
    # the cooldown merges a series' consecutive alarms into episodes: 2 at most measured
    assert max(per_series.values(), default=0) <= 4


def test_events_carry_evidence_and_match_the_schema(city_events):
    import fastavro

    import schemas

    events, _ = city_events
    schema = fastavro.parse_schema(schemas.schema_dict(schemas.ANOMALY_EVENT))
    for e in events:
        assert fastavro.validation.validate(e, schema)
        assert 0.0 <= e["score"] <= 1.0
        assert e["severity"] in ("warning", "critical")
    spike = next(e for e in events if e["home_id"] == "H000001" and e["metric"] == "power_w")
    assert spike["value"] > spike["window_mean"] + 5 * spike["window_std"]
    assert spike["window_count"] >= 30


def test_checkpoint_round_trip_keeps_scoring_identical(city_events):
    _, models = city_events
    model = models["H000010"]
    blob = model.to_bytes(extra={"alerts": [["power_w", "north", 1, "warning", "ewzscore", 0.9, 1, 5.0, False]]})
    assert blob.startswith(b"{") and json.loads(blob)["version"] == HomeModel.VERSION
    restored, extra, problem = HomeModel.restore(blob, model.config)
    assert problem is None and extra["alerts"][0][0] == "power_w"
    reading = {"home_id": "H000010", "region": "north", "ts": START + 901_000, "seq": 901,
               "indoor_temp_c": 35.0, "power_w": 9000.0, "voltage_v": 231.0, "vibration_mm_s": 0.4}
    assert restored.update(dict(reading)) == model.update(dict(reading))
    assert restored.to_bytes() == model.to_bytes()


def test_incompatible_checkpoints_start_afresh_instead_of_crashing(city_events):
    _, models = city_events
    model = models["H000011"]
    good, _, problem = HomeModel.restore(model.to_bytes(), model.config)
    assert problem is None and good.last_ts == model.last_ts
    old = json.loads(model.to_bytes())
    old["version"] = 3
    wrong_type = json.loads(model.to_bytes())
    wrong_type["detectors"]["power_w"]["state"]["count"] = "many"
    unknown = json.loads(model.to_bytes())
    unknown["detectors"]["power_w"]["name"] = "os.system"
    for blob, config, why in [
        (json.dumps(old).encode(), model.config, "version"),
        (model.to_bytes(), ScoringConfig(detector="zscore"), "configuration"),
        (b"not a checkpoint", model.config, "not JSON"),
        (json.dumps(wrong_type).encode(), model.config, "integer"),
        (json.dumps(unknown).encode(), model.config, "unknown detector"),
        (b"[1, 2]", model.config, "not a home-model"),
        (b"{" * 5_000_000, model.config, "bytes"),
    ]:
        fresh, extra, problem = HomeModel.restore(blob, config)
        assert why in problem and fresh.last_ts is None and fresh.config == config and extra == {}


class _Boom:
    """What an attacker writes to the model changelog: unpickling it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_checkpoint_does_not_run_code(city_events, tmp_path):
    _, models = city_events
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Boom(marker))
    pickle.loads(evil)  # the payload works: unpickling it does create the file
    assert marker.exists()
    marker.unlink()
    config = models["H000012"].config
    fresh, extra, problem = HomeModel.restore(evil, config)
    assert not marker.exists(), "restoring a checkpoint executed code"
    assert "pickle" in problem and fresh.last_ts is None


def test_a_seq_jump_of_1e15_is_not_a_dropout_of_1e15_readings():
    model = HomeModel(ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"})))
    base = {"home_id": "H1", "region": "north", "indoor_temp_c": 21.0, "power_w": 400.0,
            "voltage_v": 230.0, "vibration_mm_s": 0.5}
    for i in range(10):
        assert model.update({**base, "ts": i * 1000, "seq": i}) == []
    # one second later, a counter 10^15 ahead: no time for any loss
    assert model.update({**base, "ts": 10_000, "seq": 10**15}) == []
    assert model.update({**base, "ts": 11_000, "seq": 10**15 + 1}) == []
    # 5 s of silence with an absurd jump: the 4 readings the clock proves lost, no more
    events = model.update({**base, "ts": 16_000, "seq": 10**16})
    assert [(e["detector"], e["value"]) for e in events] == [("gap", 4.0)]


def test_a_silent_home_is_reported_while_silent_once_and_again_after_it_speaks():
    model = HomeModel(ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"})))
    base = {"home_id": "H000001", "region": "north", "indoor_temp_c": 21.0, "power_w": 400.0,
            "voltage_v": 230.0, "vibration_mm_s": 0.5}
    for i in range(10):
        model.update({**base, "ts": i * 1000, "seq": i})
    assert model.check_silence(now_ms=11_000) == []  # 2 s quiet: within 3 intervals
    events = model.check_silence(now_ms=13_500)
    assert [(e["metric"], e["detector"], e["ts"], e["event_id"]) for e in events] == \
        [("seq", "gap", 13_500, "H000001/seq/13500/silence")]
    assert model.silent and model.check_silence(now_ms=60_000) == []
    # a checkpoint keeps the silence: a restarted worker does not report it again
    restored, _, _ = HomeModel.restore(model.to_bytes(), model.config)
    assert restored.silent and restored.check_silence(now_ms=70_000) == []
    back = restored.update({**base, "ts": 70_000, "seq": 70})
    assert [(e["detector"], e["value"]) for e in back] == [("gap", 60.0)] and not restored.silent
    assert restored.check_silence(now_ms=75_000)  # silent again later: reported again


def test_a_second_fault_right_after_the_first_is_still_seen():
    """An anomaly is learned only up to the threshold band, so it does not blind the
    model to the next one (two sags a minute apart, as a flaky feeder gives)."""
    plan = FaultPlan()
    plan.inject("H000001", "voltage_sag", START + 120_000, 20_000)
    plan.inject("H000001", "voltage_sag", START + 200_000, 20_000)
    sim = CitySimulator(2, ["north"], seed=1, start_ms=START, faults=plan)
    model = HomeModel(ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"})))
    events = []
    for _ in range(300):
        events += model.update(next(r for r in sim.tick() if r["home_id"] == "H000001"))
    sags = sorted(e["ts"] - START for e in events if e["metric"] == "voltage_v")
    assert [t for t in sags if 120_000 <= t < 140_000] and [t for t in sags if 200_000 <= t < 220_000], sags


def test_a_dropout_longer_than_the_staleness_window_is_still_reported():
    model = HomeModel(ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"})))
    base = {"home_id": "H1", "region": "north", "indoor_temp_c": 21.0, "power_w": 400.0,
            "voltage_v": 230.0, "vibration_mm_s": 0.5}
    for i in range(10):
        assert model.update({**base, "ts": i * 1000, "seq": i}) == []
    # 20 minutes of silence (1,200 readings lost), longer than the 15-minute staleness reset
    events = model.update({**base, "ts": 1_210_000, "seq": 1_210})
    assert [(e["metric"], e["detector"], e["value"], e["severity"]) for e in events] == \
        [("seq", "gap", 1200.0, "critical")]
    assert model.resets == 1


def test_the_processor_runs_seasonal_ensemble():
    """ECO_DETECTOR=seasonal_ensemble: its incidents open at the processor's threshold,
    it finds a voltage sag, and a checkpointed model scores on identically."""
    settings = Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit", "ECO_DETECTOR": "seasonal_ensemble"})
    config = ScoringConfig.from_settings(settings)
    assert config.detector_params == {"alarm": config.threshold}
    plan = FaultPlan()
    plan.inject("H000001", "voltage_sag", START + 600_000, 30_000)
    sim = CitySimulator(2, ["north"], seed=3, start_ms=START, faults=plan)
    model = HomeModel(config)
    events = []
    for _ in range(700):
        events += model.update(next(r for r in sim.tick() if r["home_id"] == "H000001"))
    sags = [e for e in events if e["metric"] == "voltage_v" and e["detector"] == "seasonal_ensemble"]
    assert [e for e in sags if START + 600_000 <= e["ts"] <= START + 630_000], sags
    restored, _, problem = HomeModel.restore(model.to_bytes(), config)
    assert problem is None
    for _ in range(50):
        reading = next(r for r in sim.tick() if r["home_id"] == "H000001")
        assert restored.update(dict(reading)) == model.update(dict(reading))


def test_a_starved_or_lagging_worker_reports_no_silence_and_a_silent_home_is_still_seen():
    """Silence judged by each partition's SilenceClock (processors/silence_clock.py), as
    the processor does: two homes on one partition at 1 Hz; the worker reads them, then
    gets no CPU for 5 s (no fetch completes), then reads a backlog; afterwards one home
    stops while the other goes on."""
    from processors.silence_clock import SilenceClock

    config = ScoringConfig.from_settings(Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit"}))
    models = {h: HomeModel(config) for h in ("H000001", "H000002")}
    base = {"region": "north", "indoor_temp_c": 21.0, "power_w": 400.0, "voltage_v": 230.0, "vibration_mm_s": 0.5}
    clock = SilenceClock()
    t0 = 1_000.0

    def read(second: int, wall: float, homes=("H000001", "H000002")) -> None:
        for h in homes:
            models[h].update({**base, "home_id": h, "ts": int((t0 + second) * 1000), "seq": second})
            clock.saw(0, int((t0 + second) * 1000), wall)

    def silences(wall: float, behind: bool = False) -> list[str]:
        now = clock.now_ms(0, wall, behind=behind)
        return [e["home_id"] for m in models.values() for e in m.check_silence(now_ms=now)]

    for s in range(10):  # live: read as they come
        read(s, t0 + s + 0.1)
        clock.fetched(t0 + s + 0.1)
    assert silences(t0 + 9.5) == []
    # starved: no fetch completes from t0+9.1 to t0+15; the silence timer runs at t0+15
    assert silences(t0 + 15.0) == []
    # the next fetch returns part of the backlog (seconds 10-11 of 10-14): still behind
    read(10, t0 + 15.2); read(11, t0 + 15.2)
    clock.fetched(t0 + 15.2)
    assert silences(t0 + 15.3, behind=True) == []
    # the rest of the backlog (seconds 12-14): caught up
    for s in range(12, 15):
        read(s, t0 + 15.4)
    clock.fetched(t0 + 15.4)
    assert silences(t0 + 15.5) == []
    # live again from second 15: H000002 goes on, H000001 stays away
    for s in range(15, 25):
        read(s, t0 + s + 0.1, homes=("H000002",))
        clock.fetched(t0 + s + 0.1)
    assert silences(t0 + 24.2) == ["H000001"]
