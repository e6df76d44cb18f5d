"""Device mode of the simulator: N homes send their readings the way real devices do,
through the device gateway (MQTT or HTTPS, with their own tokens over TLS) instead of
writing to Kafka.

Each device takes a reading every step and queues it in its on-disk buffer
(``DeviceBuffer``) with its own ``seq``; a sender per device ships the oldest queued
readings as one timestamped batch and forgets them only once the gateway has them
safe: over HTTPS a 200, given only after Kafka acknowledged; over MQTT a PUBACK that
says a subscription took them (they wait in the broker's persistent queue until a bridge
has them in Kafka), never one saying no subscription matched (``puback_outcome``).
While the link or the broker is down the buffer fills; afterwards it drains, oldest
first, with the readings' original timestamps. A device process killed and restarted
on the same buffer file goes on where it was.

Each MQTT device has its own paho client, all of a process's driven by its asyncio loop
(no thread per device); a client holds one descriptor.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field

from producers.device_buffer import DeviceBuffer
from producers.simulator import CitySimulator, home_id

log = logging.getLogger(__name__)

ACKED, RETRY, REFUSED = "acked", "retry", "refused"
# MQTT v5 PUBACK reason 0x10: the broker took the message and dropped it, no subscription
# matched. Mosquitto 2.0.11 restores persistent sessions and their queues from its store
# but not shared subscriptions, so after a broker restart every device publish gets this
# until a bridge has subscribed again (measured; issue 12 lost readings this way).
NO_MATCHING_SUBSCRIBERS = 0x10
SEND_TIMEOUT_S = 30.0
CONNECT_WAVE = 50
HTTPS_CONNECTIONS = 32


@dataclass
class OfflinePlan:
    """Devices whose link goes down for a while: the first ``homes`` of them, from
    ``at_s`` seconds after the start, for ``for_s`` seconds."""

    homes: int = 0
    at_s: float = 0.0
    for_s: float = 0.0

    def offline(self, index: int, elapsed_s: float) -> bool:
        return index < self.homes and self.at_s <= elapsed_s < self.at_s + self.for_s


@dataclass
class DeviceStats:
    sent_batches: int = 0
    acked_readings: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def puback_outcome(reason: int) -> str:
    """What a device does with a QoS 1 publish, given its PUBACK's reason code: forget the
    readings only when a bridge's subscription took them; with no subscriber they are
    gone, so send them again (a bridge that did get them deduplicates the resend).

    >>> puback_outcome(0x00), puback_outcome(NO_MATCHING_SUBSCRIBERS), puback_outcome(0x87)
    ('acked', 'retry', 'refused')
    """
    if reason == NO_MATCHING_SUBSCRIBERS:
        return RETRY
    return REFUSED if reason >= 0x80 else ACKED


# ------------------------------------------------------------------ links
class MqttLink:
    """One device's MQTT v5 connection, driven by the process's asyncio loop.

    paho runs here without a network thread of its own (its "external event loop" mode):
    the loop watches the socket (epoll) and calls ``loop_read``/``loop_write``, a keeper
    task calls ``loop_misc`` (keepalive) every second and reconnects. A thread per device
    made the simulator the costliest process of the 1,000-device bench (README: each
    thread woke in ``select()`` for every publish and PUBACK and handed the result to
    the loop through its self-pipe), and ``select()`` fails past descriptor 1024. Only
    the blocking TCP + TLS handshake runs in the loop's executor.
    """

    def __init__(self, settings, home: str, device_id: str, token: str, loop: asyncio.AbstractEventLoop):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from gateway.devices import telemetry_topic
        from gateway.tls import tls_files

        self.settings, self.loop, self.topic = settings, loop, telemetry_topic(home)
        self.connected = asyncio.Event()
        self._waiting: dict[int, asyncio.Future] = {}
        self._fd: int | None = None
        self._keeper: asyncio.Task | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(device_id, token)
        c.tls_set(ca_certs=str(tls_files(settings).ca))
        c.connect_timeout = 30.0  # a TLS handshake on a loaded machine can take seconds
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        c.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=30)  # sets the address only
        self.client = c
        self.online = False

    def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        if online:
            self._keeper = self.loop.create_task(self._keep_connected())
        else:
            self._stop_keeper()
            self.client.disconnect()
            self._lost("link down")

    async def _keep_connected(self) -> None:
        delay = 1.0  # between attempts that did not connect: 1 s doubling to 5 s, as paho's own loop
        while self.online:
            if self.client.socket() is None:
                try:
                    await self.loop.run_in_executor(None, self.client.reconnect)
                except (OSError, ValueError) as e:  # refused, timed out, TLS failed (ssl errors are OSErrors)
                    log.info("%s: connect failed: %s", self.topic, e)
            if self.client.socket() is not None:
                self.client.loop_misc()  # keepalive: PINGREQ, and drop a connection that stopped answering
            if self.connected.is_set():
                delay = 1.0
                await asyncio.sleep(1.0)
            else:  # connecting (CONNACK on its way), refused or failed
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _stop_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None

    # paho calls these from whichever thread it runs in: the loop's, or the executor's
    # during a (re)connect; the loop's own structures are touched only on its thread
    def _on_loop(self, fn, *args) -> None:
        if self.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _c, _u, sock) -> None:
        self._on_loop(self._watch, sock.fileno())

    def _on_socket_close(self, _c, _u, sock) -> None:
        self._on_loop(self._unwatch, sock.fileno())

    def _on_socket_register_write(self, _c, _u, sock) -> None:
        self._on_loop(self._watch_write, sock.fileno(), True)

    def _on_socket_unregister_write(self, _c, _u, sock) -> None:
        self._on_loop(self._watch_write, sock.fileno(), False)

    def _watch(self, fd: int) -> None:
        self._fd = fd
        self.loop.add_reader(fd, self._readable)

    def _unwatch(self, fd: int) -> None:
        if self._fd == fd:  # not a descriptor a newer connection reuses
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            self._fd = None

    def _watch_write(self, fd: int, on: bool) -> None:
        if self._fd != fd:
            return
        if on:
            self.loop.add_writer(fd, self.client.loop_write)
        else:
            self.loop.remove_writer(fd)

    def _readable(self) -> None:
        self.client.loop_read()
        sock = self.client.socket()
        # TLS may hold decrypted bytes the socket no longer signals: read them now
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            self.client.loop_read()
            sock = self.client.socket()

    def _on_connect(self, _c, _u, _f, reason_code, _p) -> None:
        if reason_code.is_failure:
            log.warning("%s: connect refused: %s", self.topic, reason_code)
        elif not self.online:  # the link went down while this connection was being made
            self._on_loop(self.client.disconnect)
        else:
            self._on_loop(self.connected.set)

    def _on_disconnect(self, *_args) -> None:
        self._on_loop(self._lost, "disconnected")

    def _lost(self, why: str) -> None:
        self.connected.clear()
        for fut in self._waiting.values():  # in flight: unknown fate, send again (deduplicated)
            if not fut.done():
                fut.set_result(RETRY)
        self._waiting.clear()

    def _on_publish(self, _c, _u, mid, reason_code, _p) -> None:
        self._on_loop(self._settle, mid, puback_outcome(reason_code.value), str(reason_code))

    def _settle(self, mid: int, result: str, reason: str) -> None:
        fut = self._waiting.pop(mid, None)
        if fut is None or fut.done():
            return
        if result == RETRY:
            log.warning("%s: not delivered (%s): sending again", self.topic, reason)
        fut.set_result(f"{REFUSED}:{reason}" if result == REFUSED else result)

    async def send(self, batch: list[dict]) -> str:
        await self.connected.wait()
        fut = self.loop.create_future()
        info = self.client.publish(self.topic, json.dumps({"readings": batch}), qos=1)
        if info.rc != 0:
            return RETRY
        self._waiting[info.mid] = fut
        try:
            return await asyncio.wait_for(fut, SEND_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._waiting.pop(info.mid, None)
            return RETRY

    def close(self) -> None:
        self._stop_keeper()
        self.online = False
        self.client.disconnect()
        if self.client.want_write():  # the DISCONNECT: the loop may not run again
            self.client.loop_write()
        if self._fd is not None:
            self._unwatch(self._fd)


class HttpsLink:
    """One device's HTTPS requests, sent from a thread pool through a shared synchronous
    client (measured: httpx's AsyncClient cost ~40 ms per request here, the sync client
    under 1 ms)."""

    def __init__(self, settings, client, token: str, pool):
        self.settings, self.client, self.token, self.pool = settings, client, token, pool
        self.connected = asyncio.Event()
        self.connected.set()
        self.online = True

    def set_online(self, online: bool) -> None:
        self.online = online
        (self.connected.set if online else self.connected.clear)()

    def _post(self, body: str) -> str:
        import httpx

        try:
            r = self.client.post("/v1/telemetry", content=body,
                                 headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        except httpx.HTTPError:
            return RETRY
        if r.status_code == 200:
            return ACKED
        if r.status_code in (429, 500, 502, 503, 504):
            return RETRY
        return f"{REFUSED}:{r.status_code} {r.text[:200]}"

    async def send(self, batch: list[dict]) -> str:
        await self.connected.wait()
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._post, json.dumps({"readings": batch}))

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ driver
def _pending(buffer: DeviceBuffer, homes: list[str]) -> dict[str, collections.deque]:
    """What each device left unsent in its buffer file (a previous run of it)."""
    return {h: collections.deque(buffer.oldest(h, 2**31)) for h in homes}


def provision(settings, buffer: DeviceBuffer, homes: list[str]) -> dict[str, tuple[str, str]]:
    """Credentials of every device: from its buffer file, or registered now (the local
    stack's registry; a real device would be given its token at installation)."""
    from gateway.broker_auth import write_broker_auth
    from gateway.registry import DeviceRegistry, registry_path

    registry = None
    creds = {}
    for home in homes:
        found = buffer.credentials(home)
        if found is None:
            registry = registry or DeviceRegistry(registry_path(settings))
            device_id = f"sim-{home}"
            if registry.get(device_id) is not None:  # buffer lost, device known: a new identity
                device_id = f"sim-{home}-{random.randrange(16**6):06x}"
            created = registry.add(home, device_id)
            buffer.save_credentials(home, device_id, created.token)
            found = (device_id, created.token)
        creds[home] = found
    if registry is not None:
        from infra.localstack.stack import LocalStack

        write_broker_auth(settings, registry, reload=LocalStack(settings, log=lambda _line: None).reload_broker_auth)
    return creds


async def run_devices(
    settings, *, homes: int, transport: str, buffer: DeviceBuffer, duration_s: float | None,
    first_home: int = 0, step_s: float = 1.0, batch_max: int = 500, offline: OfflinePlan | None = None,
    drain_s: float = 60.0, stop: asyncio.Event | None = None, seed: int | None = None,
) -> dict:
    """Run ``homes`` devices for ``duration_s`` (None: until ``stop``), then keep
    sending for up to ``drain_s`` until every buffer is empty. Returns counts."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    offline = offline or OfflinePlan()
    ids = [home_id(first_home + i) for i in range(homes)]
    creds = await loop.run_in_executor(None, provision, settings, buffer, ids)
    sim = CitySimulator(homes, settings.regions, settings.seed if seed is None else seed,
                        int(time.time() * 1000), step_ms=int(step_s * 1000))
    http_client = pool = None
    if transport == "https":
        import ssl
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        from gateway.tls import tls_files

        http_client = httpx.Client(
            base_url=settings.gateway_url, timeout=SEND_TIMEOUT_S,
            verify=ssl.create_default_context(cafile=str(tls_files(settings).ca)),
            limits=httpx.Limits(max_connections=HTTPS_CONNECTIONS, max_keepalive_connections=HTTPS_CONNECTIONS))
        pool = ThreadPoolExecutor(HTTPS_CONNECTIONS, thread_name_prefix="https-device")
        links = [HttpsLink(settings, http_client, creds[h][1], pool) for h in ids]
    elif transport == "mqtt":
        links = [MqttLink(settings, h, *creds[h], loop) for h in ids]
        # connect in waves: a thousand TLS handshakes at once time out on a small machine
        for i in range(0, len(links), CONNECT_WAVE):
            wave = links[i:i + CONNECT_WAVE]
            for link in wave:
                link.set_online(True)
            await asyncio.wait([asyncio.create_task(link.connected.wait()) for link in wave], timeout=60)
    else:
        raise ValueError(f"transport {transport!r}: mqtt or https")
    stats = DeviceStats()
    wake = [asyncio.Event() for _ in ids]
    generating = asyncio.Event()
    generating.set()
    # What each device still has to send, in memory beside the buffer file: readings go
    # in after the file has them and are forgotten in the file (one transaction for all
    # devices, each second) after the gateway acknowledged them. A read and a delete of
    # the file per reading and device, each a hop through the executor, made the
    # simulator the costliest process of the 1,000-device bench. A device restarted
    # before a delete reached the file sends those readings again (deduplicated).
    queues = await loop.run_in_executor(None, _pending, buffer, ids)
    acked: dict[str, int] = {}  # home -> last seq acknowledged and not yet forgotten in the file

    async def forget_acked() -> None:
        done = dict(acked)
        acked.clear()
        if done:
            await loop.run_in_executor(None, buffer.drop_through_many, done)

    async def forgetter() -> None:
        while True:
            await asyncio.sleep(step_s)
            await forget_acked()

    async def sender(i: int) -> None:
        home, link, queue = ids[i], links[i], queues[ids[i]]
        backoff = 0.5
        while True:
            if not queue:
                if not generating.is_set():
                    return
                wake[i].clear()
                await wake[i].wait()
                continue
            batch = list(itertools.islice(queue, batch_max))
            result = await link.send(batch)
            stats.sent_batches += 1
            if result == ACKED:
                for _ in batch:
                    queue.popleft()
                acked[home] = batch[-1]["seq"]
                stats.acked_readings += len(batch)
                backoff = 0.5
            elif result == RETRY:
                stats.retries += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:  # refused (revoked, forbidden, invalid): keep the readings, say so, stop
                stats.refused[result] = stats.refused.get(result, 0) + len(batch)
                log.error("device %s refused: %s", home, result)
                return

    senders = [asyncio.create_task(sender(i)) for i in range(homes)]
    forgetting = asyncio.create_task(forgetter())
    started = time.monotonic()
    next_tick = time.time()
    late_ms_max = 0.0  # how far behind its schedule a tick ran: readings carry the scheduled time
    try:
        while not stop.is_set() and (duration_s is None or time.monotonic() - started < duration_s):
            elapsed = time.monotonic() - started
            for i, link in enumerate(links):
                link.set_online(not offline.offline(i, elapsed))
            late_ms_max = max(late_ms_max, (time.time() - next_tick) * 1000)
            rows = sim.tick(int(next_tick * 1000))
            for r, h in zip(rows, ids):
                r["home_id"] = h
            for r in await loop.run_in_executor(None, buffer.append, rows):
                queues[r["home_id"]].append(r)
            for w in wake:
                w.set()
            next_tick += step_s
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.time()))
            except asyncio.TimeoutError:
                pass
        for link in links:
            link.set_online(True)
        generating.clear()
        for w in wake:
            w.set()
        await asyncio.wait(senders, timeout=drain_s)
    finally:
        for t in (*senders, forgetting):
            t.cancel()
        await asyncio.gather(*senders, forgetting, return_exceptions=True)
        await forget_acked()
        for link in links:
            link.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if http_client is not None:
            http_client.close()
    return {**buffer.totals(), "acked": stats.acked_readings, "batches": stats.sent_batches,
            "retries": stats.retries, "refused": stats.refused, "tick_late_ms_max": round(late_ms_max)}
