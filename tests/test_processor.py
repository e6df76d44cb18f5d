"""The Faust processor as a process against the real local stack: checkpoints survive
a restart (and a SIGKILL) without false dropouts or stuck alerts, recovery replays a
bounded changelog, hostile messages go to the dead letters without stopping it, a
pickle in the changelog runs nothing, silent homes are alerted while silent, and
Prometheus sees an alert fire on injected faults and resolve afterwards."""

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
from helpers import free_port, fresh_region, home_ids, own_worker_settings, unique, wait_for

import schemas
from confluent_kafka import Consumer
from ecoretrofit.serde import decoder_for




def _produce_ticks(settings, region: str, homes, ticks: int, start_ms: int, spike_power: float = 0.0,
                   first_seq: int = 0) -> int:
    """``ticks`` of readings (1 s apart) for ``homes`` (ids unique to the test, so no
    other test's model is involved; or a count: that many new ids); the last tick
    gets ``spike_power`` watts added."""
    ids = home_ids(homes) if isinstance(homes, int) else list(homes)
    sim = CitySimulator(len(ids), [region], seed=11, start_ms=start_ms)
    producer = TelemetryProducer(settings)
    try:
        for t in range(ticks):
            cols = sim.tick_columns(start_ms + t * 1000)
            cols["home_id"] = np.array(ids, dtype=object)
            cols["seq"] = cols["seq"] + first_seq
            if t == ticks - 1 and spike_power:
                cols["power_w"] = cols["power_w"] + spike_power
            producer.send_columns(cols)
        assert producer.flush(15) == 0
        return producer.stats.acked
    finally:
        producer.close()


