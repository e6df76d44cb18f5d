"""MQTT -> Kafka bridge: takes device readings from Mosquitto and produces them to the
telemetry topic, validated exactly as the HTTPS path validates them.

- Subscribes with a shared subscription (``$share/<group>/eco/+/telemetry``), so several
  bridges split the load, over TLS with its own credentials, QoS 1 and a persistent
  session (clean_session off, a stable client id): what arrives while a bridge is away
  waits in the broker.
- A message counts as delivered only after Kafka acknowledged it: acks are manual and
  the PUBACK goes out from Kafka's delivery callback. A bridge killed in between gets the
  message again when it reconnects.
- A bridge stopped on purpose (SIGTERM) unsubscribes, finishes what it holds and only
  then disconnects: a persistent session left in the shared group would keep being
  handed its share of the messages, waiting for a bridge that never comes back. A bridge
  that crashes keeps its session and resumes it under the same client id.
- The topic names the home (the broker's ACL lets a device write only its own); a
  payload that is not valid readings of that home goes to the dead-letter topic with the
  reason, and is then acknowledged: a bad message never blocks the ones behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ecoretrofit import metrics
from gateway.broker_auth import BRIDGE_USER, bridge_password
from gateway.devices import TOPIC_FILTER, home_of_topic
from gateway.kafka_out import AckedProducer
from gateway.limits import RecentSeqs
from gateway.readings import check_payload
from gateway.tls import tls_files

log = logging.getLogger(__name__)

MAX_ERROR_BYTES = 4096  # the dead letter's "error" header


class Bridge:
    def __init__(self, settings, producer: AckedProducer, client_id: str):
        self.settings = settings
        self.producer = producer
        self.recent = RecentSeqs()
        self._regions = settings.known_regions  # a property that builds a tuple: once, not per message
        # the labelled series, looked up once: labels() per message stood out in the bridge's profile
        self._series = {
            "messages": metrics.GATEWAY_REQUESTS.labels(transport="mqtt", status="received"),
            "readings": metrics.GATEWAY_READINGS.labels(transport="mqtt", outcome="stored"),
            "duplicates": metrics.GATEWAY_READINGS.labels(transport="mqtt", outcome="duplicate"),
            "dead_letters": metrics.GATEWAY_READINGS.labels(transport="mqtt", outcome="dead_letter"),
        }
        self.counts = {"messages": 0, "readings": 0, "duplicates": 0, "dead_letters": 0, "failed": 0}
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0  # messages received and not yet acknowledged or refused
        # home -> (topic, readings, ack) of messages that wait for other messages'
        # deliveries of some of their readings before they are acknowledged
        self._waiting: dict[str, list[tuple[str, dict[int, dict], Callable[[str | None], None]]]] = {}
        self._last_message = time.monotonic()
        self._unsubscribed = threading.Event()
        metrics.BRIDGE_IN_FLIGHT.set_function(lambda: self._in_flight)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(BRIDGE_USER, bridge_password(settings))
        c.tls_set(ca_certs=str(tls_files(settings).ca))
        c.manual_ack_set(True)
        c.enable_logger(log)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_unsubscribe = lambda *_: self._unsubscribed.set()
        self.client = c

    @property
    def subscription(self) -> str:
        return f"$share/{self.settings.mqtt_bridge_group}/{TOPIC_FILTER}"

    def run(self, stop: threading.Event) -> None:
        c = self.client
        c.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        c.loop_start()
        try:
            stop.wait()
            if self.connected.is_set():
                self._leave_group()
        finally:
            c.disconnect()
            c.loop_stop()

    def _leave_group(self, timeout_s: float = 30.0) -> None:
        """Unsubscribe, then wait until everything received is acknowledged and nothing
        more has arrived for a second (what the broker had queued for this session)."""
        self.client.unsubscribe(self.subscription)
        self._unsubscribed.wait(5.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._in_flight == 0 and time.monotonic() - self._last_message > 1.0
            if idle:
                return
            time.sleep(0.1)
        log.warning("stopping with %d messages unacknowledged: the broker redelivers them", self._in_flight)

    # ------------------------------------------------------------ callbacks
    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        # subscribing again on a resumed session is harmless and covers a new one
        client.subscribe(self.subscription, qos=1)
        self.connected.set()
        metrics.BRIDGE_CONNECTED.set(1)
        log.info("MQTT connected to %s:%s, subscribed to %s", self.settings.mqtt_host, self.settings.mqtt_port,
                 self.subscription)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        self.connected.clear()
        metrics.BRIDGE_CONNECTED.set(0)
        log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, _userdata, msg: mqtt.MQTTMessage) -> None:
        mid, qos = msg.mid, msg.qos

        def ack(error: str | None = None) -> None:
            with self._lock:
                self._in_flight -= 1
            if error is not None:  # Kafka did not take it: no PUBACK, the broker redelivers
                self._count("failed")
                log.warning("not acknowledged, will be redelivered: %s", error)
                return
            client.ack(mid, qos)

        with self._lock:
            self._in_flight += 1
            self._last_message = time.monotonic()
        self._count("messages")
        home = home_of_topic(msg.topic)
        if home is None:
            self._dead_letter(msg, "bad_topic", f"topic {msg.topic[:200]!r} is not eco/<home_id>/telemetry", ack)
            return
        checked = check_payload(msg.payload, home, now_ms=int(time.time() * 1000),
                                regions=self._regions, max_batch=self.settings.gateway_max_batch)
        if checked.errors:
            self._dead_letter(msg, "invalid", "; ".join(checked.errors), ack)
            return
        if checked.foreign:
            self._dead_letter(msg, "foreign_home", "; ".join(checked.foreign), ack)
            return
        by_seq = {r["seq"]: r for r in checked.readings}
        self._count("duplicates", len(checked.readings) - len(by_seq))
        self._produce(msg.topic, home, by_seq, ack)

    def _produce(self, topic: str, home: str, by_seq: dict[int, dict], ack) -> None:
        """Produce the readings no other message has delivered or is delivering; ``ack``
        once they are in Kafka and so are those another message was producing (a
        device's resend racing its first copy). Should that other message fail, this
        one produces them itself before acknowledging: its PUBACK must never stand for
        readings that are not in Kafka."""
        with self._lock:
            new, dup, busy = self.recent.classify(home, list(by_seq))
            self.recent.reserve(home, new)
        self._count("duplicates", len(dup))
        headers = [("source", b"gateway-mqtt"), ("mqtt_topic", topic.encode())]
        key = home.encode()

        def done(error: str | None) -> None:
            with self._lock:
                (self.recent.release if error else self.recent.commit)(home, new)
                if busy and error is None:
                    self._waiting.setdefault(home, []).append((topic, {s: by_seq[s] for s in busy}, ack))
            if error is None:
                self._count("readings", len(new))
            if error is not None or not busy:
                ack(error)
            self._resume_waiting(home)

        self.producer.send(self.settings.topic_telemetry,
                           [(key, self.producer.encode(by_seq[s]), headers) for s in new], done)

    def _resume_waiting(self, home: str) -> None:
        """Messages of ``home`` waiting on readings other messages were producing: those
        whose readings are all settled (delivered or failed) go on."""
        ready = []
        with self._lock:
            still = []
            for topic, readings, ack in self._waiting.pop(home, []):
                _new, _dup, busy = self.recent.classify(home, list(readings))
                (still if busy else ready).append((topic, readings, ack))
            if still:
                self._waiting[home] = still
        for topic, readings, ack in ready:
            self._produce(topic, home, readings, ack)  # delivered ones count as duplicates

    def _dead_letter(self, msg: mqtt.MQTTMessage, reason: str, error: str, ack) -> None:
        headers = [
            ("source_topic", f"mqtt:{msg.topic[:200]}".encode()),
            ("reason", reason.encode()),
            ("error", error.encode()[:MAX_ERROR_BYTES]),
        ]

        def done(err: str | None) -> None:
            if err is None:
                self._count("dead_letters")
            ack(err)

        self.producer.send(self.settings.topic_deadletter, [(msg.topic.encode()[:200], msg.payload, headers)], done)

    def _count(self, name: str, n: int = 1) -> None:
        if not n:
            return
        with self._lock:
            self.counts[name] += n
        series = self._series.get(name)
        if series is not None:
            series.inc(n)
