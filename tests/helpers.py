"""Small helpers shared by the integration tests."""

from __future__ import annotations

import itertools
import socket
import time
import uuid


def wait_for(predicate, timeout: float, interval: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (and return it)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value {last!r})")


def unique(prefix: str) -> str:
    """A name no other test (or earlier run on the same stack) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Regions the test stack accepts beside the city's (ECO_EXTRA_REGIONS, see conftest.py):
# the warehouse stores only readings of known regions (schemas/plausibility.py), so a
# test that needs readings of its own takes a fresh region from this pool instead of
# inventing one. The simulator never places homes in them, so no other test's city
# writes there. A stack lives for one test session, so the pool suffices.
TEST_REGIONS = tuple(f"test-{i:03d}" for i in range(200))
_next_region = itertools.count()


def fresh_region() -> str:
    """A declared region no other test of this session uses."""
    return TEST_REGIONS[next(_next_region)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def home_ids(n: int) -> list[str]:
    """``n`` home ids no other test uses, in the form the plausibility contract accepts
    (``H`` + 9 digits)."""
    base = uuid.uuid4().int % 900_000_000 + 100_000_000
    return [f"H{(base + i) % 1_000_000_000:09d}" for i in range(n)]


def malformed_avro(good: bytes) -> dict[str, bytes]:
    """Three ways a Confluent-framed Avro message ``good`` can arrive broken: cut in
    half, a wrong magic byte, a schema id no registry knows."""
    return {
        "truncated": good[: len(good) // 2],
        "bad_magic": b"\x07" + good[1:],
        "unknown_schema": b"\x00\x7f\xff\xff\xf0" + good[5:],
    }


def own_worker_settings(stack_settings, name: str, **changes):
    """Settings for a worker of the test's own: own topics, app id and metrics port."""
    from ecoretrofit.admin import ensure_topics

    s = stack_settings.replace(
        topic_telemetry=f"eco.test.{name}", topic_anomalies=f"eco.test.{name}.anomalies",
        topic_alerts=f"eco.test.{name}.alerts", topic_deadletter=f"eco.test.{name}.deadletter",
        processor_app_id=f"eco-test-{name}", metrics_port=free_port() - 1, **changes,
    )
    ensure_topics(s, {s.topic_telemetry: 8, s.topic_anomalies: 4, s.topic_alerts: 4, s.topic_deadletter: 1})
    return s


def offset_recorder(offsets: dict):
    """``on_delivery=record(name)`` stores each delivered message's offset in ``offsets[name]``."""
    def record(name):
        def cb(err, msg):
            assert err is None, err
            offsets[name] = msg.offset()
        return cb
    return record


def consume_from_start(settings, topic: str, handle) -> None:
    """Call ``handle(message)`` for every message of ``topic``, read from the start
    until nothing arrived for 8 s (up to 30 s more for the first one: the group join).
    Count by consuming: the broker's watermarks are wrong."""
    from confluent_kafka import Consumer

    c = Consumer({**settings.kafka_client_config(), "group.id": unique("g"), "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.subscribe([topic])
    idle_since = time.monotonic() + 30
    try:
        while time.monotonic() - idle_since < 8:
            for msg in c.consume(5000, 0.5):
                if msg.error():
                    continue
                idle_since = time.monotonic()
                handle(msg)
    finally:
        c.close()


def readings_in_log(settings, region: str) -> set[tuple[str, int]]:
    """(home_id, ts) of every reading of ``region`` in the telemetry topic."""
    import schemas
    from ecoretrofit.serde import decoder_for

    dec = decoder_for(settings, schemas.TELEMETRY_READING)
    seen: set[tuple[str, int]] = set()

    def keep(msg) -> None:
        try:
            r = dec.decode(msg.value())
        except Exception:
            return
        if r["region"] == region:
            seen.add((r["home_id"], r["ts"]))

    consume_from_start(settings, settings.topic_telemetry, keep)
    return seen


class CityInBackground:
    """A simulated city producing one tick every ``interval_s`` on a thread of its own,
    while a test restarts or kills parts of the stack: load that keeps coming through
    the faults. ``with`` it; on leaving, the thread stops, everything sent is flushed,
    and an error of the producing thread is raised (unless the block raised already).
    ``ticks`` and ``acked`` say what went out."""

    def __init__(self, settings, sim, start_ms: int, interval_s: float, flush_s: float = 120.0):
        import threading

        from producers.producer import TelemetryProducer

        self.sim, self.start_ms, self.interval_s, self.flush_s = sim, start_ms, interval_s, flush_s
        self.producer = TelemetryProducer(settings)
        self.ticks = 0
        self.errors: list[BaseException] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)

    @property
    def acked(self) -> int:
        return self.producer.stats.acked

    def _produce(self) -> None:
        try:
            while not self._done.is_set():
                self.producer.send_columns(self.sim.tick_columns(self.start_ms + self.ticks * 1000))
                self.producer.poll(0)
                self.ticks += 1
                time.sleep(self.interval_s)
            self.producer.flush(self.flush_s)
        except BaseException as exc:  # raised in the test's thread on leaving
            self.errors.append(exc)

    def __enter__(self) -> "CityInBackground":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._done.set()
        self._thread.join()
        self.producer.close()
        if exc_type is None and self.errors:
            raise self.errors[0]
