"""``eval faults --through-kafka``: the fault figures measured through the real pipeline
(simulator -> Kafka -> one Faust worker -> anomalies topic -> scoring)."""

from __future__ import annotations

import time

from evaluation.faults import format_table
from evaluation.faults_kafka import evaluate_through_kafka, format_counts


def test_faults_through_kafka(stack_settings):
    t0 = time.monotonic()
    report = evaluate_through_kafka(
        stack_settings, homes=30, hours=0.5, step_s=10.0, seed=42,
        kinds=("spike", "stuck_sensor", "meter_dropout"), faults_per_kind=2, grace_s=600, progress=False,
    )
    took = time.monotonic() - t0
    print(format_counts(report))
    print(format_table({**report, "false_episodes_per_series_day": {}}))
    # every reading went through the worker, and it emitted something
    assert report["produced"] > 0
    assert report["processed"] == report["produced"]
    assert report["anomalies"] > 0
    rows = {(r["kind"], r["detector"]): r for r in report["results"]}
    for kind in ("spike", "stuck_sensor", "meter_dropout"):
        row = rows[(kind, "processor")]
        assert row["faults"] == 2, row
        assert row["recall"] >= 0.5, row
    # each fault kind is found by the detector meant for it
    assert rows[("spike", stack_settings.detector)]["detected"] >= 1
    assert rows[("stuck_sensor", "stuck")]["detected"] >= 1
    assert rows[("meter_dropout", "gap")]["detected"] >= 1
    assert took < 120, f"took {took:.0f} s"
