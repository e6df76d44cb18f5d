"""Admin clients shared by the local stack's supervisor, ``init`` and library code:
the S3 client from settings, buckets, topics and their schemas.

Topics, partition counts, broker configs and subject compatibility all come from
their declarations in ``schemas/topics.py``; nothing here restates them.
"""

from __future__ import annotations

import uuid

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from schemas import topics as declared


def s3_client(settings: Settings):
    """A boto3 S3 client for ``ECO_S3_*``: the local SeaweedFS or any S3 store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )


def ensure_buckets(settings: Settings, buckets: tuple[str, ...] | None = None) -> list[str]:
    """Create the buckets that are missing (default: the broker's and the lake's)."""
    s3 = s3_client(settings)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    wanted = (settings.s3_broker_bucket, settings.s3_lake_bucket) if buckets is None else buckets
    created = [b for b in wanted if b not in existing]
    for bucket in created:
        s3.create_bucket(Bucket=bucket)
    return created


def kafka_ok(bootstrap: str, timeout: float = 2.0) -> bool:
    """Does a broker answer a metadata request?"""
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def unique_topic(prefix: str) -> str:
    """A fresh topic name for a benchmark or an evaluation run (never one of ours)."""
    return f"eco.{prefix}.{uuid.uuid4().hex[:6]}"


def ensure_topics(settings: Settings, specs: dict[str, int] | None = None) -> list[str]:
    """Create missing topics explicitly (Tansu would auto-create with 4 partitions).

    ``specs`` is ``{name: partitions}``; default: every declared topic with the
    deployment's names and counts. Declared topics get their declared broker config.
    Returns the names created.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    specs = declared.partitions_by_name(settings) if specs is None else specs
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1, config=declared.config_of(settings, t))
               for t, n in specs.items() if t not in existing]
    for topic, fut in admin.create_topics(missing, operation_timeout=10).items() if missing else []:
        try:
            fut.result(timeout=15)
        except Exception as exc:  # created concurrently by someone else is fine
            if "already exists" not in str(exc).lower():
                raise CommandError(f"cannot create topic {topic}: {exc}") from None
    return [t.topic for t in missing]


def register_schemas(settings: Settings) -> dict[str, tuple[int, str]]:
    """Register every declared value schema under ``<topic>-value`` (TopicNameStrategy)
    and pin the subject's declared compatibility. Returns ``{subject: (id, level)}``."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    import schemas

    client = SchemaRegistryClient(settings.registry_client_config())
    out = {}
    for topic in declared.TOPICS:
        subject = topic.subject(settings)
        if subject is None:
            continue
        schema_id = client.register_schema(subject, Schema(schemas.schema_text(topic.value_schema), "AVRO"))
        if topic.compatibility:
            client.set_compatibility(subject_name=subject, level=topic.compatibility)
        out[subject] = (schema_id, topic.compatibility or "")
    return out
