"""The Kafka-engine path (telemetry_queue -> telemetry_mv -> telemetry) across ten
warehouse restarts while readings are produced: every reading stored exactly once.

What made it lose and stall before: the warehouse process exited with its Kafka-engine
consumers still members of their consumer group (closing chdb's connection does not
shut its server down), so the next start's rebalance handed partitions to dead members:
nothing read them, yet their committed offsets looked complete. The service now stops
the consumers (DETACH of each Kafka table) before it exits.
"""
from __future__ import annotations

import threading
import time

from helpers import fresh_region, wait_for

RESTARTS = 10


def counts(client, table, region, first_ms, last_ms):
    return tuple(int(x) for x in client.query(
        f"SELECT count(), uniqExact(home_id, ts) FROM {table} WHERE region = {{r:String}} "
        "AND ts BETWEEN fromUnixTimestamp64Milli({a:Int64}) AND fromUnixTimestamp64Milli({b:Int64})",
        parameters={"r": region, "a": first_ms, "b": last_ms}).result_rows[0])


def test_ten_warehouse_restarts_under_load_store_every_reading_once(stack, stack_settings, record_property):
    from producers.producer import TelemetryProducer
    from producers.simulator import CitySimulator
    from sinks.warehouse import connect

    s = stack_settings
    region = fresh_region()
    homes = 500
    start_ms = int(time.time() * 1000) - 3_600_000
    sim = CitySimulator(homes, [region], seed=14, start_ms=start_ms)
    producer = TelemetryProducer(s)
    done = threading.Event()
    ticks = 0

    def produce():
        nonlocal ticks
        while not done.is_set():
            producer.send_columns(sim.tick_columns(start_ms + ticks * 1000))
            producer.poll(0)
            ticks += 1
            time.sleep(0.25)  # 2,000 readings/s
        producer.flush(60)

    client = connect(s)
    table = f"{s.clickhouse_database}.telemetry"
    thread = threading.Thread(target=produce)
    resumed = []
    thread.start()
    try:
        for _ in range(RESTARTS):
            time.sleep(2)
            stack.restart("warehouse")
            before = counts(connect(s), table, region, start_ms, start_ms + 10**9)[1]
            t0 = time.monotonic()
            # consumption resumes: more rows than right after the restart
            wait_for(lambda: counts(connect(s), table, region, start_ms, start_ms + 10**9)[1] > before,
                     90, 0.5, what="the Kafka engine to resume after a restart")
            resumed.append(time.monotonic() - t0)
    finally:
        done.set()
        thread.join()
        producer.close()
    produced = producer.stats.acked
    assert produced == homes * ticks
    last_ms = start_ms + (ticks - 1) * 1000
    client = connect(s)
    wait_for(lambda: counts(client, table, region, start_ms, last_ms)[1] >= produced, 90, 1,
             what="every reading in telemetry")
    time.sleep(3)  # a duplicate would land right behind
    rows, distinct = counts(client, table, region, start_ms, last_ms)
    report = (f"{RESTARTS} warehouse restarts while producing {produced:,} readings: {rows:,} rows, "
              f"{distinct:,} distinct; resumed after {', '.join(f'{r:.1f}' for r in resumed)} s")
    print(report)
    record_property("kafka_engine_restarts", report)
    assert (rows, distinct) == (produced, produced), report
