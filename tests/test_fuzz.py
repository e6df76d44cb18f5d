"""Fuzzing the whole pipeline: random and mutated messages mixed with good readings on
the telemetry topic, while the stream processor, the batching sink and the warehouse's
Kafka engine consume it on the real local stack. Afterwards every process still runs
and every message is accounted for on every path: each plausible reading stored (or
scored) exactly once, each other message dead-lettered exactly once with its reason.

The corpus comes from one seed, printed by the test (``-s`` shows it); rerun a failure
with ``ECO_FUZZ_SEED=<seed>``. The expected verdict of each message is computed here,
independently of the product's decoders: fastavro against the telemetry schema, with
exact consumption of the bytes, then the plausibility contract.

The processor and the sink read a topic of the test's own (so their counts are exact);
the Kafka engine reads the stack's telemetry topic, where the same corpus is produced
too, and is accounted by Kafka position (partition, offset) of every row it stored or
dead-lettered.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass

import fastavro
import pytest
from confluent_kafka import Consumer, Producer

import schemas
from conftest import ingest_mode, spawn, stop
from ecoretrofit.processes import scrape
from ecoretrofit.serde import encoder_for
from producers.simulator import CitySimulator
from schemas import plausibility
from schemas.topics import TELEMETRY
from sinks import named_queries
from sinks.warehouse import connect
from helpers import TEST_REGIONS, own_worker_settings, unique

DEFAULT_SEED = 20261130
# The raw tables' TTL (telemetry and telemetry_sink, sinks/sql/010 and 030): a plausible
# reading older than this (a bit flip in its timestamp, say) is stored and may be
# dropped with its part at once; the roll-ups keep it.
RAW_RETENTION_MS = 7 * 86_400_000
# Each path judges a reading's time when it reads it, up to a few minutes after the
# corpus was built: no message of the corpus has a time this near an edge of the window.
JUDGING_MARGIN_MS = 5 * 60_000
# A declared region of the test pool that fresh_region() hands out last (never, in practice).
FUZZ_REGION = TEST_REGIONS[-1]
# The largest message produced: the bound (the broker took 64 MB when measured).
MAX_FUZZ_BYTES = 10_000_000
LARGE_SIZES = (plausibility.MAX_MESSAGE_BYTES, plausibility.MAX_MESSAGE_BYTES + 1,
               plausibility.DEAD_LETTER_MAX_BYTES, plausibility.DEAD_LETTER_MAX_BYTES + 1,
               1_000_000, 5_000_000, MAX_FUZZ_BYTES)


@dataclass
class Case:
    label: str
    key: bytes | None
    value: bytes | None
    headers: list | None
    valid: bool  # exactly one plausible reading
    clickhouse_valid: bool = False  # a plausible reading as ClickHouse reads Avro (see Oracle)
    partition: int | None = None  # None: the producer's partitioner decides
    expiring: bool = False  # a plausible reading older than the raw tables keep (it may be gone)


def _plain_schema() -> dict:
    """The telemetry schema with timestamps as plain longs (the pipeline's epoch ms)."""
    def plain(node):
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items() if k != "logicalType"}
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    return fastavro.parse_schema(plain(schemas.schema_dict(schemas.TELEMETRY_READING)))