def _consume(settings, topic: str, group: str | None = None) -> "Consumer":
    c = Consumer({**settings.kafka_client_config(), "group.id": group or unique("g"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    return c


def _collect(consumer, into: list, decoder=None, wait: float = 1.0) -> list:
    """Append what ``consumer`` has now (decoded with ``decoder``, else the messages)."""
    for msg in consumer.consume(500, wait):
        if msg.error() is None:
            into.append(decoder.decode(msg.value()) if decoder else msg)
    return into


def _homes_sharing_a_partition(settings, n: int) -> list[str]:
    """``n`` fresh home ids in one telemetry (and model changelog) partition: their
    checkpoints then travel in one producer batch."""
    by_partition: dict[int, list[str]] = {}
    for home in home_ids(50 * n):
        same = by_partition.setdefault(_telemetry_partition(settings, home), [])
        same.append(home)
        if len(same) == n:
            return same
    raise AssertionError("no partition got n homes")


def test_restarted_worker_resumes_with_its_checkpointed_models(stack_settings):
    """Every home resumes with its newest checkpoint, also homes whose checkpoints
    share a producer batch in the changelog: Tansu reports a partition's end as the
    start of its last batch + 1, and Faust's recovery stopped there, so every home but
    the first in the last batch restarted from an older checkpoint or from nothing."""
    region = unique("resume")
    s = stack_settings.replace(
        topic_telemetry=f"eco.test.{region}", topic_anomalies=f"eco.test.{region}.anomalies",
        processor_app_id=f"eco-test-{region}", checkpoint_interval_s=1.0, metrics_port=free_port() - 1,
    )
    ensure_topics(s, {s.topic_telemetry: 8, s.topic_anomalies: 4})
    start = int(time.time() * 1000) - 200_000
    worker = spawn(s, "process", log_name=f"worker-{region}-1")
    try:
        homes = _homes_sharing_a_partition(s, 3) + home_ids(2)
        n = _produce_ticks(s, "north", homes, ticks=100, start_ms=start)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_readings_processed_total") >= n, 90, what="first worker")
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_checkpoints_total") >= 1, 30, what="a checkpoint")
        time.sleep(2.5 * s.checkpoint_interval_s)  # the idle timer writes whatever the last batch left
    finally:
        assert stop(worker) == 0, "the worker must stop cleanly on SIGTERM"
    worker = spawn(s, "process", log_name=f"worker-{region}-2")
    try:
        # one more normal tick, then a spike: a fresh model would still be warming up
        # (score 0) and stay silent; a restored one knows 100 readings of each home.
        _produce_ticks(s, "north", homes, ticks=2, start_ms=start + 100_000, spike_power=8000.0, first_seq=100)
        c = Consumer({**s.kafka_client_config(), "group.id": unique("g"), "auto.offset.reset": "earliest"})
        c.subscribe([s.topic_anomalies])
        dec = decoder_for(s, schemas.ANOMALY_EVENT)
        events = []

        def spikes():
            msg = c.poll(1.0)
            if msg is not None and not msg.error():
                events.append(dec.decode(msg.value()))
            return {e["home_id"]: e["window_count"] for e in events
                    if e["metric"] == "power_w" and e["ts"] >= start + 100_000}

        try:
            wait_for(lambda: set(spikes()) == set(homes), 60, interval=0, what="a spike event of every home")
        except AssertionError:
            pass  # a home restarted from scratch is still warming up: reported below
        found = spikes()
        c.close()
    finally:
        stop(worker)
    # a restored model knows the home's 100 readings before the restart; a fresh one
    # is warming up (no event) and an older checkpoint knows fewer
    assert {h: found.get(h, 0) > 100 for h in homes} == {h: True for h in homes}, \
        f"homes not restored from their newest checkpoint (spike window counts): {found}"


def _alerts(settings) -> list[dict]:
    url = f"http://127.0.0.1:{settings.port('prometheus')}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["alerts"]


def test_prometheus_alert_fires_on_a_spike_cluster_and_resolves(stack_settings, processor):
    s = stack_settings
    region = fresh_region()  # declared for the test stack; no other test uses it
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


def test_a_silent_home_is_alerted_while_silent_and_resolved_when_it_speaks(stack_settings, processor):
    s = stack_settings
    homes = home_ids(3)
    anomalies = _consume(s, s.topic_anomalies)
    alerts = _consume(s, s.topic_alerts)
    dec_anomaly = decoder_for(s, schemas.ANOMALY_EVENT)
    dec_alert = decoder_for(s, schemas.ALERT_EVENT)
    try:
        start = int(time.time() * 1000) - 20_000
        _produce_ticks(s, "north", homes, ticks=21, start_ms=start)  # the last tick is now
        got_anomalies, got_alerts = [], []

        def silence_reported():
            _collect(anomalies, got_anomalies, dec_anomaly, 0.5)
            _collect(alerts, got_alerts, dec_alert, 0.5)
            silent = {e["home_id"] for e in got_anomalies if e["home_id"] in homes
                      and e["metric"] == "seq" and e["event_id"].endswith("/silence")}
            firing = {a["home_id"] for a in got_alerts if a["home_id"] in homes
                      and a["metric"] == "seq" and a["state"] == "firing"}
            return silent == firing == set(homes)

        # the homes are still silent: nothing more is produced until both arrived
        wait_for(silence_reported, 60, interval=0, what="silence anomalies and firing alerts for every home")
        assert not [a for a in got_alerts if a["home_id"] in homes and a["state"] == "resolved"]
        # one home speaks again: its alert resolves, the others stay firing
        _produce_ticks(s, "north", homes[:1], ticks=1, start_ms=int(time.time() * 1000), first_seq=21 + 30)

        def resolved():
            _collect(alerts, got_alerts, dec_alert, 0.5)
            return [a for a in got_alerts if a["home_id"] in homes and a["state"] == "resolved"]

        done = wait_for(resolved, 60, interval=0, what="the resolved alert")
        time.sleep(3)
        _collect(alerts, got_alerts, dec_alert, 0.5)
        assert {a["home_id"] for a in got_alerts if a["home_id"] in homes and a["state"] == "resolved"} == {homes[0]}
        assert done[0]["metric"] == "seq"
    finally:
        anomalies.close()
        alerts.close()


def _dead_letters(settings, expected: int, timeout: float = 60) -> list:
    c = _consume(settings, settings.topic_deadletter)
    got = []
    try:
        wait_for(lambda: len(_collect(c, got)) >= expected, timeout, interval=0, what=f"{expected} dead letters")
        time.sleep(2)
        _collect(c, got)
    finally:
        c.close()
    return got


def test_hostile_messages_go_to_dead_letters_and_nothing_crashes_or_stalls(stack_settings):
    """Oversized random bytes and oversized valid-looking readings, implausible values,
    empty values and tombstones: every one in the dead letters with its reason (raw
    payload cut to the bound), every good reading scored, the worker still running."""
    import fastavro
    import io
    import random

    from confluent_kafka import Producer
    from ecoretrofit.serde import encoder_for
    from schemas import plausibility

    name = unique("hostile")
    s = own_worker_settings(stack_settings, name)
    enc = encoder_for(s, s.topic_telemetry, schemas.TELEMETRY_READING)
    now = int(time.time() * 1000)
    home = home_ids(1)[0]
    good = CitySimulator(1, ["north"], seed=5, start_ms=now - 10_000).tick()[0]
    good["home_id"] = home

    def reading(**changes):
        return enc.encode({**good, **changes})

    rng = random.Random(9)
    bad = {
        "random 5 MB": (rng.randbytes(5_000_000), "oversized"),
        "valid-looking 6 MB reading": (reading(home_id="H" + "1" * 6_000_000), "oversized"),
        "random 10 MB": (rng.randbytes(10_000_000), "oversized"),
        "NaN power": (reading(power_w=float("nan")), "implausible"),
        "+inf voltage": (reading(voltage_v=float("inf")), "implausible"),
        "negative voltage": (reading(voltage_v=-5.0), "implausible"),
        "1.7e308 W": (reading(power_w=1.7e308), "implausible"),
        "year 2100": (reading(ts=4_102_444_800_000), "implausible"),
        "year 1900": (reading(ts=-2_208_988_800_000), "implausible"),
        "year 1970": (reading(ts=0), "implausible"),
        "empty home id": (reading(home_id=""), "implausible"),
        "10 kB home id": (reading(home_id="H" + "9" * 10_000), "oversized"),
        "unknown region": (reading(region="mars"), "implausible"),
        "seq beyond 2**53": (reading(seq=2**60), "implausible"),
        "empty value": (b"", "truncated"),
        "tombstone": (None, "truncated"),
        "random small": (rng.randbytes(300), None),
    }
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "message.max.bytes": 12_000_000})
    key = home.encode()
    # good readings around the bad ones, on the home's partition
    goods = []
    worker = spawn(s, "process", log_name=f"worker-{name}")
    try:
        for i, (label, (raw, _)) in enumerate(bad.items()):
            g = dict(good, ts=now - 9_000 + i * 100, seq=good["seq"] + 1 + i)
            goods.append(g)
            p.produce(s.topic_telemetry, enc.encode(g), key=key)
            p.produce(s.topic_telemetry, raw, key=key, headers={"label": label.encode()})
            p.poll(0)
        assert p.flush(60) == 0
        letters = _dead_letters(s, len(bad), timeout=90)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_readings_processed_total") >= len(goods), 60,
                 what="every good reading scored")
        time.sleep(2)
        assert worker.running(), "the worker died"
        assert scrape(s.metrics_port + 1, "eco_readings_processed_total") == len(goods)
    finally:
        stop(worker)
    assert len(letters) == len(bad), [dict(m.headers()).get("reason") for m in letters]
    by_offset = sorted(letters, key=lambda m: int(dict(m.headers())["source_offset"]))
    for (label, (raw, reason)), msg in zip(bad.items(), by_offset):
        h = dict(msg.headers())
        if reason:
            assert h["reason"].decode() == reason, (label, h)
        assert h["error"], label
        assert len(msg.value() or b"") <= plausibility.DEAD_LETTER_MAX_BYTES, label
        if raw is not None and len(raw) > plausibility.DEAD_LETTER_MAX_BYTES:
            assert h["truncated"] == b"true" and int(h["original_bytes"]) == len(raw), label
            assert b"truncated" in h["error"]
            assert msg.value() == raw[: plausibility.DEAD_LETTER_MAX_BYTES]
        elif raw:
            assert msg.value() == raw, label
    reasons = {lbl: dict(m.headers())["error"].decode() for (lbl, _), m in zip(bad.items(), by_offset)}
    assert "power_w: nan is not a finite number" in reasons["NaN power"]
    assert "before now" in reasons["year 1900"] and "before now" in reasons["year 1970"]
    assert "after now" in reasons["year 2100"]


