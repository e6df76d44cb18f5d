"""Device-gateway benchmarks, each beside producing directly in the same run.

- throughput: readings/s into Kafka through HTTPS and through MQTT (device -> Mosquitto
  -> bridge -> Kafka), in batches and one reading per message, beside the bare
  confluent-kafka loop over the same readings pre-serialised (the ceiling);
- live: N devices at 1 Hz over MQTT (and over HTTPS), the lag from a reading's
  timestamp to its arrival in Kafka per 10 s window, and the RSS of the bridge, the
  broker and the gateway under that load.

The gateway and bridge started here produce to a topic of their own, so a benchmark
never pollutes the warehouse.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from statistics import median

import schemas
from bench.pipeline import _bare_produce
from ecoretrofit.admin import ensure_topics, unique_topic
from ecoretrofit.config import Settings
from ecoretrofit.processes import http_ok, scrape, start_cli
from ecoretrofit.serde import encoder_for

Report = dict
DEVICES_PER_PROCESS = 250


def _rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _readings(settings: Settings, homes: list[str], per_home: int) -> dict[str, list[dict]]:
    from producers.simulator import CitySimulator

    start = int(time.time() * 1000) - per_home * 1000
    sim = CitySimulator(len(homes), settings.regions, settings.seed, start)
    out: dict[str, list[dict]] = {h: [] for h in homes}
    for t in range(per_home):
        for r, h in zip(sim.tick(start + t * 1000), homes):
            out[h].append({**r, "home_id": h, "seq": t})
    return out


def _devices(settings: Settings, homes: list[str]) -> dict[str, tuple[str, str]]:
    from gateway.broker_auth import write_broker_auth
    from gateway.registry import DeviceRegistry, registry_path
    from infra.localstack.stack import LocalStack

    reg = DeviceRegistry(registry_path(settings))
    creds = {}
    for h in homes:
        created = reg.add(h, f"bench-{h}")
        creds[h] = (created.device.device_id, created.token)
    write_broker_auth(settings, reg)
    LocalStack(settings, log=lambda _l: None).reload_broker_auth()
    time.sleep(0.3)
    return creds


def _home_ids(n: int) -> list[str]:
    base = int(time.time()) % 10**6 * 100  # fresh homes every run
    return [f"H{800_000_000 + (base + i) % 10**8:09d}" for i in range(n)]


def _start_services(bs: Settings, https: bool, mqtt: bool) -> list:
    from gateway.tls import tls_files

    procs = []
    if https:
        g = start_cli(bs, "bench-gateway", ["gateway", "serve"])
        ctx = ssl.create_default_context(cafile=str(tls_files(bs).ca))
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"{bs.gateway_url}/healthz", verify=ctx, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        g.wait_healthy(up, 60)
        procs.append(g)
    if mqtt:
        b = start_cli(bs, "bench-bridge", ["gateway", "bridge", "--client-id", "bench-bridge"])
        b.wait_healthy(lambda: "subscribed to" in b.log_path.read_text(), 60)
        procs.append(b)
    return procs


# ------------------------------------------------------------ throughput
def _https_send(bs: Settings, creds, bodies: dict[str, list[bytes]]) -> float:
    """Every device in its own thread with its own connection (a synchronous client:
    httpx's AsyncClient cost ~40 ms per request here, the sync one under 1 ms)."""
    import httpx

    from gateway.tls import tls_files

    ctx = ssl.create_default_context(cafile=str(tls_files(bs).ca))
    accepted = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def device(home: str) -> None:
        headers = {"Authorization": f"Bearer {creds[home][1]}", "Content-Type": "application/json"}
        with httpx.Client(base_url=bs.gateway_url, verify=ctx, timeout=60) as client:
            for body in bodies[home]:
                while True:
                    r = client.post("/v1/telemetry", content=body, headers=headers)
                    if r.status_code == 200:
                        with lock:
                            accepted[0] += r.json()["accepted"]
                        break
                    if r.status_code not in (429, 503):
                        errors.append(f"gateway answered {r.status_code}: {r.text[:200]}")
                        return
                    time.sleep(float(r.headers.get("retry-after", "1")))

    threads = [threading.Thread(target=device, args=(h,)) for h in bodies]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return accepted[0] / (time.perf_counter() - t0)


def _mqtt_send(bs: Settings, creds, bodies: dict[str, list[bytes]], expected: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from gateway.devices import telemetry_topic
    from gateway.tls import tls_files

    port = bs.metrics_port + 9  # the bridge's /metrics (metrics.PORT_OFFSETS["bridge"])
    before = scrape(port, "eco_gateway_readings_total")
    clients = []
    for home in bodies:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{home}", protocol=mqtt.MQTTv5)
        c.username_pw_set(*creds[home])
        c.tls_set(ca_certs=str(tls_files(bs).ca))
        c.max_inflight_messages_set(100)
        c.connect(bs.mqtt_host, bs.mqtt_port)
        c.loop_start()
        clients.append((home, c))
    t0 = time.perf_counter()
    for home, c in clients:
        for body in bodies[home]:
            c.publish(telemetry_topic(home), body, qos=1)
    deadline = time.monotonic() + 300
    while scrape(port, "eco_gateway_readings_total") - before < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    got = scrape(port, "eco_gateway_readings_total") - before
    for _, c in clients:
        c.disconnect()
        c.loop_stop()
    if got < expected:
        raise RuntimeError(f"mqtt: {got:.0f} of {expected} readings reached Kafka")
    return got / elapsed


def _ack_latency_ms(bs: Settings, topic: str, payloads) -> float:
    """Median produce -> acknowledgement time of one message at a time: what a device
    waiting for its reply waits at least (Tansu acknowledges after its S3 write)."""
    from confluent_kafka import Producer

    p = Producer({**bs.producer_config(), "linger.ms": 0})
    times = []
    for key, value in payloads:
        t0 = time.perf_counter()
        p.produce(topic, value, key)
        p.flush(30)
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def bench_throughput(settings: Settings, devices: int = 64, batch: int = 100, batches: int = 12,
                     singles: int = 100) -> Report:
    topic = unique_topic("bench.gateway")
    ensure_topics(settings, {topic: settings.telemetry_partitions})
    bs = settings.replace(topic_telemetry=topic, gateway_rate_per_s=1000.0, gateway_rate_burst=1000)
    homes = _home_ids(devices * 4)
    creds = _devices(bs, homes)
    procs = _start_services(bs, https=True, mqtt=True)
    out: Report = {"devices": devices, "batch": batch}
    try:
        encoder = encoder_for(bs, topic, schemas.TELEMETRY_READING)
        sets = [homes[i * devices:(i + 1) * devices] for i in range(4)]  # fresh homes per path
        data = _readings(bs, homes, batch * batches)
        payloads = [(h.encode(), encoder.encode(r)) for h in sets[0] for r in data[h]]
        # enough messages that start-up and the final flush do not dominate the ceiling
        out["direct_readings_per_s"] = _bare_produce(bs, topic, payloads * max(1, 200_000 // len(payloads)))
        out["direct_ack_p50_ms"] = _ack_latency_ms(bs, topic, payloads[:50])

        def batched(hs):
            return {h: [json.dumps({"readings": data[h][i:i + batch]}).encode()
                        for i in range(0, batch * batches, batch)] for h in hs}

        def single(hs):
            return {h: [json.dumps(r).encode() for r in data[h][:singles]] for h in hs}

        out["https_batched_readings_per_s"] = _https_send(bs, creds, batched(sets[0]))
        out["mqtt_batched_readings_per_s"] = _mqtt_send(bs, creds, batched(sets[1]), devices * batch * batches)
        out["https_single_readings_per_s"] = _https_send(bs, creds, single(sets[2]))
        out["mqtt_single_readings_per_s"] = _mqtt_send(bs, creds, single(sets[3]), devices * singles)
    finally:
        for p in procs:
            p.stop()
    for k in ("https_batched", "mqtt_batched", "https_single", "mqtt_single"):
        out[f"{k}_ratio"] = out[f"{k}_readings_per_s"] / out["direct_readings_per_s"]
    return out


# ------------------------------------------------------------------ live
def _watch_lag(bs: Settings, homes: set[str], stop: threading.Event, samples: list, window_s: float = 10.0):
    """Consume the bench topic; per window: (t, readings, p50 lag ms, p99 lag ms)."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from ecoretrofit.serde import decoder_for

    decoder = decoder_for(bs, schemas.TELEMETRY_READING)
    c = Consumer({**bs.kafka_client_config(), "group.id": f"bench-lag-{time.time_ns()}",
                  "enable.auto.commit": False})
    parts = c.list_topics(bs.topic_telemetry, timeout=10).topics[bs.topic_telemetry].partitions
    c.assign([TopicPartition(bs.topic_telemetry, p, OFFSET_END) for p in parts])
    t0 = time.monotonic()
    lags: list[float] = []
    window_end = t0 + window_s
    try:
        while not stop.is_set():
            for msg in c.consume(5000, 0.2):
                if msg.error():
                    continue
                now = time.time() * 1000
                lags.append(now - decoder.decode(msg.value())["ts"])
            if time.monotonic() >= window_end:
                lags.sort()
                samples.append((window_end - t0, len(lags), lags[len(lags) // 2] if lags else None,
                                lags[int(len(lags) * 0.99)] if lags else None))
                lags = []
                window_end += window_s
    finally:
        c.close()


def bench_live(settings: Settings, devices: int = 1000, duration: float = 60.0,
               transports: tuple[str, ...] = ("mqtt", "https")) -> Report:
    from infra.localstack.stack import LocalStack

    out: Report = {"devices": devices, "duration_s": duration}
    for transport in transports:
        topic = unique_topic("bench.gateway.live")
        ensure_topics(settings, {topic: settings.telemetry_partitions})
        bs = settings.replace(topic_telemetry=topic)
        procs = _start_services(bs, https=transport == "https", mqtt=transport == "mqtt")
        server = procs[0]
        first = 900_000 + (int(time.time()) % 90) * 1000 + (0 if transport == "mqtt" else 50_000)
        # paho waits with select(): fds past 1024 fail, and each client holds 3, so one
        # process carries at most ~330 MQTT devices. Devices run in groups of 250.
        sims = []
        for g, start in enumerate(range(0, devices, DEVICES_PER_PROCESS)):
            n = min(DEVICES_PER_PROCESS, devices - start)
            buffer = bs.data_dir / "bench" / f"{topic}-{g}.sqlite"
            sims.append(start_cli(bs, f"bench-devices-{transport}-{g}",
                                  ["simulate", "--devices", transport, "--homes", str(n),
                                   "--first-home", str(first + start), "--duration", str(duration),
                                   "--buffer", str(buffer), "--drain", "60"]))
        stop = threading.Event()
        samples: list = []
        watcher = threading.Thread(target=_watch_lag, args=(bs, set(), stop, samples), daemon=True)
        watcher.start()
        rss: dict[str, list[float]] = {"server": [], "broker": [], "devices": []}
        broker_pid = LocalStack(bs, log=lambda _l: None).pid_of("mqtt")
        try:
            while any(s.running() for s in sims):
                for name, pid in (("server", server.pid), ("broker", broker_pid)):
                    v = _rss_mb(pid)
                    if v is not None:
                        rss[name].append(v)
                rss["devices"].append(sum(_rss_mb(s.pid) or 0 for s in sims))
                time.sleep(5)
            time.sleep(3)
        finally:
            stop.set()
            watcher.join(10)
            for s in sims:
                s.stop()
            for p in procs:
                p.stop()
        summary: dict = {}
        for s in sims:
            lines = [json.loads(line) for line in s.log_path.read_text().splitlines() if line.startswith("{")]
            for k, v in (lines[-1] if lines else {}).items():
                if isinstance(v, (int, float)):
                    summary[k] = summary.get(k, 0) + v
        # windows while devices were generating (the drain after the load is not "flat")
        full = [s for s in samples if s[1] > 0 and s[0] <= duration + 10]
        p50s = [s[2] for s in full]
        out[transport] = {
            "summary": summary,
            "lag_windows": samples,
            "lag_p50_first_ms": p50s[0] if p50s else None,
            "lag_p50_last_ms": p50s[-1] if p50s else None,
            # flat: no window's median lag more than twice the first's plus a second
            "lag_flat": bool(p50s) and max(p50s) <= 2 * p50s[0] + 1000,
            "server_rss_mb_max": max(rss["server"], default=None),
            "broker_rss_mb_max": max(rss["broker"], default=None) if transport == "mqtt" else None,
            "devices_rss_mb_max": max(rss["devices"], default=None),
        }
    return out


def print_report(results: dict) -> None:
    if "gateway" in results:
        r = results["gateway"]
        d = r["direct_readings_per_s"]
        print(f"gateway   direct produce (bare confluent-kafka, same readings) {d:>10,.0f} readings/s; "
              f"one message's ack p50 {r['direct_ack_p50_ms']:.0f} ms")
        for k, label in (("https_batched", f"HTTPS, batches of {r['batch']}"), ("mqtt_batched", f"MQTT, batches of {r['batch']}"),
                         ("https_single", "HTTPS, 1 reading/request"), ("mqtt_single", "MQTT, 1 reading/message")):
            print(f"          {label:<28} {r[k + '_readings_per_s']:>10,.0f} readings/s  ({r[k + '_ratio']:.1%} of direct, "
                  f"{r['devices']} devices)")
    if "gateway_live" in results:
        r = results["gateway_live"]
        for transport in ("mqtt", "https"):
            if transport not in r:
                continue
            t = r[transport]
            print(f"gateway   {r['devices']:,} {transport.upper()} devices at 1 Hz for {r['duration_s']:.0f}s: "
                  f"lag p50 first window {t['lag_p50_first_ms']:.0f} ms, last {t['lag_p50_last_ms']:.0f} ms "
                  f"({'flat' if t['lag_flat'] else 'GROWING'}); RSS max: "
                  f"{'bridge' if transport == 'mqtt' else 'gateway'} {t['server_rss_mb_max']:.0f} MB"
                  + (f", mosquitto {t['broker_rss_mb_max']:.0f} MB" if t["broker_rss_mb_max"] else "")
                  + f", device simulators {t['devices_rss_mb_max']:.0f} MB; {t['summary']}")
            for w, n, p50, p99 in t["lag_windows"]:
                if n:
                    print(f"          t={w:>4.0f}s {n:>7,} readings  lag p50 {p50:>7.0f} ms  p99 {p99:>7.0f} ms")
