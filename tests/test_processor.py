"""The Faust processor as a process: checkpoints survive a restart, and Prometheus
sees an alert fire on injected faults and resolve afterwards."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np

from bench.pipeline import scrape
from conftest import spawn, stop
from ecoretrofit.admin import ensure_topics
from producers.producer import TelemetryProducer
from producers.simulator import CitySimulator
from helpers import free_port, unique, wait_for

import schemas
from confluent_kafka import Consumer
from ecoretrofit.serde import decoder_for




def _produce_ticks(settings, region: str, homes: int, ticks: int, start_ms: int, spike_power: float = 0.0) -> int:
    """``ticks`` of readings for homes whose ids are unique to this test (so no other
    test's model is involved); the last tick gets ``spike_power`` watts added."""
    sim = CitySimulator(homes, [region], seed=11, start_ms=start_ms)
    producer = TelemetryProducer(settings)
    ids = np.array([f"{region}-{i}" for i in range(homes)], dtype=object)
    for t in range(ticks):
        cols = sim.tick_columns(start_ms + t * 1000)
        cols["home_id"] = ids
        if t == ticks - 1 and spike_power:
            cols["power_w"] = cols["power_w"] + spike_power
        producer.send_columns(cols)
    assert producer.flush(15) == 0
    producer.close()
    return producer.stats.acked


def test_restarted_worker_resumes_with_its_checkpointed_models(stack_settings):
    region = unique("resume")
    s = stack_settings.replace(
        topic_telemetry=f"eco.test.{region}", topic_anomalies=f"eco.test.{region}.anomalies",
        processor_app_id=f"eco-test-{region}", checkpoint_interval_s=1.0, metrics_port=free_port() - 1,
    )
    ensure_topics(s, {s.topic_telemetry: 8, s.topic_anomalies: 4})
    start = int(time.time() * 1000) - 200_000
    worker = spawn(s, "process", log_name=f"worker-{region}-1")
    try:
        n = _produce_ticks(s, region, homes=5, ticks=100, start_ms=start)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_readings_processed_total") >= n, 90, what="first worker")
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_checkpoints_total") >= 1, 30, what="a checkpoint")
        time.sleep(2.5 * s.checkpoint_interval_s)  # the idle timer writes whatever the last batch left
    finally:
        assert stop(worker) == 0, "the worker must stop cleanly on SIGTERM"
    worker = spawn(s, "process", log_name=f"worker-{region}-2")
    try:
        # one more normal tick, then a spike: a fresh model would still be warming up
        # (score 0) and stay silent; a restored one knows 100 readings of each home.
        _produce_ticks(s, region, homes=5, ticks=2, start_ms=start + 100_000, spike_power=8000.0)
        c = Consumer({**s.kafka_client_config(), "group.id": unique("g"), "auto.offset.reset": "earliest"})
        c.subscribe([s.topic_anomalies])
        dec = decoder_for(s, schemas.ANOMALY_EVENT)
        events = []

        def spikes():
            msg = c.poll(1.0)
            if msg is not None and not msg.error():
                events.append(dec.decode(msg.value()))
            return [e for e in events if e["metric"] == "power_w"]

        found = wait_for(spikes, 90, interval=0, what="spike events from the restarted worker")
        c.close()
    finally:
        stop(worker)
    assert found[0]["window_count"] > 100, "the model was not restored from its checkpoint"


def _alerts(settings) -> list[dict]:
    url = f"http://127.0.0.1:{settings.port('prometheus')}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["alerts"]


def test_prometheus_alert_fires_on_a_spike_cluster_and_resolves(stack_settings, processor):
    s = stack_settings
    region = unique("alert")
    start = int(time.time() * 1000) - 60_000
    _produce_ticks(s, region, homes=25, ticks=61, start_ms=start, spike_power=8000.0)

    def firing():
        return [a for a in _alerts(s) if a["labels"].get("alertname") == "EcoEnergySpikeCluster"
                and a["labels"].get("region") == region and a["state"] == "firing"]

    alert = wait_for(firing, 90, interval=1, what="EcoEnergySpikeCluster firing")[0]
    assert alert["labels"]["severity"] == "critical"
    assert region in alert["annotations"]["summary"]
    # resolves once the minute-long anomaly window has passed
    wait_for(lambda: not [a for a in _alerts(s) if a["labels"].get("region") == region], 150, interval=2,
             what="the alert to resolve")