def test_a_pickle_in_the_model_changelog_runs_no_code_and_the_home_starts_afresh(stack_settings, tmp_path):
    import os
    import pickle

    from confluent_kafka import Producer

    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    name = unique("pickle")
    s = own_worker_settings(stack_settings, name)
    home = home_ids(1)[0]
    changelog = f"{s.processor_app_id}-home-models-changelog"
    ensure_topics(s, {changelog: 8})
    # the changelog partition Faust reads the home from: the same murmur2 as telemetry
    from aiokafka.partitioner import murmur2

    partition = (murmur2(home.encode()) & 0x7FFFFFFF) % 8
    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    p.produce(changelog, pickle.dumps(Boom()), key=home.encode(), partition=partition)
    assert p.flush(10) == 0
    worker = spawn(s, "process", log_name=f"worker-{name}")
    try:
        _produce_ticks(s, "north", [home], ticks=40, start_ms=int(time.time() * 1000) - 40_000)
        # the worker reads the home's checkpoint when it restores its partitions (or
        # when the home's first reading arrives), refuses it and says why
        log = wait_for(lambda: (lambda text: text if f"home {home} starts afresh" in text else None)(
            worker.log_path.read_text(errors="replace")), 90, what="the refused checkpoint in the log")
        time.sleep(2)
        assert worker.running()
    finally:
        stop(worker)
    assert not marker.exists(), "a pickle from the changelog was executed"
    assert "pickle" in log.split(f"home {home} starts afresh", 1)[1].splitlines()[0]


