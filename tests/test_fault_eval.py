"""Fault evaluation: matching alarms to faults, and the gap and stuck detectors."""

from __future__ import annotations

import argparse
import json
import math
import random

import pytest

from evaluation import eval_cli
from evaluation import faults as fe
from evaluation.faults import Episode, match, merge_episodes, score
from processors.detectors.gaps import GapDetector
from processors.detectors.stuck import StuckDetector
from producers.faults import FaultPlan, FaultRecord
from producers.simulator import CitySimulator

S = 1_000  # one step, ms


def F(home, kind, metric, start, end, extra=()):
    return FaultRecord(home, kind, metric, start * S, end * S, 0.0, extra)


def A(home, metric, *times):
    return [(home, metric, t * S) for t in times]


# ------------------------------------------------------------------ episodes
def test_consecutive_alarms_merge_into_episodes():
    alarms = A("H1", "power_w", 5, 1, 2, 3, 9) + A("H1", "voltage_v", 2) + A("H2", "power_w", 3)
    eps = merge_episodes(alarms, merge_gap_ms=S)
    assert eps == [
        Episode("H1", "power_w", 1 * S, 3 * S, 3),
        Episode("H1", "power_w", 5 * S, 5 * S, 1),
        Episode("H1", "power_w", 9 * S, 9 * S, 1),
        Episode("H1", "voltage_v", 2 * S, 2 * S, 1),
        Episode("H2", "power_w", 3 * S, 3 * S, 1),
    ]
    assert len(merge_episodes(alarms, merge_gap_ms=2 * S)) == 4  # 3 and 5 now merge
    assert merge_episodes([], S) == []


# ------------------------------------------------------------------ matching
def test_detection_window_grace_and_delay():
    f = F("H1", "stuck_sensor", "voltage_v", 100, 200)
    cases = {
        (99,): None,  # before the fault: not a detection
        (100,): 0,
        (150, 160): 50,
        (204,): 104,  # in the grace period
        (205,): None,  # grace is half-open: [start, end + grace)
    }
    for times, delay in cases.items():
        m = match([f], A("H1", "voltage_v", *times), grace_ms=5 * S, merge_gap_ms=S)
        d = m.detections[0]
        assert d.detected == (delay is not None)
        assert d.delay_ms == (None if delay is None else delay * S)
    # the wrong metric or home never detects
    m = match([f], A("H1", "power_w", 150) + A("H2", "voltage_v", 150), 5 * S, S)
    assert not m.detections[0].detected and len(m.false_episodes) == 2


