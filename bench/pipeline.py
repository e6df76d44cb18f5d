"""Pipeline benchmarks, each beside a baseline measured in the same run.

- produce: simulator + Avro + produce vs a bare confluent-kafka loop over the same
  messages pre-serialised (the practical ceiling of the client and broker);
- process: one Faust worker vs a bare confluent-kafka consumer loop doing the same
  decoding and maths (the cost of the stream framework);
- live: N homes live with W workers, sampling the lag (produced - processed);
- latency: produce-to-anomaly-event and produce-to-row-in-ClickHouse at 1,000 homes.

Every benchmark uses its own topics so it never pollutes the warehouse, and runs
against whatever stack ECO_* points at.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from statistics import median

import schemas
from ecoretrofit.admin import ensure_topics, unique_topic
from ecoretrofit.config import Settings
from ecoretrofit.consumer_progress import end_offsets
from ecoretrofit.processes import free_port, scrape, start_cli
from ecoretrofit.serde import DecodeError, decoder_for, encoder_for
from processors.workers import start_workers

Report = dict


def _bare_produce(settings: Settings, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """The ceiling: pre-serialised messages through a bare confluent-kafka loop with
    the telemetry producer's client settings, serving the client as often (once per
    1,000 messages, a tick of the bench's city) and waiting as long on a full queue."""
    from confluent_kafka import Producer

    from producers.producer import QUEUE_FULL_WAIT_S, telemetry_producer_config

    p = Producer(telemetry_producer_config(settings))
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(payloads):
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(QUEUE_FULL_WAIT_S)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    elapsed = time.perf_counter() - t0
    if left:
        raise RuntimeError(f"baseline: {left} messages unacknowledged")
    return len(payloads) / elapsed


#: Pause before each run of the produce bench.
SETTLE_S = 1.0


