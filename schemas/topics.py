"""Every topic the platform owns, declared once: name, partitions, key, value schema,
retention/compaction and schema compatibility.

Everything else derives from these declarations: the topics ``init`` and the local
stack create (``ecoretrofit.admin.ensure_topics``), the schemas they register, the
contracts ``ecoretrofit topics`` prints, the Kafka-engine DDL (``sinks.warehouse``),
the ``Settings`` defaults (``ECO_TOPIC_<KIND>`` and ``ECO_<KIND>_PARTITIONS`` override a
deployment's name and partition count) and the compose file (checked by
``tests/test_compose.py``).

Pure data, no I/O. ``settings`` below is anything with ``topic_<kind>`` (and
optionally ``<kind>_partitions``) attributes, normally ``ecoretrofit.config.Settings``.

>>> TELEMETRY.name, TELEMETRY.partitions, TELEMETRY.subject()
('eco.telemetry.v1', 8, 'eco.telemetry.v1-value')
>>> [t.kind for t in TOPICS]
['telemetry', 'anomalies', 'alerts', 'workorders', 'predictions', 'deadletter', 'schemas']
>>> dict(SCHEMAS.config)
{'cleanup.policy': 'compact', 'retention.ms': '-1'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from schemas import ALERT_EVENT, ANOMALY_EVENT, MAINTENANCE_PREDICTION, TELEMETRY_READING, WORK_ORDER

# Key encodings (what a consumer needs to know about the key bytes).
HOME_ID_KEY = "home_id"  # UTF-8 home id, no schema: partition = murmur2(key)
ASSET_ID_KEY = "asset_id"  # UTF-8 asset id (<home_id>-<type code>), no schema
SOURCE_KEY = "source"  # the original message's key bytes, unchanged
INTERNAL_KEY = "internal"  # private to the one service that owns the topic

# Subject compatibility of every schema'd topic (the contract of docs/topics.md).
BACKWARD = "BACKWARD"


@dataclass(frozen=True)
class Topic:
    kind: str  # short name: Settings.topic_<kind>, ECO_TOPIC_<KIND>
    name: str  # default name (a deployment may override it)
    partitions: int  # default partition count
    key: str  # HOME_ID_KEY, SOURCE_KEY or INTERNAL_KEY
    value_schema: str | None  # schemas/<value_schema>.avsc, registered as <name>-value
    config: Mapping[str, str] = field(default_factory=dict)  # broker topic config; {} = broker defaults
    compatibility: str | None = None  # registry compatibility of the value subject
    partitions_configurable: bool = True  # False: the count is part of the contract

    def name_in(self, settings) -> str:
        """This topic's name in a deployment."""
        return getattr(settings, f"topic_{self.kind}", self.name)

    def partitions_in(self, settings) -> int:
        if not self.partitions_configurable:
            return self.partitions
        return int(getattr(settings, f"{self.kind}_partitions", self.partitions))

    def subject(self, settings=None) -> str | None:
        """The registry subject of the value schema (TopicNameStrategy)."""
        if self.value_schema is None:
            return None
        return f"{self.name if settings is None else self.name_in(settings)}-value"

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")


TELEMETRY = Topic("telemetry", "eco.telemetry.v1", 8, HOME_ID_KEY, TELEMETRY_READING, compatibility=BACKWARD)
ANOMALIES = Topic("anomalies", "eco.anomalies.v1", 4, HOME_ID_KEY, ANOMALY_EVENT, compatibility=BACKWARD)
ALERTS = Topic("alerts", "eco.alerts.v1", 4, HOME_ID_KEY, ALERT_EVENT, compatibility=BACKWARD)
WORK_ORDERS = Topic("workorders", "eco.workorders.v1", 4, ASSET_ID_KEY, WORK_ORDER, compatibility=BACKWARD)
PREDICTIONS = Topic("predictions", "eco.predictions.v1", 4, ASSET_ID_KEY, MAINTENANCE_PREDICTION,
                    compatibility=BACKWARD)
# One partition: dead letters keep the order the processor met them in.
DEADLETTER = Topic("deadletter", "eco.deadletter.v1", 1, SOURCE_KEY, None, partitions_configurable=False)
# The schema registry's log: one partition (totally ordered) that must never expire,
# compacted with infinite retention, as Confluent's registry creates it.
SCHEMAS = Topic(
    "schemas", "_schemas", 1, INTERNAL_KEY, None,
    config=MappingProxyType({"cleanup.policy": "compact", "retention.ms": "-1"}),
    partitions_configurable=False,
)

TOPICS: tuple[Topic, ...] = (TELEMETRY, ANOMALIES, ALERTS, WORK_ORDERS, PREDICTIONS, DEADLETTER, SCHEMAS)
BY_KIND: Mapping[str, Topic] = MappingProxyType({t.kind: t for t in TOPICS})


def partitions_by_name(settings) -> dict[str, int]:
    """``{topic name: partitions}`` of every topic a deployment owns."""
    return {t.name_in(settings): t.partitions_in(settings) for t in TOPICS}


def config_of(settings, name: str) -> dict[str, str]:
    """Broker config of the topic called ``name`` in ``settings`` ({} if not ours)."""
    for t in TOPICS:
        if t.name_in(settings) == name:
            return dict(t.config)
    return {}