def test_false_positives_are_episodes_outside_every_window():
    f = F("H1", "spike", "power_w", 100, 101)
    alarms = (
        A("H1", "power_w", 10, 11, 12)  # one false episode of three alarms
        + A("H1", "power_w", 50)  # a second one
        + A("H1", "power_w", 98, 99, 100, 101)  # starts before, overlaps: true
        + A("H1", "power_w", 300)  # after grace: false
    )
    m = match([f], alarms, grace_ms=10 * S, merge_gap_ms=S)
    assert m.detections[0].delay_ms == 0
    assert [(e.start_ms // S, e.alarms) for e in m.false_episodes] == [(10, 3), (50, 1), (300, 1)]
    assert len(m.episodes) == 4


def test_multi_metric_fault_detected_on_any_of_its_metrics():
    f = F("H1", "hvac_failure", "indoor_temp_c", 100, 400, extra=("power_w",))
    m = match([f], A("H1", "power_w", 101) + A("H1", "indoor_temp_c", 250), 0, S)
    assert m.detections[0].delay_ms == 1 * S and m.false_episodes == []


def test_probationary_alarms_are_ignored():
    f = F("H1", "spike", "power_w", 100, 101)
    alarms = A("H1", "power_w", 5, 100)
    assert len(match([f], alarms, 0, S).false_episodes) == 1
    assert match([f], alarms, 0, S, since_ms=50 * S).false_episodes == []


def test_precision_recall_f1_delay_per_kind():
    faults = [
        F("H1", "spike", "power_w", 100, 101),
        F("H2", "spike", "voltage_v", 100, 102),
        F("H3", "spike", "power_w", 500, 501),  # missed
        F("H4", "meter_dropout", "seq", 100, 160),
        F("H5", "voltage_sag", "voltage_v", 300, 360),
    ]
    alarms = (
        A("H1", "power_w", 100)  # spike 1, delay 0
        + A("H2", "voltage_v", 101)  # spike 2, delay 1
        + A("H1", "power_w", 700)  # FP on a spike series
        + A("H3", "power_w", 20, 21)  # FP on a spike series (one episode)
        + A("H4", "seq", 103, 161)  # dropout: silence, then seq jump (two true episodes)
        + A("H5", "voltage_v", 310, 320)  # sag, delay 10
        + A("H9", "indoor_temp_c", 50)  # FP on a series without faults: only in "all"
    )
    s = score(faults, alarms, grace_ms=5 * S, merge_gap_ms=S)
    assert list(s) == ["voltage_sag", "meter_dropout", "spike", "all"]
    spike = s["spike"]
    assert (spike.faults, spike.detected, spike.false_episodes) == (3, 2, 2)
    assert spike.precision == 0.5 and spike.recall == pytest.approx(2 / 3)
    assert spike.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert spike.median_delay_s == 0.5 and spike.delays_s == (0.0, 1.0)
    sag = s["voltage_sag"]
    assert (sag.precision, sag.recall, sag.f1, sag.median_delay_s) == (1.0, 1.0, 1.0, 10.0)
    assert s["meter_dropout"].f1 == 1.0 and s["meter_dropout"].median_delay_s == 3.0
    total = s["all"]
    assert (total.faults, total.detected, total.false_episodes) == (5, 4, 3)
    assert total.precision == pytest.approx(4 / 7) and total.recall == 0.8
    d = total.as_dict()
    assert d["max_delay_s"] == 10.0 and d["detected_before_end"] == 4


def test_scores_without_detections_or_faults():
    s = score([F("H1", "spike", "power_w", 1, 2)], [], 0, S)["spike"]
    assert s.precision is None and s.recall == 0.0 and s.f1 == 0.0 and s.median_delay_s is None
    s = score([], A("H1", "power_w", 3), 0, S)["all"]
    assert s.faults == 0 and s.recall is None and s.precision == 0.0 and s.f1 == 0.0


def test_threshold_and_param_parsing():
    assert eval_cli.parse_thresholds("", ["a"]) == {"a": fe.DEFAULT_THRESHOLD}
    assert eval_cli.parse_thresholds("0.5,b=0.7", ["a", "b"]) == {"a": 0.5, "b": 0.7}
    assert eval_cli.parse_params(["zscore.window=60"]) == {"zscore": {"window": 60}}
    with pytest.raises(ValueError):
        eval_cli.parse_params(["window=60"])


# ------------------------------------------------------------------ gap detector
def test_gap_detector_seq_jump_silence_and_restart():
    g = GapDetector(interval_ms=1000, silence_intervals=3)
    assert g.observe("H1", 10, 0) is None  # first sight: no history, no gap
    assert g.observe("H1", 11, 1000) is None
    assert g.check(4000) == []  # exactly 3 intervals: not yet
    (gap,) = g.check(4001)
    assert (gap.kind, gap.last_ts_ms, gap.detected_ms) == ("silence", 1000, 4001)
    assert g.check(9000) == [] and g.silent() == ["H1"]
    gap = g.observe("H1", 20, 10_000)
    assert (gap.kind, gap.missing, gap.last_ts_ms) == ("seq_jump", 8, 1000) and g.silent() == []
    assert g.observe("H1", 19, 9_000) is None  # late reading: ignored
    assert g.observe("H1", 0, 11_000) is None  # the source restarted its counter
    assert g.observe("H1", 1, 12_000) is None
    assert g.observe("H1", 3, 14_000).missing == 1
    with pytest.raises(ValueError):
        GapDetector(0)


def test_gap_detector_on_simulated_dropout():
    plan = FaultPlan()
    rec = plan.inject("H000002", "meter_dropout", 60_000, 30_000)
    sim = CitySimulator(4, ("north",), 1, 0, step_ms=1000, faults=plan)
    g = GapDetector(1000)
    flagged = []
    for _ in range(200):
        rows = sim.tick()
        for r in rows:
            gap = g.observe(r["home_id"], r["seq"], r["ts"])
            if gap:
                flagged.append(gap)
        flagged += g.check(sim.now_ms - 1000)
    assert [(x.home_id, x.kind) for x in flagged] == [("H000002", "silence"), ("H000002", "seq_jump")]
    silence, jump = flagged
    assert rec.start_ms < silence.detected_ms <= rec.start_ms + 4000
    assert jump.missing == 30 and jump.detected_ms == rec.end_ms


# ------------------------------------------------------------------ stuck detector
def test_stuck_detector_flags_a_frozen_noisy_sensor_fast():
    rng = random.Random(1)
    d = StuckDetector()
    for _ in range(300):
        x = 230 + rng.gauss(0, 0.3)
        assert d.score_one(x) == 0.0
        d.learn_one(x)
    scores = []
    for _ in range(10):
        scores.append(d.score_one(229.9))
        assert d.score_one(229.9) == scores[-1]  # scoring does not learn
        d.learn_one(229.9)
    assert scores[:2] == [0.0, 0.0] and all(s >= 0.9999 for s in scores[2:])
    assert d.evidence().count == 310 and abs(d.evidence().mean - 230) < 0.2
    # thawed: a fresh value scores nothing
    assert d.score_one(230.3) == 0.0


def test_stuck_detector_leaves_flat_and_steppy_sensors_alone():
    flat = StuckDetector()
    for _ in range(5000):
        assert flat.score_one(0.0) == 0.0
        flat.learn_one(0.0)
    steps = StuckDetector()
    worst = 0.0
    for i in range(5000):
        x = float(i // 20)  # changes every 20 readings, normally
        worst = max(worst, steps.score_one(x))
        steps.learn_one(x)
    assert worst < 0.9999
    for _ in range(400):  # but ten times its usual run is suspicious
        steps.learn_one(1e6)
    assert steps.score_one(1e6) >= 0.9999


def test_stuck_is_registered():
    import processors.detectors.stuck  # noqa: F401
    from processors.detectors import make

    d = make("stuck", min_run=4)
    assert d.name == "stuck" and d.min_run == 4 and math.isfinite(d.score_one(1.0))


# ------------------------------------------------------------------ end to end (small)
def test_record_and_evaluate_small_city():
    rec = fe.record(8, 3, seed=4, step_ms=30_000, kinds=("stuck_sensor", "meter_dropout", "spike"),
                    faults_per_kind=3, progress=False)
    assert len(rec.faults) == 9 and rec.emitted.sum() < rec.emitted.size
    assert all(f.start_ms >= rec.scored_from_ms for f in rec.faults)
    report = fe.evaluate(rec, ["stuck", "gaps"], progress=False)
    rows = {(r["kind"], r["detector"]): r for r in report["results"]}
    assert rows[("stuck_sensor", "stuck")]["recall"] == 1.0
    assert rows[("stuck_sensor", "stuck")]["precision"] == 1.0
    assert rows[("meter_dropout", "gaps")]["f1"] == 1.0
    assert rows[("meter_dropout", "gaps")]["median_delay_s"] <= 4 * 30
    assert "stuck" in fe.format_table(report)


def test_cli_json(capsys):
    from ecoretrofit.config import Settings

    parser = argparse.ArgumentParser()
    eval_cli.faults_arguments(parser)
    args = parser.parse_args(
        ["--homes", "5", "--hours", "2", "--step-s", "30", "--detectors", "zscore,stuck,gaps", "--faults-per-kind",
         "1", "--json", "--no-progress", "--jobs", "2", "--threshold", "0.9999,stuck=0.999"]
    )
    settings = Settings(clickhouse_password="x", s3_access_key="x", s3_secret_key="x")
    assert eval_cli.run_faults(args, settings) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["homes"] == 5 and out["thresholds"] == {"zscore": 0.9999, "stuck": 0.999}
    assert {r["detector"] for r in out["results"]} == {"zscore", "stuck", "gaps"}
    assert len(out["faults"]) >= 6
