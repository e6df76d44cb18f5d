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
import os
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
DEVICES_PER_PROCESS = 500


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


def _cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) ``pid`` has used."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


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
    write_broker_auth(settings, reg, reload=LocalStack(settings, log=lambda _l: None).reload_broker_auth)
    return creds


def _home_ids(n: int) -> list[str]:
    base = int(time.time()) % 10**6 * 100  # fresh homes every run
    return [f"H{800_000_000 + (base + i) % 10**8:09d}" for i in range(n)]


def _start_services(bs: Settings, https: bool, mqtt: bool, bridges: int = 1) -> list:
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
    for i in range(bridges if mqtt else 0):  # several bridges share the subscription
        name = "bench-bridge" if i == 0 else f"bench-bridge-{i}"
        b = start_cli(bs, name, ["gateway", "bridge", "--client-id", name])
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
def _watch_lag(bs: Settings, stop: threading.Event, samples: list, window_s: float = 10.0):
    """Consume the bench topic; per 10 s window of the readings' own ``ts`` (from the
    first reading seen): (t, readings, p50 lag ms, p99 lag ms, p50 seen lag ms). The lag is a reading's Kafka timestamp (set by the
    bridge's or gateway's producer as it hands the reading to Kafka) minus the device's
    ``ts``: the time the reading spent on the device, in the broker and in the bridge.
    The "seen" lag is when this consumer decoded it, which also counts this process's
    own delay on a loaded machine."""
    from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

    from ecoretrofit.serde import decoder_for

    decoder = decoder_for(bs, schemas.TELEMETRY_READING)
    c = Consumer({**bs.kafka_client_config(), "group.id": f"bench-lag-{time.time_ns()}",
                  "enable.auto.commit": False})
    parts = c.list_topics(bs.topic_telemetry, timeout=10).topics[bs.topic_telemetry].partitions
    c.assign([TopicPartition(bs.topic_telemetry, p, OFFSET_END) for p in parts])
    first_ts = None
    windows: dict[int, tuple[list[float], list[float]]] = {}  # window index -> (lags, seen lags)
    try:
        while not stop.is_set():
            for msg in c.consume(5000, 0.2):
                if msg.error():
                    continue
                now = time.time() * 1000
                ts = decoder.decode(msg.value())["ts"]
                kind, appended = msg.timestamp()
                if kind == TIMESTAMP_NOT_AVAILABLE:
                    appended = now
                first_ts = ts if first_ts is None else first_ts
                w = max(0, int((ts - first_ts) // (window_s * 1000)))
                lags, seen = windows.setdefault(w, ([], []))
                lags.append(appended - ts)
                seen.append(now - ts)
    finally:
        c.close()
    for w in sorted(windows):
        lags, seen = sorted(windows[w][0]), sorted(windows[w][1])
        samples.append(((w + 1) * window_s, len(lags), lags[len(lags) // 2], lags[int(len(lags) * 0.99)],
                        seen[len(seen) // 2]))


def bench_live(settings: Settings, devices: int = 1000, duration: float = 60.0,
               transports: tuple[str, ...] = ("mqtt", "https"), bridges: int = 1) -> Report:
    from infra.localstack.stack import LocalStack

    out: Report = {"devices": devices, "duration_s": duration, "bridges": bridges}
    for transport in transports:
        topic = unique_topic("bench.gateway.live")
        ensure_topics(settings, {topic: settings.telemetry_partitions})
        bs = settings.replace(topic_telemetry=topic)
        procs = _start_services(bs, https=transport == "https", mqtt=transport == "mqtt", bridges=bridges)
        server = procs[0]
        first = 900_000 + (int(time.time()) % 90) * 1000 + (0 if transport == "mqtt" else 50_000)
        # device processes of DEVICES_PER_PROCESS each: one per core at 1,000 devices
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
        watcher = threading.Thread(target=_watch_lag, args=(bs, stop, samples), daemon=True)
        watcher.start()
        rss: dict[str, list[float]] = {"server": [], "broker": [], "devices": []}
        broker_pid = LocalStack(bs, log=lambda _l: None).pid_of("mqtt")
        pids = {"server": [p.pid for p in procs], "broker": [broker_pid] if transport == "mqtt" else [],
                "devices": [s.pid for s in sims]}

        def cpu() -> dict[str, float]:
            return {name: sum(_cpu_s(p) or 0.0 for p in ps) for name, ps in pids.items()}

        cpu0, t_cpu0, loads, in_flight, ack_ms = cpu(), time.monotonic(), [], [], []
        # the first bridge's or the gateway's /metrics (metrics.PORT_OFFSETS)
        server_metrics = bs.metrics_port + (9 if transport == "mqtt" else 8)
        acks = (0.0, 0.0)
        try:
            while any(s.running() for s in sims):
                for name, ps in pids.items():
                    v = [_rss_mb(p) for p in ps]
                    if any(x is not None for x in v):
                        rss[name].append(sum(x or 0 for x in v))
                loads.append(_load_average())
                if transport == "mqtt":
                    in_flight.append(scrape(server_metrics, "eco_bridge_in_flight_messages"))
                now_acks = (scrape(server_metrics, "eco_gateway_kafka_ack_seconds_sum"),
                            scrape(server_metrics, "eco_gateway_kafka_ack_seconds_count"))
                if now_acks[1] > acks[1]:
                    ack_ms.append(round(1000 * (now_acks[0] - acks[0]) / (now_acks[1] - acks[1])))
                acks = now_acks
                if time.monotonic() - t_cpu0 <= duration + 5:
                    cpu1, t_cpu1 = cpu(), time.monotonic()
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
                if k == "tick_late_ms_max":  # the latest tick of any device process
                    summary[k] = max(summary.get(k, 0), v)
                elif isinstance(v, (int, float)):
                    summary[k] = summary.get(k, 0) + v
        # windows of readings taken while devices were generating
        full = [s for s in samples if s[0] <= duration]
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
            # share of one core each used while the devices generated (100 = one core)
            "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / max(t_cpu1 - t_cpu0, 1e-9))
                            for k in cpu0} if loads else {},
            "load_average_max": max(loads, default=None),
            # messages the (first) bridge held unacknowledged, every 5 s: Mosquitto hands
            # a client at most max_inflight_messages of them
            "bridge_in_flight": in_flight,
            # mean time from producing a message's (request's) readings to Kafka's ack, per 5 s
            "kafka_ack_ms": ack_ms,
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
            via = f" ({r.get('bridges', 1)} bridge(s))" if transport == "mqtt" else ""
            print(f"gateway   {r['devices']:,} {transport.upper()} devices{via} at 1 Hz for {r['duration_s']:.0f}s: "
                  f"lag p50 first window {t['lag_p50_first_ms']:.0f} ms, last {t['lag_p50_last_ms']:.0f} ms "
                  f"({'flat' if t['lag_flat'] else 'GROWING'}); RSS max: "
                  f"{('bridges together' if r.get('bridges', 1) > 1 else 'bridge') if transport == 'mqtt' else 'gateway'} "
                  f"{t['server_rss_mb_max']:.0f} MB"
                  + (f", mosquitto {t['broker_rss_mb_max']:.0f} MB" if t["broker_rss_mb_max"] else "")
                  + f", device simulators {t['devices_rss_mb_max']:.0f} MB; {t['summary']}")
            print(f"          CPU while generating (% of one core): {t['cpu_percent']}; "
                  f"load average max {t['load_average_max']}"
                  + (f"; bridge in flight every 5 s: {[int(x) for x in t['bridge_in_flight']]}"
                     if t.get("bridge_in_flight") else "")
                  + f"; mean Kafka ack ms every 5 s: {t['kafka_ack_ms']}")
            for w, n, p50, p99, seen in t["lag_windows"]:
                print(f"          t={w:>4.0f}s {n:>7,} readings  lag p50 {p50:>7.0f} ms  p99 {p99:>7.0f} ms  "
                      f"(seen by the bench's consumer: p50 {seen:>7.0f} ms)")