def test_a_killed_worker_restarts_without_false_dropouts_and_resolves_its_alerts(stack_settings):
    """SIGKILL after offsets were committed but before the next checkpoint: the
    restarted worker must neither see a seq jump that is not there nor leave the
    alert its predecessor opened firing for ever."""
    name = unique("kill")
    s = own_worker_settings(stack_settings, name, checkpoint_interval_s=4.0, alert_hold_s=5.0)
    homes = home_ids(5)
    start = int(time.time() * 1000) - 200_000
    worker = spawn(s, "process", log_name=f"worker-{name}-1")
    try:
        # a checkpoint, then a spike (opens an alert) and more readings it does not cover
        n = _produce_ticks(s, "north", homes, ticks=120, start_ms=start)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_checkpoints_total") >= 1, 60, what="a checkpoint")
        n += _produce_ticks(s, "north", homes, ticks=20, start_ms=start + 120_000, spike_power=8000.0,
                            first_seq=120)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_readings_processed_total") >= n, 60, what="the readings")
        time.sleep(1.5)  # offsets commit every second
    finally:
        stop(worker, sig=9)
    alerts = _consume(s, s.topic_alerts)
    anomalies = _consume(s, s.topic_anomalies)
    dec_alert, dec_anomaly = decoder_for(s, schemas.ALERT_EVENT), decoder_for(s, schemas.ANOMALY_EVENT)
    worker = spawn(s, "process", log_name=f"worker-{name}-2")
    got_alerts, got_anomalies = [], []
    try:
        n += _produce_ticks(s, "north", homes, ticks=10, start_ms=start + 140_000, first_seq=140)

        def spike_alerts_resolved():
            _collect(alerts, got_alerts, dec_alert, 0.5)
            fired = {a["alert_id"] for a in got_alerts if a["metric"] == "power_w" and a["state"] == "firing"}
            done = {a["alert_id"] for a in got_alerts if a["metric"] == "power_w" and a["state"] == "resolved"}
            return fired and fired <= done

        try:
            wait_for(spike_alerts_resolved, 90, interval=0, what="every spike alert resolved")
            stuck = None
        except AssertionError:
            stuck = [(a["alert_id"], a["state"]) for a in got_alerts]
        _collect(anomalies, got_anomalies, dec_anomaly, 2.0)
        assert worker.running()
    finally:
        stop(worker)
        alerts.close()
        anomalies.close()
    dropouts = [(e["home_id"], e["value"]) for e in got_anomalies if e["detector"] == "gap"
                and e["event_id"].endswith("/gap")]
    assert dropouts == [], f"false meter dropouts after the restart: {dropouts}"
    # Each checkpoint sits in its home's telemetry partition: Faust's store drops the
    # keys of partitions it is not assigned, so a checkpoint elsewhere vanished when the
    # restarted worker was first given part of the partitions (its dead predecessor was
    # still in the group), and that home re-learned from nothing: it missed the spike
    # it re-read, and the alert its predecessor opened was never resolved.
    placed = _changelog_placement(s)
    assert set(placed) == set(homes), placed
    assert all(parts == {_telemetry_partition(s, h)} for h, parts in placed.items()), placed
    # Three causes of a stuck alert, each fixed: checkpoints in another partition than
    # their home's; offsets acknowledged before the checkpoint's writes and the events
    # were on the broker; and recovery stopping at Tansu's ListOffsets end (the start
    # of the last batch + 1), which left every home but the first of the last
    # checkpoint batch of a partition without its newest checkpoint: the home
    # re-learned from nothing, so it neither re-fired the spike it re-read nor
    # resolved the alert its predecessor had opened (6 of 15 runs before).
    assert stuck is None, f"alerts left firing; alerts seen: {stuck}"


