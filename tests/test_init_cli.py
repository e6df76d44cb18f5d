"""`python -m infra.init_cli`, the docker-compose warehouse-init job, run against the
live local stack: every step succeeds, twice in a row (the job runs at every
`docker compose up`), and leaves topics, BACKWARD subjects, the lake bucket and the
ClickHouse tables in place."""

from __future__ import annotations

import os
import subprocess
import sys

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from ecoretrofit.admin import s3_client
from schemas.topics import TOPICS, partitions_by_name
from sinks import warehouse


def run_init(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infra.init_cli", "--wait", "30", *args],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, timeout=120,
        cwd=settings.data_dir,
    )


def test_init_job_prepares_the_cluster_and_is_idempotent(stack_settings):
    s = stack_settings
    for attempt in range(2):
        proc = run_init(s)
        assert proc.returncode == 0, f"run {attempt + 1}: {proc.stdout}{proc.stderr}"
        for step in ("topics", "schemas", "buckets", "ddl"):
            assert f"init: {step:<8} ok" in proc.stdout, proc.stdout

    topics = AdminClient({"bootstrap.servers": s.kafka_bootstrap}).list_topics(timeout=10).topics
    for topic, partitions in partitions_by_name(s).items():
        assert topic in topics and len(topics[topic].partitions) == partitions, topic

    registry = SchemaRegistryClient(s.registry_client_config())
    for topic in TOPICS:
        if topic.value_schema:
            assert registry.get_compatibility(topic.subject(s)) == topic.compatibility == "BACKWARD"

    buckets = {b["Name"] for b in s3_client(s).list_buckets()["Buckets"]}
    assert s.s3_lake_bucket in buckets

    tables = set(warehouse.connect(s).query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": s.clickhouse_database}
    ).result_columns[0])
    assert {"telemetry", "anomalies", "dead_letters"} <= tables


def test_init_job_reports_an_unreachable_endpoint(stack_settings):
    s = stack_settings.replace(clickhouse_url="http://127.0.0.1:9")  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "infra.init_cli", "--wait", "2", "--skip", "topics", "--skip", "schemas",
         "--skip", "buckets"],
        env={**os.environ, **s.env()}, capture_output=True, text=True, timeout=60, cwd=s.data_dir,
    )
    assert proc.returncode == 1
    assert "init: ddl failed after 2s" in proc.stderr, proc.stderr
