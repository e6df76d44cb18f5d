"""The batching sink (sinks/sink.py).

Unit tests (no broker, no warehouse): the Batcher's cutting rules, and the whole
consume -> ledger -> write -> commit loop against in-memory fakes of Kafka and of
ClickHouse's token deduplication, crashed at every stage and replayed.

Integration tests (real local stack): the sink process SIGKILLed between an insert and
its offset commit, restarted with other batch sizes, stores every message exactly once;
and a warehouse restart while producing, comparing the Kafka-engine path with the sink.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import deque

import pytest

from ecoretrofit.serde import DecodeError
from sinks.batching import Batch, Batcher, normalise_ranges
from sinks.sink import Sink, TransientError
from helpers import fresh_region, unique, wait_for


# =================================================================== Batcher
def rows_of(batches):
    return [(b.partition, b.first_offset, b.last_offset, len(b.rows), len(b.dead)) for b in batches]


def feed(batcher, partition, offsets, now=0.0):
    out = []
    for o in offsets:
        out += batcher.add(partition, o, row=(o,), now=now)
    return out


def test_size_bound_cuts_per_partition():
    b = Batcher("t", max_rows=4, max_seconds=60)
    out = feed(b, 0, range(10)) + feed(b, 1, range(3))
    assert rows_of(out) == [(0, 0, 3, 4, 0), (0, 4, 7, 4, 0)]
    assert b.buffered() == 2 + 3
    assert rows_of(b.cut()) == [(0, 8, 9, 2, 0), (1, 0, 2, 3, 0)]
    assert b.buffered() == 0


def test_time_bound_cuts_due_buffers_and_those_half_as_old():
    b = Batcher("t", max_rows=1000, max_seconds=10)
    feed(b, 0, range(5), now=0.0)
    feed(b, 1, range(5), now=5.0)   # half as old when partition 0 is due
    feed(b, 2, range(5), now=9.0)   # too young: left for the next cut
    assert b.cut_due(9.9) == []
    assert rows_of(b.cut_due(10.0)) == [(0, 0, 4, 5, 0), (1, 0, 4, 5, 0)]
    assert b.partitions() == [2]


def test_dead_letters_count_towards_the_batch_and_keep_their_offsets():
    b = Batcher("t", max_rows=3, max_seconds=60)
    out = b.add(0, 0, row=(0,)) + b.add(0, 1, dead=("t", 0, 1, b"x", "bad")) + b.add(0, 2, row=(2,))
    assert rows_of(out) == [(0, 0, 2, 2, 1)]
    assert out[0].token == "t:0:0-2"


def test_recorded_ranges_are_recut_exactly_whatever_the_bounds():
    b = Batcher("t", max_rows=2, max_seconds=1)
    b.expect(0, [(10, 16), (17, 17), (5, 9)])  # as read from the ledger, unsorted
    out = feed(b, 0, range(5, 30), now=0.0)
    # recorded ranges first, exactly; then free cuts of 2
    assert [(x.first_offset, x.last_offset) for x in out][:4] == [(5, 9), (10, 16), (17, 17), (18, 19)]
    # a buffer inside a recorded range is never cut by time or at shutdown
    b.expect(1, [(0, 9)])
    feed(b, 1, range(0, 5), now=0.0)
    assert b.cut_due(100.0) == [] or all(x.partition != 1 for x in b.cut_due(100.0))
    assert all(x.partition != 1 for x in b.cut())
    assert b.buffered() == 5


def test_free_buffer_is_closed_at_the_start_of_a_recorded_range():
    b = Batcher("t", max_rows=100, max_seconds=60)
    b.expect(0, [(5, 7)])
    out = feed(b, 0, [2, 3, 5, 6, 7, 8])
    assert [(x.first_offset, x.last_offset) for x in out] == [(2, 3), (5, 7)]


def test_recorded_range_no_longer_in_the_log_is_skipped():
    b = Batcher("t", max_rows=100, max_seconds=60)
    b.expect(0, [(0, 9), (10, 19)])
    out = feed(b, 0, [12, 13, 19, 20])  # 0-9 deleted by retention; 10, 11 too
    assert [(x.first_offset, x.last_offset) for x in out] == [(12, 19)]


def test_redelivered_offsets_are_ignored():
    b = Batcher("t", max_rows=100, max_seconds=60)
    feed(b, 0, [0, 1, 2, 1, 2, 3])
    assert rows_of(b.cut()) == [(0, 0, 3, 4, 0)]


def test_normalise_ranges():
    assert normalise_ranges([(0, 9), (10, 19), (10, 19), (20, 29)], committed=10) == [(10, 19), (20, 29)]
    assert normalise_ranges([(10, 19), (12, 30), (20, 20)]) == [(10, 19), (20, 20)]
    assert normalise_ranges([(5, 4)]) == []


def test_token_is_a_function_of_the_offset_range_only():
    a = Batch("eco.t", 3, 100, 199, rows=[(1,)])
    b = Batch("eco.t", 3, 100, 199, rows=[(2,)] * 5)
    assert a.token == b.token == "eco.t:3:100-199"
    assert Batch("eco.t", 3, 100, 200).token != a.token


# ============================================================ in-memory fakes
class Crash(BaseException):
    """A SIGKILL at a chosen point: nothing after it runs (BaseException: no handler
    in the sink catches it)."""


class Msg:
    def __init__(self, topic, partition, offset, value):
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self):
        return None

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def key(self):
        return None

    def timestamp(self):
        return (1, 0)


class Broker:
    def __init__(self, topic, partitions):
        self.topic = topic
        self.log = {p: [] for p in range(partitions)}
        self.committed: dict[int, int] = {}

    def produce(self, n, rng, bad_every=0):
        for _ in range(n):
            p = rng.randrange(len(self.log))
            seq = sum(len(v) for v in self.log.values())
            value = b"bad" if bad_every and seq % bad_every == bad_every - 1 else f"ok:{seq}".encode()
            self.log[p].append(value)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeSource:
    def __init__(self, broker, clock, rng):
        self.broker, self.topic, self.clock, self.rng = broker, broker.topic, clock, rng
        self.pos: dict[int, int] = {}
        self.paused: set[int] = set()
        self.on_assign = None
        self.pauses = 0

    def subscribe(self, on_assign, on_revoke):
        self.on_assign = on_assign

    def poll(self, max_messages, timeout):
        if self.on_assign is not None and not self.pos:
            self.pos = {p: self.broker.committed.get(p, 0) for p in self.broker.log}
            self.on_assign(sorted(self.broker.log))
        self.clock.t += timeout
        out = []
        for p in sorted(self.pos):
            if p in self.paused:
                continue
            take = self.rng.randint(0, 40)
            log = self.broker.log[p]
            while take and self.pos[p] < len(log) and len(out) < max_messages:
                out.append(Msg(self.topic, p, self.pos[p], log[self.pos[p]]))
                self.pos[p] += 1
                take -= 1
        return out

    def committed(self, partitions):
        return {p: self.broker.committed.get(p) for p in partitions}

    def commit(self, offsets):
        for p, o in offsets.items():
            assert o >= self.broker.committed.get(p, 0), "commits must move forward"
            self.broker.committed[p] = o

    def pause(self, partitions):
        self.paused |= set(partitions)
        self.pauses += 1

    def resume(self, partitions):
        self.paused -= set(partitions)

    def close(self):
        pass


class Warehouse:
    """ClickHouse's insert deduplication: a block whose token is among the last
    ``window`` tokens is acknowledged and not stored."""

    def __init__(self, window=10_000):
        self.rows: list = []
        self.dead: list = []
        self.tokens: deque = deque(maxlen=window)

    def insert(self, target, rows, token):
        if token is not None and token in self.tokens:
            return
        target.extend(rows)
        if token is not None:
            self.tokens.append(token)


class FakeWriter:
    label = "fake"

    def __init__(self, wh, crash=None, fail=None):
        self.wh, self.crash, self.fail = wh, crash, fail

    def write(self, batch):
        if self.fail and self.fail():
            raise TransientError("warehouse down")
        if self.crash:
            self.crash("before_write", batch)
        # the rows, then the dead letters: a crash may land between the two
        self.wh.insert(self.wh.rows, batch.rows, batch.token)
        if self.crash:
            self.crash("between", batch)
        self.wh.insert(self.wh.dead, batch.dead, batch.token + ":dlq")
        if self.crash:
            self.crash("after_write", batch)


class MemLedger:
    def __init__(self, enabled=True):
        self.entries: list = []
        self.enabled = enabled

    def pending(self, group, topic, committed):
        out = {}
        for g, t, p, f, l in self.entries:
            if self.enabled and g == group and t == topic and p in committed and l >= (committed[p] or 0):
                out.setdefault(p, []).append((f, l))
        return out

    def record(self, group, batches):
        self.entries += [(group, b.topic, b.partition, b.first_offset, b.last_offset) for b in batches]

    def forget(self, group, batches):
        pass


def decode(msg):
    v = msg.value()
    if not v.startswith(b"ok:"):
        raise DecodeError("not ok", "corrupt")
    return (int(v[3:]),), None


def run_sink(broker, wh, ledger, rng, crash_at=None, batch_rows=50, batch_seconds=1.0, fail=None):
    """One sink process; ``crash_at`` = (stage, n): crash at the n-th time ``stage`` is
    reached. Returns True if it ran to completion, False if it crashed."""
    clock = Clock()
    seen = {"n": 0}

    def crash(stage, batch):
        if crash_at and stage == crash_at[0]:
            seen["n"] += 1
            if seen["n"] == crash_at[1]:
                raise Crash(stage)

    source = FakeSource(broker, clock, rng)
    if crash_at and crash_at[0] == "before_commit":
        real_commit = source.commit

        def commit(offsets):
            crash("before_commit", None)
            real_commit(offsets)

        source.commit = commit
    sink = Sink(source, decode, FakeWriter(wh, crash, fail), ledger, "g", batch_rows, batch_seconds,
                clock=clock, retry_seconds=0.5)
    try:
        sink.run(idle_exit=3.0)
    except Crash:
        return False, sink
    return True, sink


def expected(broker):
    good, bad = [], 0
    for p, log in broker.log.items():
        for v in log:
            if v.startswith(b"ok:"):
                good.append(int(v[3:]))
            else:
                bad += 1
    return sorted(good), bad


@pytest.mark.parametrize("seed", range(40))
def test_crash_anywhere_and_replay_stores_everything_exactly_once(seed):
    rng = random.Random(seed)
    broker = Broker("t", partitions=rng.choice([1, 3, 4]))
    wh, ledger = Warehouse(), MemLedger()
    broker.produce(rng.randint(200, 600), rng, bad_every=rng.choice([0, 37]))
    crashes = 0
    for run in range(rng.randint(1, 4)):
        stage = rng.choice(["before_write", "between", "after_write", "before_commit"])
        ok, _ = run_sink(broker, wh, ledger, rng, crash_at=(stage, rng.randint(1, 6)),
                         batch_rows=rng.choice([7, 20, 64, 200]), batch_seconds=rng.choice([0.5, 2.0, 30.0]))
        crashes += not ok
        broker.produce(rng.randint(0, 150), rng, bad_every=37)  # more arrives while it is down
    ok, sink = run_sink(broker, wh, ledger, rng, batch_rows=rng.choice([5, 33, 500]))
    assert ok
    good, bad = expected(broker)
    assert sorted(r[0] for r in wh.rows) == good, "every good message stored exactly once"
    assert len(wh.dead) == bad, "every bad message a dead letter exactly once"
    assert broker.committed == {p: len(log) for p, log in broker.log.items() if log}


def test_without_the_ledger_a_replay_with_other_bounds_duplicates():
    """The negative control: tokens alone are not enough when the replayed batch is
    cut differently (here: more messages arrived, and another --batch-rows)."""
    rng = random.Random(1)
    broker = Broker("t", partitions=1)
    broker.produce(100, rng)
    wh, ledger = Warehouse(), MemLedger(enabled=False)
    ok, _ = run_sink(broker, wh, ledger, rng, crash_at=("before_commit", 1), batch_rows=30)
    assert not ok and len(wh.rows) == 30  # written, not committed
    broker.produce(50, rng)
    run_sink(broker, wh, ledger, rng, batch_rows=45)
    assert len(wh.rows) > 150  # offsets 0-29 stored twice: tokens 0-29 vs 0-44 differ


def test_ledger_makes_the_replay_recut_the_written_batch():
    rng = random.Random(2)
    broker = Broker("t", partitions=1)
    broker.produce(100, rng)
    wh, ledger = Warehouse(), MemLedger()
    ok, _ = run_sink(broker, wh, ledger, rng, crash_at=("before_commit", 1), batch_rows=30)
    assert not ok
    broker.produce(50, rng)
    ok, sink = run_sink(broker, wh, ledger, rng, batch_rows=45)
    assert ok and sink.stats["replayed_batches"] == 1
    assert sorted(r[0] for r in wh.rows) == list(range(150))
    # the first batch of the second run is the recorded 0-29, cut again
    assert [e[3:] for e in ledger.entries[:2]] == [(0, 29), (0, 29)]


def test_target_down_is_retried_with_partitions_paused():
    rng = random.Random(3)
    broker = Broker("t", partitions=2)
    broker.produce(300, rng)
    wh, ledger = Warehouse(), MemLedger()
    failures = {"left": 5}

    def fail():
        if failures["left"]:
            failures["left"] -= 1
            return True
        return False

    clock = Clock()
    source = FakeSource(broker, clock, rng)
    sink = Sink(source, decode, FakeWriter(wh, fail=fail), ledger, "g", 40, 1.0, clock=clock, retry_seconds=0.5)
    sink.run(idle_exit=3.0)
    assert source.pauses >= 1 and not source.paused
    assert sorted(r[0] for r in wh.rows) == list(range(300))


def test_stop_flushes_and_commits_what_is_buffered():
    rng = random.Random(4)
    broker = Broker("t", partitions=2)
    broker.produce(50, rng)
    wh, ledger = Warehouse(), MemLedger()
    clock = Clock()
    source = FakeSource(broker, clock, rng)
    sink = Sink(source, decode, FakeWriter(wh), ledger, "g", 10_000, 3600.0, clock=clock)
    polls = {"n": 0}
    real_poll = source.poll

    def poll(n, timeout):
        polls["n"] += 1
        if polls["n"] == 20:
            sink.stop.set()  # SIGTERM
        return real_poll(n, timeout)

    source.poll = poll
    sink.run()
    assert len(wh.rows) == 50  # neither bound was reached: the stop flushed them
    assert sum(broker.committed.values()) == 50


def test_sigterm_while_the_target_is_down_leaves_the_batches_uncommitted():
    rng = random.Random(5)
    broker = Broker("t", partitions=1)
    broker.produce(30, rng)
    wh, ledger = Warehouse(), MemLedger()
    clock = Clock()
    source = FakeSource(broker, clock, rng)
    sink = Sink(source, decode, FakeWriter(wh, fail=lambda: True), ledger, "g", 10, 1.0, clock=clock,
                retry_seconds=0.5)
    real_poll = source.poll

    def poll(n, timeout):
        if clock.t > 5:
            sink.stop.set()
        return real_poll(n, timeout)

    source.poll = poll
    sink.run()  # returns: it does not retry forever once stopped
    assert wh.rows == [] and broker.committed == {}
    ok, _ = run_sink(broker, wh, ledger, rng, batch_rows=7)  # the next start stores them, once
    assert ok and sorted(r[0] for r in wh.rows) == list(range(30))


def test_registry_outage_is_waited_for_and_unknown_ids_are_dead_letters():
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from ecoretrofit.serde import AvroDecoder
    from sinks.kafka_source import registry_fetch
    from sinks.sink import Interrupted

    class Registry:
        def __init__(self, failures):
            self.failures = list(failures)

        def get_schema(self, schema_id):
            if self.failures:
                raise self.failures.pop(0)
            return type("S", (), {"schema_str": '"string"'})()

    stop = threading.Event()
    outage = [ConnectionError("refused"), SchemaRegistryError(503, 50003, "unavailable")]
    fetch = registry_fetch(None, stop, retry_seconds=0.01, client=Registry(outage))
    assert fetch(1) == '"string"'  # waited through the outage
    unknown = AvroDecoder(registry_fetch(None, stop, 0.01, client=Registry([SchemaRegistryError(404, 40403, "nf")])))
    with pytest.raises(DecodeError) as info:
        unknown.decode(b"\x00\x00\x00\x00\x09\x02x")
    assert info.value.reason == "unknown_schema"
    stop.set()
    with pytest.raises(Interrupted):  # not a DecodeError: the message is not dead-lettered
        AvroDecoder(registry_fetch(None, stop, 0.01, client=Registry([ConnectionError()] * 5))).decode(
            b"\x00\x00\x00\x00\x09\x02x")


def test_decoders_map_records_to_table_rows():
    import json as _json

    import schemas
    from ecoretrofit.config import Settings
    from ecoretrofit.serde import AvroDecoder, AvroEncoder
    from sinks.kafka_source import make_decoder, topic_spec

    settings = Settings.from_env({"ECO_DATA_DIR": "/nonexistent", "ECO_CLICKHOUSE_PASSWORD": "x",
                                  "ECO_S3_ACCESS_KEY": "k", "ECO_S3_SECRET_KEY": "s"})
    event = {"event_id": "e1", "home_id": "H1", "region": "north", "metric": "power_w", "ts": 1000,
             "detected_at": 2000, "value": 9.0, "score": 1.0, "detector": "zscore", "window_mean": 1.0,
             "window_std": 0.5, "window_count": 30, "zscore": None, "severity": "critical"}
    raw = AvroEncoder(schemas.schema_dict("anomaly_event"), schema_id=7).encode(event)
    fetch = lambda schema_id: schemas.schema_text("anomaly_event")

    class M(Msg):
        def key(self):
            return b"H1"

        def timestamp(self):
            return (1, 5000)

    spec = topic_spec(settings, "anomalies")
    row, event_ms = make_decoder(spec, AvroDecoder(fetch, schemas.schema_text(spec.schema)))(M("t", 2, 40, raw))
    assert dict(zip(spec.columns, row)) == {**event, "kafka_partition": 2, "kafka_offset": 40}
    assert event_ms == 1000
    # alerts have no contract yet: the writer schema's record, as JSON
    spec = topic_spec(settings, "alerts")
    row, event_ms = make_decoder(spec, AvroDecoder(fetch))(M("t", 1, 3, raw))
    assert row[:5] == (1, 3, 5000, "H1", 7) and _json.loads(row[5])["event_id"] == "e1"
    with pytest.raises(DecodeError):
        make_decoder(spec, AvroDecoder(fetch))(M("t", 1, 4, b"\x07junk"))


def test_telemetry_decoder_dead_letters_implausible_empty_and_oversized_messages():
    """The sink (the exactly-once path) sees every message, so none may vanish: a
    tombstone, an empty value, an oversized message and each implausible reading of the
    issue become DecodeErrors (dead letters) with a reason; a plausible reading passes."""
    import schemas
    from ecoretrofit.config import Settings
    from ecoretrofit.serde import AvroDecoder, AvroEncoder
    from sinks.kafka_source import make_decoder, topic_spec

    settings = Settings.from_env({"ECO_DATA_DIR": "/nonexistent", "ECO_CLICKHOUSE_PASSWORD": "x",
                                  "ECO_S3_ACCESS_KEY": "k", "ECO_S3_SECRET_KEY": "s"})
    now_ms = 1_780_000_000_000
    good = {"home_id": "H000042", "region": "north", "ts": now_ms - 5000, "seq": 7, "indoor_temp_c": 20.5,
            "outdoor_temp_c": 3.0, "power_w": 850.0, "energy_kwh": 1234.5, "voltage_v": 231.0,
            "vibration_mm_s": 0.4, "water_flow_lpm": None, "water_temp_c": None,
            "uv_intensity_mw_cm2": None, "pump_pressure_bar": None}
    encoder = AvroEncoder(schemas.schema_dict(schemas.TELEMETRY_READING), schema_id=3)
    spec = topic_spec(settings, "telemetry")
    decode = make_decoder(spec, AvroDecoder(lambda _: schemas.schema_text(schemas.TELEMETRY_READING),
                                            schemas.schema_text(spec.schema)),
                          regions=settings.known_regions, clock=lambda: now_ms / 1000)
    row, event_ms = decode(Msg("t", 0, 1, encoder.encode(good)))
    assert event_ms == good["ts"] and row[0] == "H000042"
    bad = {
        "tombstone": (None, "truncated"), "empty": (b"", "truncated"),
        "oversized": (encoder.encode(good) + b"x" * 5_000_000, "oversized"),
    }
    edits = {"nan": {"power_w": float("nan")}, "inf": {"power_w": float("inf")}, "huge": {"power_w": 1.7e308},
             "negative_voltage": {"voltage_v": -5.0}, "year_1900": {"ts": -2_208_988_800_000},
             "year_1970": {"ts": 0}, "year_2100": {"ts": 4_102_444_800_000}, "empty_home": {"home_id": ""},
             "long_home": {"home_id": "H" + "1" * 1_000}, "unknown_region": {"region": "mars"}}
    for name, edit in edits.items():
        bad[name] = (encoder.encode(dict(good, **edit)), "implausible")
    # a 10 kB home id makes the whole message too big for a reading
    bad["huge_home"] = (encoder.encode(dict(good, home_id="H" + "1" * 10_000)), "oversized")
    for name, (raw, reason) in bad.items():
        with pytest.raises(DecodeError) as info:
            decode(Msg("t", 0, 2, raw))
        assert info.value.reason == reason, name
        if reason == "implausible":
            assert f"{next(iter(edits[name]))}:" in str(info.value), name
            assert len(str(info.value)) < 300, name


# ============================================================ real stack




def produce_readings(settings, region, homes, ticks, start_ms, sim=None):
    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator

    sim = sim or CitySimulator(homes, [region], seed=11, start_ms=start_ms)
    with TelemetryProducer(settings) as producer:
        stats = run_backfill(sim, producer, start_ms, ticks, progress=False)
    assert stats.failed == 0 and stats.in_flight == 0, stats
    return sim, stats.acked


def counts(client, table, region):
    return tuple(int(x) for x in client.query(
        f"SELECT count(), uniqExact(home_id, ts), uniqExact(kafka_partition, kafka_offset) FROM {table} "
        "WHERE region = {r:String}", parameters={"r": region}).result_rows[0])


def committed(settings, topic, group, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: max(tp.offset, 0) for tp in tps}


def test_sigkill_between_insert_and_commit_then_restart_stores_exactly_once(stack_settings):
    from confluent_kafka import Producer

    from conftest import spawn, stop
    from ecoretrofit.admin import ensure_topics
    from sinks.warehouse import connect

    topic, region, group = unique("eco.test.sink"), fresh_region(), unique("eco-sink-test")
    ensure_topics(stack_settings, {topic: 4})
    s = stack_settings.replace(topic_telemetry=topic)
    client = connect(s)
    table = f"{s.clickhouse_database}.telemetry_sink"
    start_ms = int(time.time() * 1000) - 3_600_000
    sim, first = produce_readings(s, region, homes=200, ticks=150, start_ms=start_ms)
    bad = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for p in range(3):  # undecodable: they must end up in dead_letters, once
        bad.produce(topic, b"\x07not avro", key=b"bad", partition=p)
    assert bad.flush(10) == 0

    # run 1: small batches, 3 s between each insert and its offset commit
    args = ("sink", "--topic", "telemetry", "--table", "telemetry_sink", "--group", group, "--batch-seconds", "1")
    proc = spawn(s, *args, "--batch-rows", "2500", "--debug-commit-delay", "3", log_name=f"{group}-1")
    try:
        wait_for(lambda: counts(client, table, region)[0] > 0, 60, 0.1, what="the first batch")
    finally:
        stop(proc, signal.SIGKILL)  # inside the 3 s window: rows stored, offsets not committed
    stored = counts(client, table, region)
    done = committed(s, topic, group, 4)
    beyond = int(client.command(
        f"SELECT count() FROM {table} WHERE region = {{r:String}} AND kafka_offset >= "
        f"[{', '.join(str(done[p]) for p in range(4))}][kafka_partition + 1]", parameters={"r": region}))
    assert 0 < stored[0] < first and beyond > 0, (stored, done, beyond)

    # more arrives while the sink is down; run 2 cuts with other bounds
    sim, second = produce_readings(s, region, 200, 50, start_ms + 150_000, sim=sim)
    produced = first + second
    proc = spawn(s, *args, "--batch-rows", "7000", log_name=f"{group}-2")
    try:
        wait_for(lambda: counts(client, table, region)[1] >= produced, 60, what="every reading")
        time.sleep(2)  # a duplicate would land right behind
    finally:
        assert stop(proc, signal.SIGTERM) == 0, "clean shutdown on SIGTERM"
    rows, distinct, offsets = counts(client, table, region)
    assert (rows, distinct, offsets) == (produced, produced, produced), f"{rows - produced} duplicates"
    dead = client.query(f"SELECT count(), uniqExact(partition, offset) FROM {s.clickhouse_database}.dead_letters "
                        "WHERE topic = {t:String}", parameters={"t": topic}).result_rows[0]
    assert tuple(dead) == (3, 3)
    # the replay re-cut exactly the recorded batch(es): the same ranges in the ledger twice
    recut = int(client.command(
        f"SELECT count() FROM (SELECT partition, first_offset, last_offset FROM {s.clickhouse_database}.sink_batches "
        "WHERE sink = {g:String} GROUP BY ALL HAVING count() > 1)", parameters={"g": group}))
    assert recut >= 1
    # and after SIGTERM every message's offset is committed
    assert sum(committed(s, topic, group, 4).values()) == produced + 3


@pytest.mark.kafka_engine
def test_warehouse_restart_kafka_engine_vs_sink(stack, stack_settings, record_property):
    """Produce at 2,000 readings/s to the real telemetry topic and restart the
    warehouse (SIGTERM, start) in the middle. Both paths consume the same messages: the
    Kafka engine into `telemetry`, the sink into `telemetry_sink`. Neither may lose a
    reading; the sink may not duplicate one; the Kafka engine's duplicates are reported."""
    from conftest import spawn, stop
    from producers.producer import TelemetryProducer
    from producers.simulator import CitySimulator
    from sinks.warehouse import connect

    s = stack_settings
    region, group = fresh_region(), unique("eco-sink-test")
    sink = spawn(s, "sink", "--topic", "telemetry", "--table", "telemetry_sink", "--group", group, "--batch-rows", "5000",
                 "--batch-seconds", "1", log_name=group)
    homes, ticks = 1000, 16
    start_ms = int(time.time() * 1000) - 7_200_000
    sim = CitySimulator(homes, [region], seed=13, start_ms=start_ms)
    producer = TelemetryProducer(s)

    def produce():
        for i in range(ticks):
            producer.send_columns(sim.tick_columns(start_ms + i * 1000))
            producer.poll(0)
            time.sleep(0.5)
        producer.flush(60)

    thread = threading.Thread(target=produce)
    try:
        thread.start()
        time.sleep(3)
        t0 = time.monotonic()
        stack.restart("warehouse")
        restart_s = time.monotonic() - t0
        thread.join()
        producer.close()
        produced = producer.stats.acked
        assert produced == homes * ticks
        client = connect(s)
        engine = f"{s.clickhouse_database}.telemetry"
        sunk = f"{s.clickhouse_database}.telemetry_sink"
        wait_for(lambda: counts(client, sunk, region)[1] >= produced, 60, 1, what="every reading in telemetry_sink")
        stalled = ""
        try:
            # The Kafka engine resumes a few seconds after the restart (its group's join;
            # restarts that stalled for minutes: docs/delivery.md)
            wait_for(lambda: counts(client, engine, region)[1] >= produced, 30, 1, what="the Kafka engine")
        except AssertionError:
            stalled = "; Kafka-engine consumers: " + repr(client.query(
                "SELECT consumer_id, assignments.partition_id, num_messages_read, last_poll_time, "
                "arraySlice(exceptions.text, -1) FROM system.kafka_consumers WHERE table = 'telemetry_queue'"
            ).result_rows)
        time.sleep(2)
        e_rows, e_distinct, _ = counts(client, engine, region)
        k_rows, k_distinct, k_offsets = counts(client, sunk, region)
    finally:
        thread.join()
        assert stop(sink, signal.SIGTERM) == 0
    report = (f"warehouse restart ({restart_s:.1f}s) while producing {produced:,} readings: Kafka engine "
              f"{e_rows:,} rows / {e_distinct:,} distinct ({e_rows - e_distinct:,} duplicates, "
              f"{produced - e_distinct:,} not yet stored); sink {k_rows:,} rows / {k_distinct:,} distinct")
    print(report)
    record_property("kafka_engine_restart", report)
    assert (k_rows, k_distinct, k_offsets) == (produced, produced, produced), "the sink is exactly-once"
    assert e_distinct == produced, f"the Kafka engine lost readings or stalled: {report}{stalled}"


