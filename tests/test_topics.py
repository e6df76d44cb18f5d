"""`ecoretrofit topics`: the contract is generated from the code, and docs/topics.md is
exactly what it generates (regenerate: ecoretrofit topics --format markdown --output docs/topics.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import schemas
from ecoretrofit import topics, topics_cli
from ecoretrofit.config import Settings
from schemas.topics import TOPICS, partitions_by_name

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "topics.md"
REGENERATE = "ecoretrofit topics --format markdown --output docs/topics.md"


def run_cli(tmp_path, *argv: str, settings: Settings | None = None) -> str:
    parser = argparse.ArgumentParser()
    topics_cli.add_arguments(parser)
    out = tmp_path / "out.txt"
    args = parser.parse_args([*argv, "--output", str(out)])
    assert topics_cli.run(args, settings or Settings()) == 0
    return out.read_text()


def test_committed_doc_is_what_the_command_generates(tmp_path):
    generated = run_cli(tmp_path, "--format", "markdown")
    assert DOC.exists(), f"docs/topics.md is missing: {REGENERATE}"
    assert DOC.read_text() == generated, f"docs/topics.md is stale: {REGENERATE}"


def test_every_topic_the_platform_owns_is_described():
    s = Settings()
    described = {c.name for c in topics.contracts(s)}
    assert described == set(partitions_by_name(s)) == {t.name for t in TOPICS}
    for c in topics.contracts(s):
        assert c.partitions == partitions_by_name(s)[c.name]


def test_every_schema_field_with_type_and_doc_is_in_both_formats(tmp_path):
    text = run_cli(tmp_path, "--format", "text")
    markdown = run_cli(tmp_path, "--format", "markdown")
    for name in (schemas.TELEMETRY_READING, schemas.ANOMALY_EVENT):
        for field in schemas.schema_dict(name)["fields"]:
            assert f"`{field['name']}`" in markdown
            assert f" {field['name']} " in text
            if field.get("doc"):
                assert field["doc"] in text
                assert field["doc"].replace("|", "\\|") in markdown
    assert "long (timestamp-millis)" in text and "double or null" in text
    for needle in ("BACKWARD", "event_id", "At-least-once", "murmur2", "source_offset", "cleanup.policy"):
        assert needle in text and needle in markdown, needle


def test_settings_drive_names_and_partitions(tmp_path):
    s = Settings(topic_anomalies="team.anomalies.v9", anomalies_partitions=12)
    text = run_cli(tmp_path, settings=s)
    assert "team.anomalies.v9: anomaly events" in text
    assert "team.anomalies.v9-value" in text
    section = text.split("team.anomalies.v9: anomaly events", 1)[1]
    assert "partitions:    12" in section.split("\n\n", 1)[0]


def test_every_schemad_topic_carries_its_declared_schema_and_compatibility():
    s = Settings(topic_alerts="team.alerts.v2")
    by_name = {c.name: c for c in topics.contracts(s)}
    for declared in TOPICS:
        c = by_name[declared.name_in(s)]
        assert c.schema == declared.value_schema and c.subject == declared.subject(s)
        assert ("BACKWARD" in c.compatibility) == (declared.compatibility == "BACKWARD")
    assert by_name["team.alerts.v2"].subject == "team.alerts.v2-value"


def test_type_rendering():
    assert topics.type_name(["null", "double"]) == "double or null"
    assert topics.type_name({"type": "long", "logicalType": "timestamp-millis"}) == "long (timestamp-millis)"
    assert topics.type_name({"type": "array", "items": "string"}) == "array of string"
    assert topics.type_name({"type": "enum", "name": "Sev", "symbols": ["a", "b"]}) == "enum Sev (a, b)"
    assert topics.type_name(["null", "string", "long"]) == "null or string or long"
