"""A second worker joining while the first scores a backlog: every reading is scored
exactly once across the rebalance (the leaving owner checkpoints and commits what it
scored before it lets go), and no anomaly event is sent twice."""

from __future__ import annotations

import time

import schemas
from bench.pipeline import scrape
from conftest import spawn, stop
from ecoretrofit.serde import decoder_for
from helpers import free_port, home_ids, own_worker_settings, unique, wait_for
from test_processor import _collect, _consume, _produce_ticks

PROCESSED = "eco_readings_processed_total"
DEAD_LETTERS = "eco_dead_letters_total"


def test_a_worker_joining_mid_backlog_scores_nothing_twice(stack_settings):
    name = unique("rebalance")
    s1 = own_worker_settings(stack_settings, name, checkpoint_interval_s=2.0)
    s2 = s1.replace(metrics_port=free_port() - 1)
    start = int(time.time() * 1000) - 1_600_000
    n = _produce_ticks(s1, "north", home_ids(200), ticks=1500, start_ms=start, spike_power=9000.0)
    first = spawn(s1, "process", log_name=f"worker-{name}-1")
    second = None
    try:
        wait_for(lambda: scrape(s1.metrics_port + 1, PROCESSED) >= n // 20, 90, what="the first worker scoring")
        second = spawn(s2, "process", log_name=f"worker-{name}-2")

        def handled():  # scored, or refused by the plausibility screen (the simulator makes some)
            return sum(scrape(s.metrics_port + 1, PROCESSED) + scrape(s.metrics_port + 1, DEAD_LETTERS)
                       for s in (s1, s2))

        try:
            wait_for(lambda: handled() >= n, 300, what=f"{n} readings handled")
        except AssertionError as exc:  # say how many: a shortfall is readings skipped, not slowness
            raise AssertionError(f"{exc}: {handled():.0f} handled") from None
        time.sleep(3)  # anything handled twice would show up by now
        total = handled()
        assert scrape(s2.metrics_port + 1, PROCESSED) > 0, "the second worker got no partitions"
        assert first.running() and second.running()
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert total == n, f"{total:.0f} readings scored or dead-lettered for {n} produced"
    anomalies = _consume(s1, s1.topic_anomalies)
    events = []
    try:
        for _ in range(5):
            _collect(anomalies, events, decoder_for(s1, schemas.ANOMALY_EVENT), 1.0)
    finally:
        anomalies.close()
    ids = [e["event_id"] for e in events]
    assert any(e["metric"] == "power_w" for e in events), "the spike on the last tick was not reported"
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} anomaly events sent twice"
