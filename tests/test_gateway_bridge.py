"""The bridge's acknowledgements when a device's resend races its first copy (issue 12):
a message whose readings another message is still producing is acknowledged only once
those are in Kafka, and produces them itself if that other message failed.

Kafka cannot be made to fail one chosen delivery, so the producer here records the
deliveries and the test settles them; the messages go through the bridge's real
``on_message`` path (validation, dedupe, acknowledgement)."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import pytest

from ecoretrofit.config import Settings
from gateway.bridge import Bridge
from gateway.devices import telemetry_topic
from gateway_helpers import fresh_home, readings


class RecordingProducer:
    """Holds each send until the test settles it, as Kafka's delivery callback would."""

    def __init__(self):
        self.sends: list[tuple[list[int], object]] = []

    def encode(self, reading: dict) -> bytes:
        return json.dumps(reading["seq"]).encode()

    def send(self, _topic, messages, done) -> None:
        if not messages:
            done(None)
            return
        self.sends.append(([json.loads(v) for _k, v, _h in messages], done))


class AckRecorder:
    def __init__(self):
        self.acked: list[int] = []

    def ack(self, mid: int, _qos: int) -> None:
        self.acked.append(mid)


@pytest.fixture
def bridge(tmp_path):
    settings = Settings.from_env({"ECO_DATA_DIR": str(tmp_path)})
    producer = RecordingProducer()
    return Bridge(settings, producer, "unit-bridge"), producer, settings


def deliver(b: Bridge, client: AckRecorder, home: str, region: str, seqs, mid: int) -> None:
    msg = mqtt.MQTTMessage(mid=mid, topic=telemetry_topic(home).encode())
    msg.qos = 1
    msg.payload = json.dumps({"readings": readings(home, region, seqs)}).encode()
    b._on_message(client, None, msg)


def test_resend_acknowledged_only_after_the_first_copy_is_in_kafka(bridge):
    b, producer, settings = bridge
    home, client = fresh_home(), AckRecorder()
    deliver(b, client, home, settings.regions[0], range(0, 5), mid=1)
    deliver(b, client, home, settings.regions[0], range(0, 8), mid=2)  # the resend, plus 3 new
    assert [seqs for seqs, _ in producer.sends] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    producer.sends[1][1](None)  # the resend's own new readings are in Kafka ...
    assert client.acked == []  # ... but 0-4 are not yet: no PUBACK for it
    producer.sends[0][1](None)
    assert sorted(client.acked) == [1, 2]
    assert len(producer.sends) == 2  # nothing produced twice
    assert b.counts["readings"] == 8 and b._in_flight == 0


def test_resend_produces_what_the_failed_first_copy_did_not_store(bridge):
    b, producer, settings = bridge
    home, client = fresh_home(), AckRecorder()
    deliver(b, client, home, settings.regions[0], range(0, 5), mid=1)
    deliver(b, client, home, settings.regions[0], range(0, 8), mid=2)
    producer.sends[1][1](None)
    producer.sends[0][1]("kafka: timed out")  # the first copy never reached Kafka
    assert client.acked == []  # mid 1 stays unacknowledged: the broker redelivers it
    assert [seqs for seqs, _ in producer.sends][2:] == [[0, 1, 2, 3, 4]]  # the resend stores them
    producer.sends[2][1](None)
    assert client.acked == [2]
    assert b.counts["readings"] == 8 and b.counts["failed"] == 1 and b._in_flight == 0
