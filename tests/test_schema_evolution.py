"""Schema evolution against the live stack's registry (BACKWARD compatibility).

Each test works on its own subject (unique per run), registering the shipped
TelemetryReading schema as version 1, then evolving it:

- adding an optional field with a default is accepted, and both sides keep reading:
  an old consumer (the shipped schema as reader) reads data written with the new one,
  and a new consumer reads old data with the field's default;
- adding a required field, or changing a field's type, is refused with 409 and a
  message naming the field, and the subject is left as it was;
- removing a required field is BACKWARD compatible by Avro's rules (the new reader
  ignores it) yet breaks consumers still on the old schema: which is why the project's
  rule (schemas/__init__.py) forbids removals on top of the registry's check.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

import schemas
from ecoretrofit.serde import AvroDecoder, AvroEncoder, DecodeError, decoder_for

V1 = schemas.schema_text(schemas.TELEMETRY_READING)


def evolve(add: dict | None = None, drop: str | None = None, retype: tuple[str, object] | None = None) -> str:
    schema = json.loads(V1)
    fields = schema["fields"]
    if drop:
        fields[:] = [f for f in fields if f["name"] != drop]
    if retype:
        name, new_type = retype
        for f in fields:
            if f["name"] == name:
                f["type"] = new_type
    if add:
        fields.append(add)
    return json.dumps(schema)


CO2_OPTIONAL = {"name": "co2_ppm", "type": ["null", "double"], "default": None, "doc": "Indoor CO2, ppm."}
CO2_REQUIRED = {"name": "co2_ppm", "type": "double", "doc": "Indoor CO2, ppm."}


def reading(**extra) -> dict:
    r = {
        "home_id": "H000042", "region": "north", "ts": int(time.time() * 1000), "seq": 7,
        "indoor_temp_c": 21.5, "outdoor_temp_c": 4.0, "power_w": 850.0, "energy_kwh": 1234.5,
        "voltage_v": 231.0, "vibration_mm_s": 0.4, "water_flow_lpm": None, "water_temp_c": None,
        "uv_intensity_mw_cm2": None, "pump_pressure_bar": None,
    }
    r.update(extra)
    return r


@pytest.fixture
def registry(stack_settings) -> SchemaRegistryClient:
    return SchemaRegistryClient(stack_settings.registry_client_config())


@pytest.fixture
def subject(registry) -> str:
    """A fresh subject holding the shipped schema as version 1, compatibility BACKWARD."""
    name = f"eco-evolution-test-{uuid.uuid4().hex[:12]}-value"
    registry.register_schema(name, Schema(V1, "AVRO"))
    registry.set_compatibility(subject_name=name, level="BACKWARD")
    return name


def test_the_registry_defaults_to_backward(registry):
    assert registry.get_compatibility() == "BACKWARD"


def test_adding_an_optional_field_with_default_is_accepted(stack_settings, registry, subject):
    v1_id = registry.get_version(subject, 1).schema_id
    v2 = Schema(evolve(add=CO2_OPTIONAL), "AVRO")
    assert registry.test_compatibility(subject, v2) is True
    v2_id = registry.register_schema(subject, v2)
    assert v2_id != v1_id
    assert registry.get_versions(subject) == [1, 2]
    # (a fresh client: confluent-kafka caches get_latest_version answers)
    latest = SchemaRegistryClient(stack_settings.registry_client_config()).get_latest_version(subject)
    assert latest.version == 2 and latest.schema_id == v2_id and "co2_ppm" in latest.schema.schema_str


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(add=CO2_REQUIRED), "co2_ppm"),  # new reader cannot fill it from old data
        (dict(retype=("power_w", "string")), "power_w"),  # double -> string: no promotion
        (dict(retype=("seq", "int")), "seq"),  # long -> int narrows
    ],
    ids=["required-field-without-default", "double-to-string", "long-to-int"],
)
def test_breaking_changes_are_refused_with_a_clear_message(registry, subject, change, field):
    breaking = Schema(evolve(**change), "AVRO")
    assert registry.test_compatibility(subject, breaking) is False
    with pytest.raises(SchemaRegistryError) as info:
        registry.register_schema(subject, breaking)
    err = info.value
    assert err.http_status_code == 409, err
    assert err.error_code == 409, err
    message = err.error_message
    assert "incompatible" in message.lower(), message
    assert field in message, f"the message should name the field {field!r}: {message}"
    assert registry.get_versions(subject) == [1], "a refused schema must not become a version"


def test_old_consumer_reads_data_written_with_the_new_schema(stack_settings, registry, subject):
    v2_text = evolve(add=CO2_OPTIONAL)
    v2_id = registry.register_schema(subject, Schema(v2_text, "AVRO"))
    new = reading(co2_ppm=415.0)
    raw = AvroEncoder(v2_text, v2_id).encode(new)

    # the project's decoder with the shipped (old) schema as reader, writer schema by id
    old_consumer = decoder_for(stack_settings, schemas.TELEMETRY_READING)
    decoded = old_consumer.decode(raw)
    assert "co2_ppm" not in decoded
    assert decoded == {k: v for k, v in new.items() if k != "co2_ppm"}

    # and BACKWARD proper: a consumer on the new schema reads old data, with the default
    v1_id = registry.get_version(subject, 1).schema_id
    old_raw = AvroEncoder(V1, v1_id).encode(reading())
    new_consumer = AvroDecoder(lambda i: registry.get_schema(i).schema_str, reader_schema=v2_text)
    assert new_consumer.decode(old_raw)["co2_ppm"] is None


def test_removing_a_required_field_passes_backward_but_breaks_old_consumers(stack_settings, registry, subject):
    without_power = evolve(drop="power_w")
    # BACKWARD: the new schema reads old data (it ignores power_w), so the registry accepts
    v2_id = registry.register_schema(subject, Schema(without_power, "AVRO"))
    raw = AvroEncoder(without_power, v2_id).encode({k: v for k, v in reading().items() if k != "power_w"})
    # ...but a consumer still on the old schema has no default to fill power_w with
    with pytest.raises(DecodeError):
        decoder_for(stack_settings, schemas.TELEMETRY_READING).decode(raw)