def test_reading_filter_gives_a_replay_after_a_partial_insert_the_same_rows_and_token():
    """(home_id, seq, ts) filter vs the insert token (sinks/reading_identity.py): rows
    this batch stored in an earlier attempt are not 'repeats', so the replay inserts the
    same rows under the same token (and ClickHouse drops the parts already written); a
    copy stored by another batch is dropped, and the token says so."""
    from sinks.reading_identity import drop_repeated, token

    rows = [("H1", 5, 9, 0, 10), ("H1", 6, 9, 0, 11), ("H1", 5, 9, 0, 12), ("H2", 7, 9, 0, 13)]
    idx = dict(home=0, seq=1, ts=2, partition=3, offset=4)
    first = drop_repeated(rows, stored=[], **idx)
    assert first == (rows[:2] + rows[3:], [12])
    partial = [("H1", 5, 9, 0, 10), ("H2", 7, 9, 0, 13)]  # what the first attempt got into the table
    assert drop_repeated(rows, stored=partial, **idx) == first
    assert token("t:0:10-13", first[1]) == token("t:0:10-13", [12])
    # H2/7 already stored by an earlier batch (offset 3): dropped, another token
    again = drop_repeated(rows, stored=[("H2", 7, 9, 0, 3)], **idx)
    assert again == (rows[:2], [12, 13])
    assert token("t:0:10-13", again[1]) != token("t:0:10-13", first[1])
    # the same (home_id, seq) at another time is another reading (a counter that restarted)
    assert drop_repeated(rows, stored=[("H2", 7, 8, 0, 3)], **idx) == first


