"""Every Prometheus metric the services expose, defined in one place.

Alert rules (infra/prometheus/) and dashboards refer to these names. Labels are
bounded by design: region, metric, severity, detector, topic, table, status. Never a
home id: at 100k homes a per-home label would be 100k series per metric.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# --- simulator / producer ---------------------------------------------------
READINGS_PRODUCED = Counter(
    "eco_readings_produced_total", "Readings handed to the Kafka client (failures: eco_produce_errors_total)", ["region"]
)
PRODUCE_ERRORS = Counter(
    "eco_produce_errors_total", "Readings the broker failed to acknowledge", ["reason"]
)
FAULTS_INJECTED = Counter(
    "eco_faults_injected_total", "Faults injected by the simulator (ground truth)", ["kind"]
)

# --- stream processor -------------------------------------------------------
READINGS_PROCESSED = Counter(
    "eco_readings_processed_total", "Readings scored by the processor", ["region"]
)
ANOMALIES = Counter(
    "eco_anomalies_total",
    "Anomaly events emitted",
    ["region", "metric", "severity", "detector"],
)
HOMES_IN_ALERT = Gauge(
    "eco_homes_in_alert",
    "Homes whose latest anomaly on a metric is recent (within the alert hold time)",
    ["region", "metric", "severity"],
)
DEAD_LETTERS = Counter(
    "eco_dead_letters_total", "Messages that could not be decoded", ["component", "topic", "reason"]
)
BATCH_SIZE = Histogram(
    "eco_batch_size",
    "Messages per processed or inserted batch",
    ["component"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000),
)
EVENT_LATENCY = Histogram(
    "eco_event_latency_seconds",
    "Wall-clock time from a reading's event time to its processing",
    ["component"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
LAST_EVENT_TS = Gauge(
    "eco_last_event_timestamp_seconds",
    "Unix time of the last event a component handled (stalls show as a flat line)",
    ["component"],
)
CHECKPOINTS = Counter(
    "eco_checkpoints_total", "Model checkpoints written to the state store", ["component"]
)

# --- maintenance worker (`ecoretrofit maintain`) --------------------------------
MAINTENANCE_MESSAGES = Counter(
    "eco_maintenance_messages_total",
    "Messages the maintenance worker read, by topic and outcome (used, dead_letter): their sum is what it consumed",
    ["topic", "outcome"],
)
MAINTENANCE_PUBLISHED = Counter(
    "eco_maintenance_published_total", "Records the maintenance worker produced", ["kind"]
)
MAINTENANCE_HELD_ORDERS = Gauge(
    "eco_maintenance_held_orders", "Work orders the maintenance worker holds until their home's telemetry catches up"
)

# --- sinks and warehouse ----------------------------------------------------
SINK_ROWS = Counter("eco_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_DUPLICATES = Counter("eco_sink_duplicates_total",
                          "Readings not stored again: their (home_id, seq) was stored already", ["table"])
SINK_BATCH_SECONDS = Histogram(
    "eco_sink_batch_seconds",
    "Time to insert one batch and commit its offsets",
    ["table"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
SINK_LAG_SECONDS = Gauge(
    "eco_sink_lag_seconds", "Age of the newest event the sink has stored", ["table"]
)
WAREHOUSE_QUERIES = Counter(
    "eco_warehouse_queries_total", "Queries answered by the warehouse service", ["kind", "status"]
)
WAREHOUSE_QUERY_SECONDS = Histogram(
    "eco_warehouse_query_seconds",
    "Warehouse query time",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
LAKE_OBJECTS = Counter("eco_lake_objects_total", "Lake objects ingested into the warehouse", ["status"])
LAKE_ROWS = Counter("eco_lake_rows_total", "Rows read from ingested lake objects")
WAREHOUSE_ROWS = Gauge("eco_warehouse_rows", "Rows stored per table", ["table"])

# --- consumer progress (read from the broker by `ecoretrofit consumers --serve`) --
# group and topic are bounded: our own groups and topics.
CONSUMER_COMMITTED = Gauge(
    "eco_consumer_committed_offset",
    "Committed offsets of a consumer group on a topic, summed over partitions (grows while it makes progress)",
    ["group", "topic"],
)
CONSUMER_LAG = Gauge(
    "eco_consumer_lag_messages", "Messages after a consumer group's committed offsets on a topic", ["group", "topic"]
)

# --- schema registry --------------------------------------------------------
REGISTRY_REQUESTS = Counter(
    "eco_registry_requests_total", "Schema registry HTTP requests", ["method", "status"]
)
REGISTRY_SCHEMAS = Gauge("eco_registry_schemas", "Schemas known to the registry")

# --- device gateway ---------------------------------------------------------
GATEWAY_REQUESTS = Counter(
    "eco_gateway_requests_total", "Device requests (HTTPS) and messages (MQTT) by outcome", ["transport", "status"]
)
GATEWAY_READINGS = Counter(
    "eco_gateway_readings_total", "Device readings by outcome (stored, duplicate, dead_letter)",
    ["transport", "outcome"],
)
BRIDGE_CONNECTED = Gauge("eco_bridge_connected", "1 while the MQTT bridge is connected and subscribed")
GATEWAY_KAFKA_ACK_SECONDS = Histogram(
    "eco_gateway_kafka_ack_seconds", "From handing a request's or message's readings to Kafka to Kafka's acknowledgement",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BRIDGE_IN_FLIGHT = Gauge("eco_bridge_in_flight_messages",
                         "MQTT messages the bridge received and has not yet acknowledged or refused")

_started: set[int] = set()
_lock = threading.Lock()


def serve(port: int, host: str = "127.0.0.1") -> bool:
    """Expose /metrics on ``host:port`` once per process; False if the port is taken
    (a second worker on the same machine then simply goes unscraped, rather than
    failing to start)."""
    with _lock:
        if port in _started:
            return True
        try:
            start_http_server(port, addr=host)
        except OSError:
            return False
        _started.add(port)
        return True


# Each service's /metrics port is Settings.metrics_port + its offset. The processor
# adds its worker index (0..3); the registry and warehouse serve /metrics on their
# own HTTP port instead.
PORT_OFFSETS = {"simulate": 0, "process": 1, "sink": 5, "demo": 6, "consumers": 7, "gateway": 8, "bridge": 9,
                "lake_ingest": 10, "maintain": 11,
                # the telemetry ingest sink the stack (and compose) runs (ECO_TELEMETRY_INGEST=sink)
                "telemetry_sink": 12}


def port_for(settings, service: str, index: int = 0) -> int:
    return settings.metrics_port + PORT_OFFSETS[service] + index
