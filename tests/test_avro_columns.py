"""The columnar Avro encoder must write exactly what fastavro writes."""

from __future__ import annotations

import numpy as np
import pytest

import schemas
from ecoretrofit.avro_columns import ColumnarEncoder, UnsupportedSchema, zigzag_varint
from ecoretrofit.config import Settings
from ecoretrofit.serde import AvroDecoder, AvroEncoder
from producers.faults import FaultPlan
from producers.simulator import CitySimulator

START = 1_700_000_000_000


def test_identical_to_fastavro_on_simulated_ticks_with_dropouts_and_water_homes():
    plan = FaultPlan()
    plan.inject("H000003", "meter_dropout", START + 2_000, 5_000)
    columns_sim = CitySimulator(300, ["north", "south-east"], seed=9, start_ms=START, faults=plan)
    dict_sim = CitySimulator(300, ["north", "south-east"], seed=9, start_ms=START, faults=plan)
    text = schemas.schema_text(schemas.TELEMETRY_READING)
    columnar, reference = ColumnarEncoder(text, 77), AvroEncoder(text, 77)
    for _ in range(10):
        cols = columns_sim.tick_columns()
        rows = None if cols["emitted"].all() else np.flatnonzero(cols["emitted"])
        assert columnar.encode(cols, rows) == [reference.encode(r) for r in dict_sim.tick()]
    assert columns_sim.water_homes, "the city must include water homes for this test to mean anything"


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 2**31, -(2**31), 1_700_000_000_000, 2**62])
def test_zigzag_varint_round_trips_through_fastavro(value):
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "long"}]}
    raw = ColumnarEncoder(schema, 1).encode({"x": np.array([value])})[0]
    assert raw[5:] == zigzag_varint(value)
    assert AvroDecoder(lambda _id: __import__("json").dumps(schema)).decode(raw) == {"x": value}


def test_refuses_schemas_it_cannot_encode():
    nested = {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}]}
    with pytest.raises(UnsupportedSchema, match="a: type 'array'"):
        ColumnarEncoder(nested, 1)


def test_producer_counts_failures_when_the_broker_is_unreachable():
    """Delivery reports come for errors only: a failed reading must still be counted."""
    from producers.producer import TelemetryProducer

    settings = Settings.from_env({"ECO_DATA_DIR": "/tmp/eco-unit", "ECO_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    encoder = AvroEncoder(schemas.schema_text(schemas.TELEMETRY_READING), 1)
    producer = TelemetryProducer(settings, encoder=encoder, **{"message.timeout.ms": 500})
    sent = producer.send_columns(CitySimulator(20, ["north"], seed=1, start_ms=START).tick_columns())
    producer.flush(10)
    producer.close()
    stats = producer.stats
    assert (stats.sent, stats.acked, stats.failed, stats.in_flight) == (sent, 0, 20, 0)
    assert stats.errors == {"_MSG_TIMED_OUT": 20}


def test_mixed_nulls_in_a_run_of_nullable_doubles():
    schema = {"type": "record", "name": "R", "fields": [
        {"name": f, "type": ["null", "double"], "default": None} for f in ("a", "b", "c")]}
    cols = {"a": np.array([1.0, np.nan, np.nan, 4.0]), "b": np.array([2.0, np.nan, 5.0, np.nan]),
            "c": np.array([3.0, np.nan, 6.0, -0.5])}
    reference = AvroEncoder(schema, 1)
    expected = [reference.encode({k: (None if np.isnan(v[i]) else float(v[i])) for k, v in cols.items()})
                for i in range(4)]
    assert ColumnarEncoder(schema, 1).encode(cols) == expected


ALL_TYPES = {"type": "record", "name": "AllTypes", "fields": [
    {"name": "s", "type": "string"},
    {"name": "l", "type": "long"},
    {"name": "i", "type": "int"},
    {"name": "d1", "type": "double"},
    {"name": "b", "type": "boolean"},
    {"name": "d2", "type": "double"},
    {"name": "nd", "type": ["null", "double"], "default": None},
    {"name": "ns", "type": ["null", "string"], "default": None},
    {"name": "nl", "type": ["null", "long"], "default": None},
    {"name": "nb", "type": ["null", "boolean"], "default": None},
    {"name": "frozen", "type": "string"},
]}


def _random_columns(rng: np.random.Generator, n: int, frozen: np.ndarray) -> dict:
    words = ["", "a", "région-é", "x" * 200, "north", "south-east"]
    longs = rng.choice([0, 1, -1, 63, -64, 64, 8191, -8192, 2**31, -(2**31), 1_700_000_000_000, 2**62, -(2**63)],
                       size=n)
    return {
        "s": [words[k] for k in rng.integers(0, len(words), n)],
        "l": longs,
        "i": rng.integers(-(2**31), 2**31, n),
        "d1": rng.normal(size=n) * 1e6,
        "b": rng.random(n) < 0.5,
        "d2": rng.normal(size=n),
        "nd": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        "ns": [None if rng.random() < 0.3 else words[k] for k in rng.integers(0, len(words), n)],
        "nl": [None if rng.random() < 0.3 else int(v) for v in rng.integers(-1000, 10**12, n)],
        "nb": [None if rng.random() < 0.3 else bool(v) for v in rng.random(n) < 0.5],
        "frozen": frozen,
    }


def _as_records(cols: dict, n: int) -> list[dict]:
    out = []
    for k in range(n):
        rec = {}
        for name, col in cols.items():
            v = col[k]
            v = v.item() if hasattr(v, "item") else v
            rec[name] = None if isinstance(v, float) and name == "nd" and np.isnan(v) else v
        out.append(rec)
    return out


@pytest.mark.parametrize("n", [0, 1, 7, 500])
def test_identical_to_fastavro_on_every_field_type_with_and_without_a_row_selection(n):
    """Varints of every width (one value per batch or mixed), strings of mixed lengths
    (a list, and a read-only array encoded once and reused), booleans, every nullable
    kind with and without nulls, double runs on either side of other fields."""
    rng = np.random.default_rng(n)
    frozen = np.array([f"home-{k:0{1 + k % 4}d}" for k in range(n)], dtype=object)
    frozen.flags.writeable = False
    columnar, reference = ColumnarEncoder(ALL_TYPES, 5), AvroEncoder(ALL_TYPES, 5)
    for round_ in range(3):  # the read-only column comes back: its cached encoding is reused
        cols = _random_columns(rng, n, frozen)
        if round_ == 1:
            cols["l"] = np.full(n, 1_700_000_000_000 + round_)  # one value: encoded once
        expected = [reference.encode(r) for r in _as_records(cols, n)]
        assert columnar.encode(cols) == expected
        rows = np.flatnonzero(rng.random(n) < 0.6)
        assert columnar.encode(cols, rows) == [expected[k] for k in rows]


def test_a_writeable_string_array_is_encoded_afresh_each_time():
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    enc, ref = ColumnarEncoder(schema, 1), AvroEncoder(schema, 1)
    col = np.array(["ab", "c"], dtype=object)
    assert enc.encode({"s": col}) == [ref.encode({"s": "ab"}), ref.encode({"s": "c"})]
    col[0] = "changed"
    assert enc.encode({"s": col}) == [ref.encode({"s": "changed"}), ref.encode({"s": "c"})]
