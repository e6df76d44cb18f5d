"""``ecoretrofit eval faults --through-kafka``: the fault figures of the deployed pipeline.

The same seeded scenario mix as ``eval faults`` (``FaultPlan.random`` on a
``CitySimulator``), but produced to a fresh telemetry topic and scored by one real
Faust worker (``ecoretrofit process``); its anomaly events are read back from its own
anomalies topic and matched against the ground truth with ``evaluation.faults.score``.

The worker's ``HomeModel`` holds alarms on one series back for a 60 s cooldown and
keeps quiet below each metric's noise floor, so these figures differ from the
in-process ones: they are what an operator of the pipeline sees. Meter dropouts are
found by the same ``GapDetector`` as in process, inside the worker: while the home is
silent (its partition's event-time clock passed three reading intervals; the worker
is told the simulator's step) and again when it speaks (a seq jump). Event time is
historic (the run ends now), and ``step_s`` must stay well below the processor's
15-minute staleness reset. Alarms stamped after the run's end (every home falls
silent when the simulator stops) are not about the run and are dropped.

Rows: one per detector the worker ran (``settings.detector``, ``stuck`` on values,
``gap`` on dropouts) and ``processor`` (all its alarms against all faults).
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Sequence

from producers.faults import KINDS

GAP_KINDS = ("meter_dropout",)


def evaluate_through_kafka(
    settings,
    homes: int = 40,
    hours: float = 1.0,
    step_s: float = 10.0,
    seed: int = 42,
    kinds: Sequence[str] | None = None,
    faults_per_kind: int = 2,
    grace_s: float = 600,
    progress: bool = True,
    settle_s: float = 5.0,
    timeout_s: float = 600.0,
) -> dict:
    """Simulate, produce, let one Faust worker score, read its anomalies, score them.

    Returns a report shaped like ``evaluation.faults.evaluate``'s (``results`` rows for
    ``format_table``) plus ``produced``, ``processed`` and ``anomalies`` counts."""
    from tqdm import tqdm

    import schemas
    from ecoretrofit.admin import ensure_topics, unique_topic
    from ecoretrofit.serde import decoder_for
    from evaluation.faults import score
    from infra.localstack.stack import LocalStack
    from processors.workers import start_workers
    from producers.faults import FaultPlan
    from producers.producer import TelemetryProducer
    from producers.simulator import CitySimulator

    kinds = tuple(kinds or KINDS)
    step_ms = int(round(step_s * 1000))
    if step_ms <= 0 or homes < 1 or hours <= 0:
        raise ValueError("homes, hours and step_s must be positive")
    if step_ms >= 15 * 60_000:
        raise ValueError("step_s must stay below the processor's 15-minute staleness reset")
    ticks = int(round(hours * 3_600_000 / step_ms))
    span = ticks * step_ms
    start_ms = (int(time.time() * 1000) - span) // step_ms * step_ms
    grace_ms = int(round(grace_s * 1000))
    warmup = min(span // 3, max(span // 10, 200 * step_ms))  # as eval faults: nothing injected or scored

    local = LocalStack(settings, log=lambda line: print(line, file=sys.stderr))
    started = local.up()
    workers = None
    try:
        topic = unique_topic("evalfaults")
        ensure_topics(settings, {topic: settings.telemetry_partitions})
        # the worker judges silence in reading intervals: tell it the simulator's step
        workers = start_workers(settings.replace(reading_interval_ms=step_ms), topic, 1, "earliest",
                                label="evalfaults-worker")
        anomalies_topic = workers.anomalies_topic

        sim = CitySimulator(homes, settings.regions, seed, start_ms, step_ms=step_ms)
        plan = FaultPlan.random(
            sim.home_ids, start_ms, span, seed, kinds=kinds, faults_per_kind=faults_per_kind,
            water_homes=sim.water_homes, step_ms=step_ms, warmup_ms=warmup,
        )
        sim.set_faults(plan)
        producer = TelemetryProducer(settings.replace(topic_telemetry=topic))
        t0 = time.perf_counter()
        try:
            ts = start_ms
            for _ in tqdm(range(ticks), desc="produce", unit="tick", file=sys.stderr, disable=not progress,
                          leave=False):
                producer.send_columns(sim.tick_columns(ts))
                ts += step_ms
            left = producer.flush(120.0)
            stats = producer.stats
        finally:
            producer.close()
        if left or stats.failed:
            raise RuntimeError(f"{left} readings unacknowledged, {stats.failed} failed: {stats.errors}")
        produced = stats.acked
        produce_s = time.perf_counter() - t0

        alarms, processed, wait_s = _collect(
            settings, workers, produced, settle_s, timeout_s, progress, decoder_for(settings, schemas.ANOMALY_EVENT),
        )
    finally:
        if workers is not None:
            workers.stop()
        if started:
            local.down(only=started)

    end_ms = start_ms + span
    alarms = {d: [a for a in found if a[2] < end_ms] for d, found in alarms.items()}
    faults = plan.ground_truth()
    value_faults = [f for f in faults if f.kind not in GAP_KINDS]
    gap_faults = [f for f in faults if f.kind in GAP_KINDS]
    since = start_ms + warmup
    results: list[dict] = []
    for det in sorted(alarms, key=lambda d: (d == "gap", d)):
        scope = gap_faults if det == "gap" else value_faults
        if scope:
            sc = score(scope, alarms[det], grace_ms, step_ms, since)
            results += [{"detector": det, "threshold": None, **s.as_dict()} for s in sc.values()]
    every = [a for found in alarms.values() for a in found]
    results += [
        {"detector": "processor", "threshold": None, **s.as_dict()}
        for s in score(faults, every, grace_ms, step_ms, since).values()
    ]
    order = {k: i for i, k in enumerate(KINDS + ("all",))}
    results.sort(key=lambda r: (order.get(r["kind"], 99), r["detector"] == "processor", r["detector"]))
    days = max(0, span - warmup) / 86_400_000
    return {
        "through_kafka": True,
        "homes": homes,
        "hours": hours,
        "ticks": ticks,
        "step_ms": step_ms,
        "seed": seed,
        "kinds": list(kinds),
        "start_ms": start_ms,
        "scored_from_ms": since,
        "grace_ms": grace_ms,
        "merge_gap_ms": step_ms,
        "detector": settings.detector,
        "telemetry_topic": topic,
        "anomalies_topic": anomalies_topic,
        "produced": produced,
        "processed": processed,
        "anomalies": len(every),
        "anomalies_by_detector": {d: len(a) for d, a in sorted(alarms.items())},
        "produce_seconds": produce_s,
        "wait_seconds": wait_s,
        "results": results,
        "false_episodes_per_home_day": {
            r["detector"]: (r["false_episodes"] / (homes * days) if days else 0.0)
            for r in results if r["kind"] == "all"
        },
        "faults": [f.as_dict() for f in faults],
    }


def _collect(settings, workers, expected, settle_s, timeout_s, progress, decoder):
    """Read the worker's anomalies until it has processed ``expected`` readings and
    nothing new arrived for ``settle_s``; alarms per detector, processed, seconds."""
    from confluent_kafka import Consumer
    from tqdm import tqdm

    c = Consumer({**settings.kafka_client_config(), "group.id": f"eval-faults-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([workers.anomalies_topic])
    alarms: dict[str, list[tuple[str, str, int]]] = {}
    processed = 0
    t0 = time.monotonic()
    last_new = t0
    bar = tqdm(total=expected, desc="process", unit=" readings", file=sys.stderr, disable=not progress, leave=False)
    try:
        while True:
            for msg in c.consume(500, 0.5):
                if msg.error():
                    continue
                ev = decoder.decode(msg.value())
                alarms.setdefault(ev["detector"], []).append((ev["home_id"], ev["metric"], int(ev["ts"])))
                last_new = time.monotonic()
            now_processed = int(workers.processed())
            bar.update(max(0, now_processed - processed))
            processed = max(processed, now_processed)
            now = time.monotonic()
            if processed >= expected and now - last_new >= settle_s:
                break
            if workers.died():
                raise RuntimeError("the Faust worker died; see evalfaults-worker-0.log in the stack's logs")
            if now - t0 > timeout_s:
                raise RuntimeError(f"the worker processed {processed} of {expected} readings in {timeout_s:.0f} s")
    finally:
        bar.close()
        c.close()
    return alarms, processed, time.monotonic() - t0


def format_counts(report: dict) -> str:
    by = ", ".join(f"{k} {v}" for k, v in report["anomalies_by_detector"].items()) or "none"
    return (
        f"through Kafka: produced {report['produced']:,}, processed {report['processed']:,}, "
        f"anomaly events {report['anomalies']:,} ({by}); produce {report['produce_seconds']:.1f} s, "
        f"drain {report['wait_seconds']:.1f} s"
    )