def bench_produce(settings: Settings, readings: int = 200_000, homes: int = 1000, rounds: int = 10) -> Report:
    """The simulator + Avro + produce path against the bare loop over the same messages
    (same broker, topic, keys, bytes and client settings), in ``rounds`` interleaved
    rounds that alternate which goes first (an even number gives each order as often),
    so that load from other work falls on both alike; the ratio is the median of the
    rounds' ratios."""
    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator

    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    topic = unique_topic("bench.produce")
    ensure_topics(settings, {topic: settings.telemetry_partitions})
    bs = settings.replace(topic_telemetry=topic)
    encoder = encoder_for(bs, topic, schemas.TELEMETRY_READING)
    ticks = max(1, readings // homes)
    start = int(time.time() * 1000) - ticks * 1000
    sim = CitySimulator(homes, settings.regions, settings.seed, start)
    payloads = [(r["home_id"].encode(), encoder.encode(r)) for _ in range(ticks) for r in sim.tick()]

    def ours() -> float:
        sim = CitySimulator(homes, settings.regions, settings.seed, start)
        with TelemetryProducer(bs, encoder=encoder) as producer:
            t0 = time.perf_counter()
            stats = run_backfill(sim, producer, start, ticks, progress=False)
            elapsed = time.perf_counter() - t0
        if stats.failed or stats.acked != len(payloads):
            raise RuntimeError(f"{stats.acked} of {len(payloads)} readings acknowledged: {stats.errors}")
        return stats.acked / elapsed

    def bare() -> float:
        return _bare_produce(settings, topic, payloads)

    def bare_other_idempotence() -> float:
        # the same loop with ECO_KAFKA_IDEMPOTENT_PRODUCERS the other way round: on in
        # compose, off on the local broker by default (docs/delivery.md)
        return _bare_produce(settings.replace(kafka_idempotent_producers=not settings.kafka_idempotent_producers),
                             topic, payloads)

    baseline, ours_rates, other = [], [], []
    for k in range(rounds):
        for run in ((bare, ours, bare_other_idempotence) if k % 2 == 0 else (bare_other_idempotence, ours, bare)):
            # a pause for the broker and the object store between runs: back to back,
            # the second run of a round was often the slower, whichever side it was
            time.sleep(SETTLE_S)
            {bare: baseline, ours: ours_rates, bare_other_idempotence: other}[run].append(run())
    ratios = [o / b for o, b in zip(ours_rates, baseline)]
    return {
        "readings": len(payloads),
        "bytes_per_reading": sum(len(v) for _, v in payloads) / len(payloads),
        "rounds": rounds,
        "baseline_msgs_per_s": median(baseline),
        "ours_readings_per_s": median(ours_rates),
        "ratio": median(ratios),
        "baseline_per_round": baseline,
        "ours_per_round": ours_rates,
        "ratios_per_round": ratios,
        # the bare loop with idempotence the other way round, same rounds
        "other_idempotence": not settings.kafka_idempotent_producers,
        "other_idempotence_msgs_per_s": median(other),
        "baseline_vs_other_idempotence": median([b / x for b, x in zip(baseline, other)]),
        "load_average": os.getloadavg(),
    }


# --------------------------------------------------------------------- process
def _produce_dataset(settings: Settings, topic: str, homes: int, ticks: int) -> int:
    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator

    bs = settings.replace(topic_telemetry=topic)
    start = int(time.time() * 1000) - ticks * 1000
    with TelemetryProducer(bs) as producer:
        stats = run_backfill(CitySimulator(homes, settings.regions, settings.seed, start), producer, start, ticks,
                             progress=False)
    return stats.acked


def _bare_consume_and_score(settings: Settings, topic: str, expected: int) -> tuple[float, float]:
    """The same work per reading as the Faust worker, without Faust: the intake screen
    (size, Avro decode, plausibility) and HomeModel.update. (What the worker does per
    batch -- anomaly sends, checkpoints, silence checks -- is left to the worker.)
    Returns (readings per second, readings per CPU-second of this process)."""
    from confluent_kafka import Consumer

    from processors.detectors import make
    from processors.intake import screen
    from processors.scoring import HomeModel, ScoringConfig

    config = ScoringConfig.from_settings(settings)
    make(config.detector, **config.detector_params)  # imported before the clock starts, as the worker does
    decoder = decoder_for(settings, schemas.TELEMETRY_READING)
    models: dict[str, HomeModel] = {}
    c = Consumer({**settings.kafka_client_config(), "group.id": f"bench-bare-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    done, t0 = 0, None
    deadline = time.monotonic() + 300
    while done < expected and time.monotonic() < deadline:
        for msg in c.consume(1000, 0.5):
            if msg.error():
                continue
            if t0 is None:
                t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                r = screen(msg.value(), decoder.decode, now_ms=int(time.time() * 1000), regions=settings.known_regions)
            except DecodeError:  # the worker dead-letters it: handled, not scored
                done += 1
                continue
            model = models.get(r["home_id"])
            if model is None:
                model = models[r["home_id"]] = HomeModel(config)
            model.update(r)
            done += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    cpu = time.process_time() - (cpu0 if t0 else time.process_time())
    c.close()
    if done < expected:
        raise RuntimeError(f"bare consumer saw {done} of {expected}")
    return done / elapsed, done / max(cpu, 1e-9)


def _faust_rate(settings: Settings, topic: str, expected: int) -> tuple[float, float]:
    """(readings per second, readings per CPU-second of the worker process) of one
    fresh Faust worker (its own group) through the whole topic, from the end of its
    first batch to the end of the batch that handled the last reading (scored or
    dead-lettered), both as the worker's own clock says (``Workers.progress``):
    polled twice a second, since every scrape costs the worker time that the bare
    loop does not pay."""
    workers = start_workers(settings, topic, 1, label="bench-worker")
    try:
        first = last = None
        n = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n, at, cpu = workers.progress()
            at = at or time.time()  # (no reading scored yet: only dead letters)
            if n > 0 and first is None:
                first = (at, n, cpu)
            if n >= expected:
                # once more: the scrape may fall between the batch's counts and its clock
                time.sleep(0.1)
                n, at, cpu = workers.progress()
                last = (at or time.time(), n, cpu)
                break
            if workers.died():
                raise RuntimeError("the Faust worker died; see bench-worker-0.log")
            time.sleep(0.5)
        if last is None:
            raise RuntimeError(f"Faust worker handled {n:.0f} of {expected} within the time limit")
        done = last[1] - first[1]
        return done / max(last[0] - first[0], 1e-9), done / max(last[2] - first[2], 1e-9)
    finally:
        workers.stop()


def bench_process(settings: Settings, homes: int = 1000, ticks: int = 200, rounds: int = 3) -> Report:
    """The worker against the bare loop, interleaved over ``rounds`` (best of each: the
    machine is shared, and a burst of other work during one run says nothing).

    Wall-clock rates swing with the other jobs on the cores; readings per CPU-second
    of each process (the bare loop's whole process, the worker's with its threads)
    swing far less, so both ratios are given."""
    topic = unique_topic("bench.process")
    ensure_topics(settings, {topic: settings.telemetry_partitions})
    expected = _produce_dataset(settings, topic, homes, ticks)
    baseline, ours = [], []
    for _ in range(rounds):
        baseline.append(_bare_consume_and_score(settings, topic, expected))
        ours.append(_faust_rate(settings, topic, expected))
    best_base, best_ours = max(b[0] for b in baseline), max(o[0] for o in ours)
    cpu_base, cpu_ours = max(b[1] for b in baseline), max(o[1] for o in ours)
    return {"readings": expected, "rounds": rounds, "baseline_readings_per_s": best_base,
            "faust_readings_per_s_per_worker": best_ours, "ratio": best_ours / best_base,
            "ratios_per_round": [o[0] / b[0] for o, b in zip(ours, baseline)],
            "baseline_readings_per_cpu_s": cpu_base, "faust_readings_per_cpu_s": cpu_ours,
            "cpu_ratio": cpu_ours / cpu_base,
            "cpu_ratios_per_round": [o[1] / b[1] for o, b in zip(ours, baseline)],
            "load_average": os.getloadavg()[0]}


# ------------------------------------------------------------------------ live
def bench_live(settings: Settings, homes: int = 10_000, workers: int = 2, duration: float = 60.0) -> Report:
    """Live load: does the processor keep up (lag flat) at ``homes`` readings/s?"""
    topic = unique_topic("bench.live")
    ensure_topics(settings, {topic: settings.telemetry_partitions})
    pool = start_workers(settings, topic, workers, offset_reset="earliest", label="bench-worker")
    sim = None
    samples = []
    produced = processed = in_topic = 0.0
    try:
        sim_port = free_port()
        time.sleep(8)  # let the workers join before load starts (JoinGroup takes ~3 s on Tansu)
        sim = start_cli(settings, "bench-live-sim",
                        ["simulate", "--homes", str(homes), "--duration", str(duration), "--quiet"],
                        env={"ECO_TOPIC_TELEMETRY": topic, "ECO_METRICS_PORT": str(sim_port)})
        t0 = time.monotonic()
        while sim.running() and time.monotonic() - t0 < duration + 60:
            time.sleep(5)
            # the simulator's /metrics goes away when it exits: keep the last reading
            produced = max(produced, scrape(sim_port, "eco_readings_produced_total"))
            processed = pool.processed()
            samples.append((round(time.monotonic() - t0, 1), produced, processed, produced - processed))
        # What the workers must handle is what the topic holds once the simulator has
        # flushed and exited, not its last scrape (up to 5 s of load before its end).
        in_topic = float(sum(high - low for low, high in end_offsets(settings.kafka_bootstrap, [topic])
                             .get(topic, {}).values()))
        # drain: how long after the load stops until the workers have caught up
        t_end = time.monotonic()
        while time.monotonic() - t_end < 60:
            if pool.handled() >= in_topic:
                break
            time.sleep(1)
        drain_s = time.monotonic() - t_end
        time.sleep(3)  # anything handled twice would show by now
        processed, dead_lettered = pool.processed(), pool.dead_lettered()
    finally:
        if sim is not None:
            sim.stop()  # the producer first: it flushes to a broker that is still there
        pool.stop()
    loaded = [x for x in samples if 0 < x[0] <= duration]
    lags = [x[3] for x in loaded]
    third = max(1, len(lags) // 3)
    growing = bool(lags) and median(lags[-third:]) > 2 * max(median(lags[:third]), homes)
    rate = loaded[-1][1] / loaded[-1][0] if loaded else 0.0
    done_rate = (loaded[-1][2] - loaded[0][2]) / (loaded[-1][0] - loaded[0][0]) if len(loaded) > 1 else 0.0
    return {"homes": homes, "workers": workers, "duration_s": duration, "produced_per_s": rate,
            "processed_per_s": done_rate, "caught_up": processed + dead_lettered >= in_topic,
            "lag_samples": samples, "lag_growing": growing, "drain_after_load_s": drain_s,
            "processed_total": processed, "dead_lettered_total": dead_lettered, "in_topic_total": in_topic}


# --------------------------------------------------------------------- latency
def _consume_until(settings: Settings, topic: str, stop: threading.Event, handle) -> None:  # noqa: ANN001
    """Hand every message of ``topic`` (from its start) to ``handle`` until ``stop``."""
    from confluent_kafka import Consumer

    c = Consumer({**settings.kafka_client_config(), "group.id": f"bench-lat-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    while not stop.is_set():
        for msg in c.consume(100, 0.2):
            if not msg.error():
                handle(msg)
    c.close()


def bench_latency(settings: Settings, homes: int = 1000, duration: float = 45.0, spikes: int = 100) -> Report:
    """Produce-to-anomaly and produce-to-ClickHouse latency with the real topics."""
    import asyncio

    from producers.faults import FaultPlan
    from producers.producer import TelemetryProducer, run_live
    from producers.simulator import CitySimulator
    from sinks.warehouse import connect

    workers = start_workers(settings, settings.topic_telemetry, 1, offset_reset="latest", label="bench-worker")
    anomalies_topic = workers.anomalies_topic
    latencies: list[float] = []
    # where the time goes: reading -> the start of the worker's batch that scored it
    # (the event's detected_at: produce, linger, broker, fetch, waiting behind earlier
    # batches), -> the worker's send of the event (scoring the batch up to it), then
    # -> the event here (the worker's producer, the broker, this consumer's fetch)
    to_batch: list[float] = []
    to_send: list[float] = []  # -> the worker's send (the event's Kafka CreateTime)
    to_here: list[float] = []
    stop = threading.Event()
    decoder = decoder_for(settings, schemas.ANOMALY_EVENT)

    def on_event(msg) -> None:  # noqa: ANN001
        ev = decoder.decode(msg.value())
        # readings' anomalies only: a silence report comes by definition a
        # silence window after its home's last reading (and the worker may
        # see the tail of an earlier run: Tansu's "latest" is a batch early)
        if ev["detector"] != "gap":
            now = time.time()
            latencies.append(now - ev["ts"] / 1000)
            to_batch.append((ev["detected_at"] - ev["ts"]) / 1000)
            sent_ms = msg.timestamp()[1]
            to_send.append((sent_ms - ev["detected_at"]) / 1000)
            to_here.append(now - sent_ms / 1000)

    # The baseline, in the same run and under the same load: one bare hop through the
    # broker (confluent-kafka produce -> consume, the clients' settings of every other
    # producer and consumer here), one message every 100 ms. The anomaly path takes two
    # such hops (reading -> worker, event -> consumer) plus the worker's own time.
    hop_topic = unique_topic("bench.hop")
    ensure_topics(settings, {hop_topic: 1})
    hops: list[float] = []

    def hop_produce() -> None:
        from confluent_kafka import Producer

        p = Producer(settings.producer_config())
        while not stop.wait(0.1):
            p.produce(hop_topic, value=repr(time.time()).encode())
            p.poll(0)
        p.flush(5)

    listener = threading.Thread(target=_consume_until, args=(settings, anomalies_topic, stop, on_event), daemon=True)
    listener.start()
    hop_threads = [threading.Thread(target=_consume_until, daemon=True,
                                    args=(settings, hop_topic, stop, lambda msg: hops.append(time.time() - float(msg.value())))),
                   threading.Thread(target=hop_produce, daemon=True)]
    time.sleep(8)  # worker joins its group before the load starts
    for t in hop_threads:
        t.start()
    start_ms = int(time.time() * 1000)
    sim = CitySimulator(homes, settings.regions, settings.seed, start_ms)
    warm = int(max(settings.zscore_warmup + 5, duration / 2) * 1000)
    sim.set_faults(FaultPlan.random(sim.home_ids, start_ms + warm, int(duration * 1000) - warm - 3000,
                                    seed=start_ms, kinds=("spike",), faults_per_kind=spikes,
                                    warmup_ms=0, tail_ms=1000))
    try:
        with TelemetryProducer(settings) as producer:
            asyncio.run(run_live(sim, producer, duration))
        end_ms = int(time.time() * 1000)
        time.sleep(5)
    finally:
        stop.set()
        listener.join(5)
        for t in hop_threads:
            t.join(10)
        workers.stop()
    client = connect(settings)
    db = settings.clickhouse_database
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the warehouse holds the whole run
        n = int(client.command(f"SELECT count() FROM {db}.telemetry WHERE ts BETWEEN "
                               f"fromUnixTimestamp64Milli({start_ms}) AND fromUnixTimestamp64Milli({end_ms})"))
        if n >= homes * int(duration) * 0.98:
            break
        time.sleep(2)
    p50, p99 = client.query(
        f"SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', ts, ingested_at)) FROM {db}.telemetry "
        f"WHERE ts BETWEEN fromUnixTimestamp64Milli({start_ms}) AND fromUnixTimestamp64Milli({end_ms})"
    ).result_rows[0][0]
    def q(values: list[float], p: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")

    return {"homes": homes, "anomaly_events": len(latencies),
            "anomaly_p50_s": q(latencies, 0.5), "anomaly_p99_s": q(latencies, 0.99),
            "to_batch_p50_s": q(to_batch, 0.5), "to_batch_p99_s": q(to_batch, 0.99),
            "batch_to_send_p50_s": q(to_send, 0.5), "batch_to_send_p99_s": q(to_send, 0.99),
            "send_to_listener_p50_s": q(to_here, 0.5), "send_to_listener_p99_s": q(to_here, 0.99),
            "bare_hop_p50_s": q(hops, 0.5), "bare_hop_p99_s": q(hops, 0.99), "bare_hops": len(hops),
            "load_average": os.getloadavg()[0],
            "clickhouse_rows": n, "clickhouse_p50_s": p50 / 1000, "clickhouse_p99_s": p99 / 1000}