class Oracle:
    """Is ``raw`` exactly one plausible reading of the telemetry schema ``schema_id``?"""

    def __init__(self, schema_id: int, now_ms: int, regions):
        self.schema_id = schema_id
        self.now_ms = now_ms
        self.regions = tuple(regions)
        self.schema = _plain_schema()

    def _judged(self, record: dict) -> dict | None:
        return None if plausibility.check(record, now_ms=self.now_ms, regions=self.regions) else record

    def borderline(self, raw: bytes | None) -> bool:
        """Does ``raw`` decode to a reading whose time lies so near an edge of the
        contract's window that the verdict depends on when it is judged?"""
        record = self.reading(raw, judge=False) or self.read_as_clickhouse(raw, judge=False)
        if record is None or not isinstance(record.get("ts"), int):
            return False
        ts = record["ts"]
        return (abs(ts - (self.now_ms + plausibility.MAX_FUTURE_MS)) < JUDGING_MARGIN_MS
                or abs(ts - (self.now_ms - plausibility.MAX_PAST_MS)) < JUDGING_MARGIN_MS)

    def reading(self, raw: bytes | None, judge: bool = True) -> dict | None:
        if raw is None or not 5 <= len(raw) <= plausibility.MAX_MESSAGE_BYTES:
            return None
        if raw[0] != 0 or int.from_bytes(raw[1:5], "big") != self.schema_id:
            return None
        body = io.BytesIO(raw[5:])
        try:
            record = fastavro.schemaless_reader(body, self.schema, None)
        except Exception:
            return None
        if body.tell() != len(raw) - 5:
            return None
        return self._judged(record) if judge else record

    def read_as_clickhouse(self, raw: bytes | None, judge: bool = True) -> dict | None:
        """The plausible reading ClickHouse's Avro reader makes of ``raw``, where it is
        more lenient than Avro: it reads a union branch index outside the schema
        (``["null", "double"]`` with index 5, say) as null instead of refusing the
        message (measured: such messages are stored, with that field null)."""
        if raw is None or len(raw) < 5 or raw[0] != 0 or int.from_bytes(raw[1:5], "big") != self.schema_id:
            return None
        pos = 5

        def long():
            nonlocal pos
            value = shift = 0
            while True:
                byte = raw[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    return (value >> 1) ^ -(value & 1)
                if shift >= 70:
                    raise ValueError("varint over 10 bytes")

        def double():
            nonlocal pos
            pos += 8
            if pos > len(raw):
                raise IndexError
            return struct.unpack_from("<d", raw, pos - 8)[0]

        def string():
            nonlocal pos
            n = long()
            if n < 0 or pos + n > len(raw):
                raise IndexError
            pos += n
            return raw[pos - n:pos].decode("utf-8", "replace")

        record = {}
        try:
            for field in schemas.schema_dict(schemas.TELEMETRY_READING)["fields"]:
                kind = field["type"]
                if isinstance(kind, list):  # ["null", "double"]
                    record[field["name"]] = double() if long() == 1 else None
                elif kind == "string":
                    record[field["name"]] = string()
                elif kind == "double":
                    record[field["name"]] = double()
                else:  # long, timestamp-millis
                    record[field["name"]] = long()
        except (IndexError, ValueError):
            return None
        if pos != len(raw):
            return None
        return self._judged(record) if judge else record


def build_corpus(rng: random.Random, encode, oracle: Oracle, region: str, homes: list[str],
                 foreign_schema_id: int, ticks: int, partitions: int) -> list[Case]:
    """Good readings of ``homes`` and hostile messages of every shape, shuffled,
    between good readings at the start and the end of each of the ``partitions``."""
    now = oracle.now_ms
    day = 86_400_000
    start = now - 3_600_000  # inside the warehouse's 7-day retention and the contract's window
    sim = CitySimulator(len(homes), [region], seed=rng.randrange(2**31), start_ms=start)
    good = []
    for t in range(ticks):
        for home, r in zip(homes, sim.tick(start + t * 1000)):
            good.append(dict(r, home_id=home))
    cases = []

    def key_of(reading):
        # mostly the home id, as the contract says; sometimes any bytes at all
        if rng.random() < 0.8:
            return reading["home_id"].encode()
        return rng.choice([None, b"", rng.randbytes(rng.randrange(1, 300))])

    def headers():
        if rng.random() < 0.7:
            return None
        return [(f"h{rng.randrange(1000)}", rng.choice([None, b"", rng.randbytes(rng.randrange(1, 2000))]))
                for _ in range(rng.randrange(1, 20))]

    def add(label, value, key=None, valid=None):
        if valid is None:
            valid = oracle.reading(value) is not None
        reading = oracle.reading(value) or oracle.read_as_clickhouse(value)
        cases.append(Case(label, key if key is not None else rng.choice([None, b"", rng.randbytes(rng.randrange(1, 64))]),
                          value, headers(), valid, reading is not None,
                          expiring=reading is not None and reading["ts"] < now - RAW_RETENTION_MS + day))

    for r in good:
        raw = encode(r)
        assert oracle.reading(raw) is not None, r
        add("good", raw, key=key_of(r), valid=True)

    def sample():
        return rng.choice(good)

    # no payload at all
    for _ in range(4):
        add("tombstone", None)
        add("empty value", b"")
    # random bytes: small, around every declared limit, and up to 10 MB
    for _ in range(40):
        add("random", rng.randbytes(rng.randrange(1, 300)))
    for size in LARGE_SIZES:
        add(f"random {size} B", rng.randbytes(size))
    # broken framing of a good reading
    for _ in range(25):
        raw = encode(sample())
        add("truncated", raw[: rng.randrange(0, len(raw))])
    for _ in range(10):
        raw = encode(sample())
        add("wrong magic byte", bytes([rng.randrange(1, 256)]) + raw[1:])
    for _ in range(10):
        raw = encode(sample())
        add("unknown schema id", raw[:1] + struct.pack(">I", rng.randrange(1_000_000, 2**32)) + raw[5:])
    for _ in range(5):
        raw = encode(sample())
        add("another schema's id", raw[:1] + struct.pack(">I", foreign_schema_id) + raw[5:])
    for _ in range(5):
        add("two readings in one message", encode(sample()) + encode(sample()))
    for _ in range(5):
        add("trailing bytes", encode(sample()) + rng.randbytes(rng.randrange(1, 20)))
    # bit flips anywhere: the oracle decides which are still a plausible reading. A flip
    # that makes a plausible reading of another region or home is drawn again (it would
    # be stored in rows other tests of the session count).
    flips = 0
    while flips < 80:
        r = sample()
        raw = bytearray(encode(r))
        for _ in range(rng.randrange(1, 4)):
            bit = rng.randrange(len(raw) * 8)
            raw[bit // 8] ^= 1 << (bit % 8)
        decoded = oracle.reading(bytes(raw)) or oracle.read_as_clickhouse(bytes(raw))
        if decoded is not None and (decoded["region"] != region or decoded["home_id"] not in homes):
            continue
        if oracle.borderline(bytes(raw)):
            continue
        add("bit flip", bytes(raw))
        flips += 1
    # valid Avro, field by field at and beyond its boundaries (values on the boundary are plausible)
    edits = [
        ("ts", now - 2 * day), ("ts", now - plausibility.MAX_PAST_MS - day), ("ts", now + 60_000),
        ("ts", now + plausibility.MAX_FUTURE_MS + 2 * JUDGING_MARGIN_MS), ("ts", 0), ("ts", -2**63), ("ts", 2**63 - 1),
        ("seq", 0), ("seq", plausibility.SEQ_MAX), ("seq", plausibility.SEQ_MAX + 1), ("seq", -1), ("seq", -2**63),
        ("home_id", "H" + "1" * 6), ("home_id", "H" + "1" * 5), ("home_id", ""), ("home_id", "H" + "1" * 3000),
        ("home_id", "H\u00e91234567"), ("region", ""), ("region", region.upper()), ("region", "x" * 5000),
    ]
    for name, rng_ in plausibility.METRIC_RANGES.items():
        edits += [(name, rng_.lo), (name, rng_.hi), (name, rng_.lo - 1e-6 * max(1.0, abs(rng_.lo))),
                  (name, rng_.hi * (1 + 1e-9) + 1e-9), (name, float("nan")), (name, float("inf")),
                  (name, float("-inf")), (name, 1.7e308), (name, -0.0)]
        if name in plausibility.NULLABLE:
            edits.append((name, None))
    for name, value in edits:
        r = dict(sample(), **{name: value})
        # a plausible edge reading keeps its own (home, ts): every good reading is distinct
        r["ts"] = r["ts"] if name == "ts" else r["ts"] + 1 + rng.randrange(999)
        assert not oracle.borderline(encode(r)), (name, value)
        add(f"{name}={value!r:.40}", encode(r))
    # a valid-looking reading far over the size limit
    add("6 MB home id", encode(dict(sample(), home_id="H" + "7" * 6_000_000)))
    rng.shuffle(cases)
    # good readings framing the corpus in every partition: holes are seen between two
    # accounted offsets only (sinks/queries/unaccounted_offsets.sql)
    first, last = [], []
    for p in range(partitions):
        for where, ts, seq in ((first, good[0]["ts"] - 1000, 0), (last, good[-1]["ts"] + 1000, ticks + 1)):
            r = dict(good[p % len(good)], ts=ts, seq=seq)
            where.append(Case("good (framing)", r["home_id"].encode(), encode(r), None, True, True, p))
    return first + cases + last


def produce(settings, topic: str, cases: list[Case]) -> list[tuple[int, int]]:
    """Produce every case to ``topic``; the (partition, offset) of each."""
    where: list[tuple[int, int] | None] = [None] * len(cases)
    errors = []

    def delivered(i):
        def cb(err, msg):
            if err is not None:
                errors.append((cases[i].label, err))
            else:
                where[i] = (msg.partition(), msg.offset())
        return cb

    p = Producer({**settings.producer_config(), "compression.type": "none", "linger.ms": 5,
                  "message.max.bytes": MAX_FUZZ_BYTES + 1_000_000})
    for i, c in enumerate(cases):
        extra = {} if c.partition is None else {"partition": c.partition}
        p.produce(topic, c.value, key=c.key, headers=c.headers, on_delivery=delivered(i), **extra)
        p.poll(0)
    assert p.flush(120) == 0
    assert not errors, errors[:5]
    return where


def _stack_pids(stack) -> dict:
    return {name: pid for name, pid, _ in stack.status()}


def _settle(predicate, timeout: float, interval: float = 0.5) -> None:
    """Wait until ``predicate()`` holds or ``timeout`` passed; the accounting below
    says what is missing."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(interval)


@pytest.mark.both_ingest_paths
def test_fuzzed_messages_are_each_stored_or_dead_lettered_once_on_every_path(stack, stack_settings):
    seed = int(os.environ.get("ECO_FUZZ_SEED", DEFAULT_SEED))
    print(f"\nfuzz seed {seed} (rerun with ECO_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    name = unique("fuzz")
    s = own_worker_settings(stack_settings, name)
    stack_topic = stack_settings.topic_telemetry
    enc = encoder_for(s, s.topic_telemetry, schemas.TELEMETRY_READING)
    assert encoder_for(s, stack_topic, schemas.TELEMETRY_READING).schema_id == enc.schema_id
    foreign = encoder_for(s, s.topic_anomalies, schemas.ANOMALY_EVENT).schema_id
    # The corpus depends on the seed only (and on the clock, for timestamps): a region
    # of the test pool kept for this test, homes drawn from the seed.
    region = FUZZ_REGION
    homes = [f"H{rng.randrange(10**8, 10**9)}" for _ in range(12)]
    oracle = Oracle(enc.schema_id, int(time.time() * 1000), s.known_regions)
    cases = build_corpus(rng, enc.encode, oracle, region, homes, foreign, ticks=25,
                         partitions=TELEMETRY.partitions_in(stack_settings))
    n_valid = sum(c.valid for c in cases)
    n_bad = len(cases) - n_valid
    # a reading is its (home_id, seq, ts): the sink stores one plausible reading of each
    repeated = _repeated_readings(cases, oracle)
    n_repeats = sum(len(g) - 1 for g in repeated)
    sink_mode = ingest_mode() == "sink"  # the stack's telemetry path is the sink too
    print(f"corpus: {len(cases)} messages, {n_valid} plausible readings, {n_bad} hostile; "
          f"{sum(len(c.value or b'') for c in cases) / 1e6:.1f} MB; kinds {dict(Counter(c.label.split('=')[0] for c in cases))}")
    stack_before = _stack_pids(stack)
    restarts_before = {k: v.get("restarts", 0) for k, v in stack.supervisor_state().items()}

    worker = spawn(s, "process", log_name=f"worker-{name}")
    sink = spawn(s, "sink", "--topic", "telemetry", "--table", "telemetry_sink", "--group", unique("eco-sink-fuzz"),
                 "--batch-seconds", "1", log_name=f"sink-{name}")
    client = connect(stack_settings)
    db = stack_settings.clickhouse_database
    metrics_port = s.metrics_port + 1
    letters = []
    letter_consumer = Consumer({**s.kafka_client_config(), "group.id": unique("g"), "auto.offset.reset": "earliest",
                                "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    letter_consumer.subscribe([s.topic_deadletter])

    def running() -> bool:
        assert worker.running(), "the processor died (see its log)"
        assert sink.running(), "the sink died (see its log)"
        return True

    def sink_rows():
        return client.query(
            f"SELECT kafka_partition, kafka_offset, count() FROM {db}.telemetry_sink "
            f"WHERE region = %(r)s GROUP BY kafka_partition, kafka_offset", parameters={"r": region}).result_rows

    def sink_dead():
        return client.query(
            f"SELECT partition, offset, count(), min(length(error)), max(length(raw)) FROM {db}.dead_letters "
            f"WHERE topic = %(t)s GROUP BY partition, offset", parameters={"t": s.topic_telemetry}).result_rows

    # Other tests insert rows into `telemetry` by hand, at Kafka positions of their own
    # choosing: only rows stored from now on are this test's.
    since = client.query("SELECT toString(now64(3, 'UTC'))").result_rows[0][0]
    try:
        own_at = produce(s, s.topic_telemetry, cases)
        engine_at = produce(s, stack_topic, cases)
        positions = {at: i for i, at in enumerate(engine_at)}
        parts = sorted({p for p, _ in engine_at})
        lo = min(o for _, o in engine_at)

        def engine_rows():
            return [r for r in client.query(
                f"SELECT kafka_partition, kafka_offset, count() FROM {db}.telemetry "
                f"WHERE kafka_partition IN %(p)s AND kafka_offset >= %(lo)s AND ingested_at >= parseDateTime64BestEffort(%(since)s, 3, 'UTC') "
                f"GROUP BY kafka_partition, kafka_offset",
                parameters={"p": parts, "lo": lo, "since": since}).result_rows if (r[0], r[1]) in positions]

        def engine_dead():
            return [r for r in client.query(
                f"SELECT partition, offset, count(), min(length(error)), max(length(raw)) FROM {db}.dead_letters "
                f"WHERE topic = %(t)s AND partition IN %(p)s AND offset >= %(lo)s AND received_at >= parseDateTime64BestEffort(%(since)s, 3, 'UTC') "
                f"GROUP BY partition, offset",
                parameters={"t": stack_topic, "p": parts, "lo": lo, "since": since}).result_rows
                if (r[0], r[1]) in positions]

        def letters_in():
            letters.extend(m for m in letter_consumer.consume(500, 0.5) if m.error() is None)
            return letters

        # every path has seen everything it can see (or the time is up: the accounting says what is missing)
        _settle(lambda: running() and len(letters_in()) >= n_bad
                and scrape(metrics_port, "eco_readings_processed_total") >= n_valid, 120, interval=0)
        n_expiring = sum(c.expiring for c in cases)  # stored, but maybe gone already
        _settle(lambda: running() and len(sink_rows()) >= n_valid - n_expiring - n_repeats
                and len(sink_dead()) >= n_bad, 60)
        _settle(lambda: running() and len(engine_rows()) + len(engine_dead())
                >= len(cases) - n_expiring - (n_repeats if sink_mode else sum(not c.value for c in cases)), 90)
        time.sleep(3)  # anything extra (a duplicate) would arrive right behind
        letters_in()

        # every process still running, none restarted
        running()
        assert _stack_pids(stack) == stack_before, "a stack component died or was restarted"
        assert {k: v.get("restarts", 0) for k, v in stack.supervisor_state().items()} == restarts_before
        processed = scrape(metrics_port, "eco_readings_processed_total")
        dead_lettered = scrape(metrics_port, "eco_dead_letters_total")
        sink_stored, sink_lettered = sink_rows(), sink_dead()
        engine_stored, engine_lettered = engine_rows(), engine_dead()
        query = named_queries.load_named("unaccounted_offsets")
        holes = client.query(query.sql(stack_settings), parameters=query.bind({"since": since})).result_rows
    finally:
        letter_consumer.close()
        stop(worker)
        stop(sink)

    # processor: every hostile message in its dead-letter topic once, with its reason;
    # processed + dead-lettered == sent
    own_positions = {at: i for i, at in enumerate(own_at)}
    lettered = Counter()
    for m in letters:
        h = dict(m.headers())
        i = own_positions[(int(h["source_partition"]), int(h["source_offset"]))]
        lettered[i] += 1
        assert h["reason"] and h["error"], (cases[i].label, h)
        assert len(m.value() or b"") <= plausibility.DEAD_LETTER_MAX_BYTES
    _assert_accounted("processor dead letters", cases, lettered, want_valid=False)
    assert (processed, dead_lettered) == (n_valid, n_bad), (processed, dead_lettered, n_valid, n_bad)

    # sink: each plausible reading stored once, each other message dead-lettered once, with an error
    expiring = {i for i, c in enumerate(cases) if c.expiring}
    _assert_readings_accounted("sink rows", cases, {own_positions[(p, o)]: n for p, o, n in sink_stored},
                               expiring, repeated)
    _assert_accounted("sink dead letters", cases, {own_positions[(p, o)]: n for p, o, n, *_ in sink_lettered},
                      want_valid=False)
    assert all(error > 0 for *_, error, _ in sink_lettered)
    assert max(raw for *_, raw in sink_lettered) <= plausibility.DEAD_LETTER_MAX_BYTES

    if sink_mode:
        # the stack's path is the sink as well: the same accounting, on the stack's topic
        stored = {positions[(p, o)]: n for p, o, n in engine_stored}
        dead = {positions[(p, o)]: n for p, o, n, *_ in engine_lettered}
        _assert_readings_accounted("telemetry rows (sink)", cases, stored, expiring, repeated)
        _assert_accounted("telemetry dead letters (sink)", cases, dead, want_valid=False)
        return
    # Kafka engine: the same, on the stack's topic, with two documented exceptions (README,
    # Guarantees): ClickHouse reads a corrupt union index as null (such a reading may be
    # stored), and it never sees a message without a payload ...
    stored = {positions[(p, o)]: n for p, o, n in engine_stored}
    dead = {positions[(p, o)]: n for p, o, n, *_ in engine_lettered}
    assert all(error > 0 for *_, error, _ in engine_lettered)
    assert max(raw for *_, raw in engine_lettered) <= plausibility.DEAD_LETTER_MAX_BYTES
    lenient = {i for i, c in enumerate(cases) if c.clickhouse_valid and not c.valid}
    print(f"Kafka engine: {len(lenient)} messages with a corrupt union index, {len(lenient & set(stored))} of them stored")
    for i in lenient:  # stored or dead-lettered, not both (nor neither, unless its reading expired)
        assert (i in stored) != (i in dead) or (cases[i].expiring and i not in dead), cases[i]
    _assert_accounted("Kafka-engine rows", cases, stored, want_valid=True, also=lenient | expiring)
    no_payload = {i for i, c in enumerate(cases) if not c.value}
    _assert_accounted("Kafka-engine dead letters", cases, dead, want_valid=False, also=lenient, unseen=no_payload)
    # ... but they leave holes, and the holes are listed
    unaccounted = {(p, o) for p, first, last, _ in holes for o in range(first, last + 1)} & set(positions)
    assert {engine_at[i] for i in no_payload} <= unaccounted <= {engine_at[i] for i in no_payload | expiring}


def _repeated_readings(cases: list[Case], oracle) -> list[list[int]]:
    """Groups of plausible cases that are one reading (same home_id, seq and ts: a
    copy of a good reading with a value mutated), in corpus order."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cases):
        if c.valid:
            r = oracle.reading(c.value)
            groups.setdefault((r["home_id"], r["seq"], r["ts"]), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _assert_readings_accounted(what: str, cases: list[Case], found: dict[int, int], expiring: set[int],
                               repeated: list[list[int]]) -> None:
    """The sink's rows: every plausible case once, except that of each group of cases
    that are one reading exactly one is stored (whichever came first to the sink)."""
    grouped = {i for g in repeated for i in g}
    _assert_accounted(what, cases, found, want_valid=True, also=expiring | grouped)
    for g in repeated:
        stored = sum(found.get(i, 0) for i in g)
        assert stored == 1 or (stored == 0 and any(i in expiring for i in g)), (
            what, [cases[i].label for i in g], stored)


def _assert_accounted(what: str, cases: list[Case], found: dict[int, int], want_valid: bool,
                      also: set[int] = frozenset(), unseen: set[int] = frozenset()) -> None:
    """``found`` (case index -> times seen) holds exactly the cases of the wanted kind,
    once each; cases in ``also`` may be there or not, those in ``unseen`` must not."""
    expected = {i for i, c in enumerate(cases) if c.valid == want_valid} - also - unseen
    twice = {cases[i].label: n for i, n in found.items() if n != 1}
    wrong = Counter(cases[i].label for i in set(found) - expected - also)
    missing = Counter(cases[i].label for i in expected - set(found))
    assert not twice and not wrong and not missing, json.dumps(
        {"what": what, "more than once": twice, "should not be here": wrong, "missing": missing}, default=str)
