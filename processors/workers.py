"""Faust workers (``ecoretrofit process``) started as subprocesses on topics of their
own: what the benchmarks, the fault evaluation through Kafka and the demo run.

Each worker gets a fresh app id (consumer group and changelogs of its own), its own
/metrics port, and the run's telemetry topic; anomalies go to a fresh topic unless
the caller names one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ecoretrofit import processes
from ecoretrofit.admin import ensure_topics, unique_topic
from ecoretrofit.config import Settings

PROCESSED = "eco_readings_processed_total"
DEAD_LETTERED = "eco_dead_letters_total"
LAST_EVENT = "eco_last_event_timestamp_seconds"
CPU = "process_cpu_seconds_total"


@dataclass
class Workers:
    procs: list[processes.Proc]
    metrics_ports: list[int]
    anomalies_topic: str

    def processed(self) -> float:
        """Readings processed so far, summed over the workers' /metrics."""
        return sum(processes.scrape(port, PROCESSED) for port in self.metrics_ports)

    def dead_lettered(self) -> float:
        """Messages the workers sent to the dead letters instead of scoring them."""
        return sum(processes.scrape(port, DEAD_LETTERED) for port in self.metrics_ports)

    def handled(self) -> float:
        """Readings processed or sent to the dead letters so far."""
        return self.processed() + self.dead_lettered()

    def progress(self, worker: int = 0) -> tuple[float, float, float]:
        """(readings handled, Unix time the worker finished the batch that scored the
        last of them, CPU seconds of the worker process) of one worker, from one
        snapshot of its /metrics: a rate from these does not depend on when, or how
        often, it was scraped."""
        got = processes.scrape_many(self.metrics_ports[worker], (PROCESSED, DEAD_LETTERED, LAST_EVENT, CPU))
        return got[PROCESSED] + got[DEAD_LETTERED], got[LAST_EVENT], got[CPU]

    def died(self) -> list[str]:
        return [p.name for p in self.procs if not p.running()]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def start_workers(settings: Settings, telemetry_topic: str, n: int = 1, offset_reset: str = "earliest",
                  label: str = "worker") -> Workers:
    """``n`` workers of one fresh app on ``telemetry_topic``; logs ``DATA_DIR/logs/<label>-<i>.log``."""
    app_id = f"eco-{label}-{uuid.uuid4().hex[:6]}"
    anomalies = unique_topic(f"{label}.anomalies")
    ensure_topics(settings, {anomalies: settings.anomalies_partitions})
    ports = [processes.free_port() for _ in range(n)]
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(processes.start_cli(settings, f"{label}-{i}", ["process"], env={
                "ECO_TOPIC_TELEMETRY": telemetry_topic, "ECO_TOPIC_ANOMALIES": anomalies,
                "ECO_PROCESSOR_APP_ID": app_id,
                "ECO_METRICS_PORT": str(port - 1),  # `process` adds its offset, 1
                "ECO_PROCESSOR_OFFSET_RESET": offset_reset,
            }))
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return Workers(procs, ports, anomalies)