def _telemetry_partition(settings, home_id: str) -> int:
    from aiokafka.partitioner import murmur2

    return (murmur2(home_id.encode()) & 0x7FFFFFFF) % settings.telemetry_partitions


def _changelog_placement(settings) -> dict[str, set[int]]:
    """home id -> the model changelog partitions its checkpoints are in."""
    from confluent_kafka import TopicPartition

    changelog = f"{settings.processor_app_id}-home-models-changelog"
    c = Consumer({**settings.kafka_client_config(), "group.id": unique("placement"), "enable.auto.commit": False})
    c.assign([TopicPartition(changelog, p, 0) for p in range(settings.telemetry_partitions)])
    placed: dict[str, set[int]] = {}
    idle = 0
    try:
        while idle < 3:
            msgs = c.consume(1000, 0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error() is None:
                    placed.setdefault(m.key().decode(), set()).add(m.partition())
    finally:
        c.close()
    return placed


def test_recovery_replays_a_bounded_changelog_whatever_the_uptime(stack_settings):
    """Tansu never compacts the changelog: the worker snapshots each partition once it
    has grown past a bound, and recovery starts at the snapshot, not at offset 0."""
    from confluent_kafka import TopicPartition

    name = unique("bounded")
    s = own_worker_settings(stack_settings, name, checkpoint_interval_s=0.5)
    homes = home_ids(40)
    start = int(time.time() * 1000) - 3_000_000
    worker = spawn(s, "process", log_name=f"worker-{name}-1")
    changelog = f"{s.processor_app_id}-home-models-changelog"
    try:
        # many checkpoints of the same 40 homes: a long uptime in miniature
        for chunk in range(50):
            n = _produce_ticks(s, "north", homes, ticks=20, start_ms=start + chunk * 20_000, first_seq=chunk * 20)
            time.sleep(0.6)
        wait_for(lambda: scrape(s.metrics_port + 1, "eco_readings_processed_total") >= 50 * n, 90,
                 what="every reading")
        time.sleep(2)
    finally:
        stop(worker)
    c = Consumer({**s.kafka_client_config(), "group.id": f"{s.processor_app_id}-snapshots"})
    try:
        starts = c.committed([TopicPartition(changelog, p) for p in range(8)], timeout=10)
        replay = 0
        total = 0
        for tp in starts:
            total += _count(s, changelog, tp.partition, 0)
            replay += _count(s, changelog, tp.partition, max(tp.offset, 0))
    finally:
        c.close()
    from processors.snapshots import SnapshotPolicy

    policy = SnapshotPolicy()
    assert total > 20 * len(homes), f"the changelog did not grow ({total} records)"
    # the policy's bound per partition: the snapshot, then up to factor x homes or the
    # minimum written since; whatever the uptime
    bound = (1 + policy.factor) * len(homes) + 8 * policy.minimum
    assert replay <= bound and replay < total / 2, (replay, total, bound)


def _count(settings, topic: str, partition: int, offset: int) -> int:
    from confluent_kafka import TopicPartition

    c = Consumer({**settings.kafka_client_config(), "group.id": unique("count"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, offset)])
    n, idle = 0, 0
    try:
        while idle < 3:
            msgs = c.consume(1000, 0.5)
            n += sum(1 for m in msgs if m.error() is None)
            idle = 0 if msgs else idle + 1
    finally:
        c.close()
    return n
