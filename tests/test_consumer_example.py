"""examples/consume_anomalies.py against the live local stack: anomaly events written
with the project's encoder come out of the example (which uses only confluent-kafka and
its registry client) decoded, every one of them, in order per home."""

from __future__ import annotations

import ast
import json
import queue
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import schemas
from confluent_kafka import Producer
from ecoretrofit import processes
from ecoretrofit.admin import ensure_topics
from ecoretrofit.serde import encoder_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "consume_anomalies.py"


def anomaly(home_id: str, n: int, ts: int) -> dict:
    return {
        "event_id": f"{home_id}/power_w/{ts}/zscore", "home_id": home_id, "region": "north",
        "metric": "power_w", "ts": ts, "detected_at": ts + 50, "value": 9000.0 + n, "score": 0.99,
        "detector": "zscore", "window_mean": 800.0, "window_std": 120.0, "window_count": 120,
        "zscore": 68.3 if n % 2 == 0 else None, "severity": "critical",
    }


def produce(settings, topic: str, homes: list[str], per_home: int) -> dict[str, list[str]]:
    """Interleave the homes' events; return each home's event ids in produced order."""
    encoder = encoder_for(settings, topic, schemas.ANOMALY_EVENT)
    producer = Producer(settings.producer_config())
    sent: dict[str, list[str]] = {h: [] for h in homes}
    ts = int(time.time() * 1000)
    for n in range(per_home):
        for home in homes:
            ts += 1
            event = anomaly(home, n, ts)
            producer.produce(topic, key=home.encode(), value=encoder.encode(event))
            sent[home].append(event["event_id"])
    assert producer.flush(30) == 0, "events not acknowledged"
    return sent


class Example:
    """The example as a subprocess, its stdout read line by line on a thread."""

    def __init__(self, settings, topic: str, *extra: str, stop_signal: int = signal.SIGINT):
        self.proc = processes.start(
            "example",
            [sys.executable, str(EXAMPLE), "--bootstrap", settings.kafka_bootstrap,
             "--registry", settings.schema_registry_url, "--topic", topic,
             "--group", f"example-test-{uuid.uuid4().hex[:8]}", "--from-beginning", *extra],
            None, cwd=EXAMPLE.parent, capture=True, stop_signal=stop_signal, stop_timeout=15,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def events(self, until, timeout: float) -> list[dict]:
        """Printed events until ``until(events)`` holds, the example exits, or timeout."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(got):
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            got.append(json.loads(line))
        return got

    def stop(self) -> tuple[int, str]:
        """The stop signal (by default SIGINT: Ctrl-C, what a user would press), SIGKILL after 15 s."""
        code = self.proc.stop()
        return code, self.proc.popen.stderr.read()


def assert_in_order_per_home(printed: list[dict], sent: dict[str, list[str]]) -> None:
    for home, ids in sent.items():
        mine = [e for e in printed if e["key"] == home]
        assert [e["value"]["event_id"] for e in mine] == ids, f"{home}: wrong events or order"
        assert len({e["partition"] for e in mine}) == 1, f"{home}: events on several partitions"
        offsets = [e["offset"] for e in mine]
        assert offsets == sorted(offsets)
        first = mine[0]["value"]
        assert first["home_id"] == home and first["metric"] == "power_w" and first["severity"] == "critical"
        assert isinstance(first["ts"], str) and first["ts"].startswith("20")  # timestamp-millis -> ISO time
        assert first["zscore"] == 68.3 and mine[1]["value"]["zscore"] is None


def test_example_imports_nothing_of_the_project():
    """Other teams copy the file: it may use the standard library and confluent-kafka only."""
    tree = ast.parse(EXAMPLE.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    tops = {m.split(".")[0] for m in modules}
    assert tops - sys.stdlib_module_names - {"__future__"} == {"confluent_kafka"}, tops
    assert '"session.timeout.ms": 6000' in EXAMPLE.read_text()


def test_example_prints_anomalies_of_the_anomalies_topic_in_order_per_home(stack_settings):
    s = stack_settings
    run = uuid.uuid4().hex[:8]
    homes = [f"EXAMPLE-{run}-H{i}" for i in range(3)]
    sent = produce(s, s.topic_anomalies, homes, per_home=4)
    # the topic is shared with the session's processor: other events may be printed
    # too; the test's homes are unique to this run
    example = Example(s, s.topic_anomalies, "--timeout", "60")
    wanted = sum(len(ids) for ids in sent.values())
    try:
        printed = example.events(lambda got: sum(e["key"] in sent for e in got) >= wanted, timeout=45)
    finally:
        code, stderr = example.stop()
    assert sum(e["key"] in sent for e in printed) == wanted, f"example printed {len(printed)} events; stderr: {stderr}"
    assert code == 0, stderr
    assert "assigned" in stderr
    assert all(e["topic"] == s.topic_anomalies for e in printed)
    assert_in_order_per_home(printed, sent)


def test_example_stops_after_max_messages(stack_settings):
    s = stack_settings
    topic = f"eco.anomalies.example-{uuid.uuid4().hex[:8]}"
    ensure_topics(s, {topic: s.anomalies_partitions})
    sent = produce(s, topic, ["H000001", "H000002"], per_home=3)
    example = Example(s, topic, "--max-messages", "6", "--timeout", "45")
    try:
        printed = example.events(lambda got: False, timeout=50)  # until it exits by itself
    finally:
        code, stderr = example.stop()
    assert code == 0, stderr
    assert len(printed) == 6 and "6 event(s)" in stderr, stderr
    assert_in_order_per_home(printed, sent)


def test_sigterm_stops_the_example_cleanly(stack_settings):
    """What `docker stop` sends: the example leaves the group and says what it printed,
    instead of dying on the signal."""
    s = stack_settings
    topic = f"eco.anomalies.example-{uuid.uuid4().hex[:8]}"
    ensure_topics(s, {topic: s.anomalies_partitions})
    example = Example(s, topic, "--timeout", "60", stop_signal=signal.SIGTERM)
    deadline = time.monotonic() + 30
    stderr_lines: list[str] = []
    try:
        while time.monotonic() < deadline and not any("assigned" in line for line in stderr_lines):
            line = example.proc.popen.stderr.readline()
            if not line:
                break
            stderr_lines.append(line)
    finally:
        code, stderr = example.stop()
    stderr = "".join(stderr_lines) + stderr
    assert any("assigned" in line for line in stderr_lines), stderr
    assert code == 0, stderr
    assert "0 event(s)" in stderr, stderr