def test_a_sink_stopped_before_it_got_partitions_waits_for_them_before_leaving():
    """Stopped while its group is still forming, the sink waits (bounded) until it holds
    its partitions and leaves a formed group: on Tansu 0.6 a member leaving a forming
    group leaves the group stuck for every later member (docs/delivery.md)."""
    rng = random.Random(6)
    broker = Broker("t", partitions=2)
    broker.produce(30, rng)
    wh, ledger = Warehouse(), MemLedger()
    clock = Clock()
    source = FakeSource(broker, clock, rng)
    sink = Sink(source, decode, FakeWriter(wh), ledger, "g", 10_000, 3600.0, clock=clock, leave_wait_s=5.0)
    real_subscribe = source.subscribe
    joins = {"polls": 0}

    def subscribe(on_assign, on_revoke):
        real_subscribe(lambda ps: joins["polls"] >= 3 and on_assign(ps), on_revoke)

    real_poll = source.poll

    def poll(n, timeout):
        joins["polls"] += 1
        if joins["polls"] >= 3 and not sink.assigned:
            source.pos = {}  # the group forms on the third poll
        return real_poll(n, timeout)

    source.subscribe, source.poll = subscribe, poll
    sink.stop.set()  # SIGTERM before the first poll
    sink.run()
    assert sink.assigned, "left the group before it formed"
    assert len(wh.rows) == sum(broker.committed.values())
    # without the wait it leaves at once, unassigned
    lone = Sink(FakeSource(broker, clock, rng), decode, FakeWriter(Warehouse()), MemLedger(), "g2", 10, 3600.0,
                clock=clock)
    lone.stop.set()
    lone.run()
    assert not lone.assigned
