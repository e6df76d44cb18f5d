"""Unit tests of registry.core: ids, versions, deletes, config, compatibility rules.

No I/O: the state is driven through its plan_* methods and apply(), exactly as the
server does (plan -> append -> apply), with a plain list standing in for the log.
"""

from __future__ import annotations

import json

import pytest

from infra.localstack.registry.core import (
    BACKWARD,
    BACKWARD_TRANSITIVE,
    FORWARD,
    FORWARD_TRANSITIVE,
    FULL,
    FULL_TRANSITIVE,
    NONE,
    RegistryError,
    RegistryState,
    check_compatibility,
    compatibility_problems,
    parse_avro,
    parse_version,
)


def record(*fields: dict, name: str = "Reading", namespace: str = "eco") -> dict:
    return {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}


def field(name: str, type_: object, **extra: object) -> dict:
    return {"name": name, "type": type_, **extra}


def text(schema: object) -> str:
    return json.dumps(schema)


V1 = record(field("home_id", "string"), field("power_w", "double"))


class Registry:
    """RegistryState plus the list of records it was built from (the log)."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self.log: list[dict] = []

    def _commit(self, rec: dict | None) -> None:
        if rec is not None:
            self.log.append(json.loads(json.dumps(rec)))  # records must survive JSON
            self.state.apply(rec)

    def register(self, subject: str, schema: object) -> int:
        schema_id, rec = self.state.plan_register(subject, schema if isinstance(schema, str) else text(schema))
        self._commit(rec)
        return schema_id

    def delete_version(self, subject: str, version: object, permanent: bool = False) -> int:
        number, rec = self.state.plan_delete_version(subject, version, permanent)
        self._commit(rec)
        return number

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        versions, rec = self.state.plan_delete_subject(subject, permanent)
        self._commit(rec)
        return versions

    def set_level(self, subject: str | None, level: str) -> None:
        self._commit(self.state.plan_set_compatibility(subject, level)[1])

    def replayed(self) -> RegistryState:
        fresh = RegistryState()
        assert fresh.apply_all(self.log) == []
        return fresh


def error_code(exc_info: pytest.ExceptionInfo) -> int:
    return exc_info.value.error_code


# ------------------------------------------------------------------- canonical form


def test_layout_differences_give_one_canonical_text():
    compact = text(V1)
    spaced = json.dumps(V1, indent=4)
    reordered = json.dumps({"fields": V1["fields"], "name": "Reading", "type": "record", "namespace": "eco"})
    qualified = json.dumps({"type": "record", "name": "eco.Reading", "fields": V1["fields"]})
    verbose_primitives = text(record(field("home_id", {"type": "string"}), field("power_w", {"type": "double"})))
    canonicals = {parse_avro(t).canonical for t in (compact, spaced, reordered, qualified, verbose_primitives)}
    assert len(canonicals) == 1


def test_meaningful_differences_give_different_canonical_texts():
    base = parse_avro(text(V1)).canonical
    assert parse_avro(text(record(field("home_id", "string"), field("power_w", "float")))).canonical != base
    assert parse_avro(text(record(field("power_w", "double"), field("home_id", "string")))).canonical != base
    assert parse_avro(text({**V1, "namespace": "other"})).canonical != base
    with_default = record(field("home_id", "string"), field("power_w", "double", default=0.0))
    assert parse_avro(text(with_default)).canonical != base


def test_canonical_text_is_stable_when_parsed_again():
    nested = record(
        field("meta", record(field("fw", {"type": "fixed", "name": "Fw", "namespace": "dev", "size": 4}), name="Meta")),
        field("same_fw", "dev.Fw"),
        field("kind", {"type": "enum", "name": "Kind", "symbols": ["A", "B"], "default": "A"}),
        field("kinds", {"type": "array", "items": "Kind"}),
        field("ts", {"type": "long", "logicalType": "timestamp-millis"}),
        field("tags", {"type": "map", "values": ["null", "string"]}, default={}),
    )
    once = parse_avro(text(nested)).canonical
    assert parse_avro(once).canonical == once
    as_json = json.loads(once)
    assert as_json["fields"][4]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    # Avro Java's layout: a namespace only where it changes, short references within it
    meta = as_json["fields"][0]["type"]
    assert (meta["name"], "namespace" in meta) == ("Meta", False)
    assert meta["fields"][0]["type"]["namespace"] == "dev"
    assert as_json["fields"][1]["type"] == "dev.Fw"
    assert as_json["fields"][3]["type"] == {"type": "array", "items": "Kind"}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "{not json",
        '"strnig"',  # unknown type
        text(record(field("a", "Missing"))),  # unknown named type
        text(record(field("a", "int", default="zero"))),  # default of the wrong type
        text(record(field("a", "int"), field("a", "long"))),  # duplicate field
        text({"type": "enum", "name": "E", "symbols": ["A", "A"]}),
    ],
)
def test_invalid_schemas_are_refused_with_42201(bad):
    with pytest.raises(RegistryError) as exc:
        parse_avro(bad)
    assert exc.value.http_status == 422 and error_code(exc) == 42201


def test_only_avro_without_references_is_accepted():
    state = RegistryState()
    with pytest.raises(RegistryError) as exc:
        state.plan_register("s", '{"type": "object"}', schema_type="JSON")
    assert error_code(exc) == 42201 and "JSON" in exc.value.message
    with pytest.raises(RegistryError) as exc:
        state.plan_register("s", text(V1), references=[{"name": "x", "subject": "y", "version": 1}])
    assert error_code(exc) == 42201
    assert state.plan_register("s", text(V1), schema_type="AVRO")[0] == 1


# ------------------------------------------------------------------ ids and versions


def test_same_schema_under_two_subjects_shares_one_id():
    reg = Registry()
    a = reg.register("a-value", V1)
    b = reg.register("b-value", json.dumps(V1, indent=2))
    assert a == b == 1
    other = reg.register("a-value", record(*V1["fields"], field("x", "int", default=0)))
    assert other == 2
    assert reg.state.versions("a-value") == [1, 2]
    assert reg.state.versions("b-value") == [1]
    assert [(e.subject, e.version) for e in reg.state.usages(1)] == [("a-value", 1), ("b-value", 1)]


def test_registering_an_existing_schema_again_writes_nothing():
    reg = Registry()
    reg.register("s", V1)
    schema_id, rec = reg.state.plan_register("s", json.dumps(V1, indent=3))
    assert (schema_id, rec) == (1, None)
    assert len(reg.log) == 1


def test_versions_and_latest():
    reg = Registry()
    reg.register("s", V1)
    reg.register("s", record(*V1["fields"], field("x", "int", default=0)))
    assert reg.state.get_version("s", 1).schema_id == 1
    assert reg.state.get_version("s", "latest").version == 2
    assert reg.state.get_version("s", -1).version == 2
    with pytest.raises(RegistryError) as exc:
        reg.state.get_version("s", 3)
    assert error_code(exc) == 40402
    with pytest.raises(RegistryError) as exc:
        reg.state.get_version("nope", 1)
    assert error_code(exc) == 40401


@pytest.mark.parametrize("spec", ["0", "-2", "abc", "1.5", str(2**31)])
def test_invalid_version_ids_are_42202(spec):
    with pytest.raises(RegistryError) as exc:
        parse_version(spec)
    assert error_code(exc) == 42202


def test_lookup_finds_the_version_of_a_schema():
    reg = Registry()
    reg.register("s", V1)
    entry = reg.state.lookup("s", json.dumps(V1, indent=1))
    assert (entry.version, entry.schema_id) == (1, 1)
    with pytest.raises(RegistryError) as exc:
        reg.state.lookup("s", text(record(field("other", "int"))))
    assert error_code(exc) == 40403
    with pytest.raises(RegistryError) as exc:
        reg.state.lookup("unknown", text(V1))
    assert error_code(exc) == 40401


def test_replaying_the_log_rebuilds_the_same_state():
    reg = Registry()
    reg.register("a", V1)
    reg.register("b", record(field("x", "int")))
    reg.register("a", record(*V1["fields"], field("y", "int", default=1)))
    reg.delete_version("a", 1)
    reg.set_level("b", NONE)
    fresh = reg.replayed()
    assert fresh.subjects() == ["a", "b"]
    assert fresh.versions("a") == [2]
    assert fresh.versions("a", deleted=True) == [1, 2]
    assert fresh.get_version("a", 2).schema_id == 3
    assert fresh.effective_compatibility("b") == NONE
    # and the next id continues where the old state would have
    assert fresh.plan_register("c", '"string"')[0] == reg.state.plan_register("c", '"string"')[0] == 4


def test_applying_a_record_twice_is_harmless():
    reg = Registry()
    reg.register("a", V1)
    reg.delete_version("a", 1)
    state = RegistryState()
    state.apply_all(reg.log + reg.log)
    assert state.versions("a", deleted=True) == [1]
    assert state.versions("a", deleted_only=True) == [1]


def test_malformed_records_are_skipped_and_reported():
    state = RegistryState()
    skipped = state.apply_all(
        [
            {"type": "SCHEMA", "subject": "a"},  # no version, id, schema
            {"type": "SCHEMA", "subject": "a", "version": 1, "id": 1, "schema": '"nope"'},
            {"type": "CONFIG", "subject": None, "compatibility": "SOMETIMES"},
            {"type": "NOOP", "marker": "x"},
            {"type": "SCHEMA", "subject": "a", "version": 1, "id": 7, "schema": '"string"'},
        ]
    )
    assert len(skipped) == 3
    assert state.subjects() == ["a"] and state.get_version("a", 1).schema_id == 7
    assert state.global_compatibility() == BACKWARD


# ----------------------------------------------------------------------------- deletes


def test_soft_deleted_version_is_hidden_but_its_schema_still_resolves():
    reg = Registry()
    reg.register("s", V1)
    reg.register("s", record(*V1["fields"], field("x", "int", default=0)))
    assert reg.delete_version("s", "latest") == 2
    assert reg.state.versions("s") == [1]
    assert reg.state.get_version("s", "latest").version == 1
    assert reg.state.get_version("s", 2, deleted=True).schema_id == 2
    # consumers must still decode old messages written with id 2
    assert reg.state.schema(2).canonical
    with pytest.raises(RegistryError) as exc:
        reg.delete_version("s", 2)
    assert error_code(exc) == 40406
    with pytest.raises(RegistryError) as exc:
        reg.delete_version("s", 1, permanent=True)
    assert error_code(exc) == 40407
    assert reg.delete_version("s", 2, permanent=True) == 2
    assert reg.state.versions("s", deleted=True) == [1]
    with pytest.raises(RegistryError) as exc:
        reg.state.schema(2)
    assert error_code(exc) == 40403


def test_subject_soft_delete_then_permanent_delete():
    reg = Registry()
    reg.register("s", V1)
    reg.register("t", V1)
    reg.set_level("s", NONE)
    with pytest.raises(RegistryError) as exc:
        reg.delete_subject("s", permanent=True)
    assert error_code(exc) == 40405
    assert reg.delete_subject("s") == [1]
    assert reg.state.subjects() == ["t"]
    assert reg.state.subjects(deleted=True) == ["s", "t"]
    assert reg.state.subjects(deleted_only=True) == ["s"]
    assert reg.state.subject_compatibility("s") is None  # the override went with it
    with pytest.raises(RegistryError) as exc:
        reg.state.versions("s")
    assert error_code(exc) == 40401
    with pytest.raises(RegistryError) as exc:
        reg.delete_subject("s")
    assert error_code(exc) == 40404
    assert reg.delete_subject("s", permanent=True) == [1]
    assert reg.state.subjects(deleted=True) == ["t"]
    with pytest.raises(RegistryError) as exc:
        reg.delete_subject("s", permanent=True)
    assert error_code(exc) == 40401
    assert reg.state.schema(1)  # still used by t


def test_registering_again_after_a_soft_delete_adds_a_version_with_the_same_id():
    reg = Registry()
    reg.register("s", V1)
    reg.delete_subject("s")
    assert reg.register("s", V1) == 1
    assert reg.state.versions("s") == [2]


def test_ids_are_never_reused_after_a_permanent_delete():
    reg = Registry()
    reg.register("s", V1)
    reg.delete_subject("s")
    reg.delete_subject("s", permanent=True)
    assert reg.register("t", record(field("x", "int"))) == 2
    assert reg.register("s", V1) == 1  # the same text keeps its id


# ------------------------------------------------------------------------------ config


def test_compatibility_levels_global_and_per_subject():
    reg = Registry()
    assert reg.state.global_compatibility() == BACKWARD
    assert reg.state.effective_compatibility("s") == BACKWARD
    reg.set_level("s", "full")
    assert reg.state.effective_compatibility("s") == FULL
    reg.set_level(None, NONE)
    assert reg.state.effective_compatibility("other") == NONE
    assert reg.state.effective_compatibility("s") == FULL
    old, rec = reg.state.plan_delete_compatibility("s")
    reg._commit(rec)
    assert old == FULL and reg.state.effective_compatibility("s") == NONE
    with pytest.raises(RegistryError) as exc:
        reg.state.plan_delete_compatibility("s")
    assert error_code(exc) == 40408
    reg._commit(reg.state.plan_delete_compatibility(None)[1])
    assert reg.state.global_compatibility() == BACKWARD
    with pytest.raises(RegistryError) as exc:
        reg.state.plan_set_compatibility(None, "SOMETIMES")
    assert error_code(exc) == 42203


# ------------------------------------------------------------------ compatibility rules


def can_read(reader: object, writer: object) -> list[str]:
    """Problems of reader-schema ``reader`` reading data written with ``writer``."""
    return check_compatibility(parse_avro(text(reader)), parse_avro(text(writer)))


def one(reader_type: object, writer_type: object) -> list[str]:
    """can_read() on a record with one field 'v' of the given types."""
    return can_read(record(field("v", reader_type)), record(field("v", writer_type)))


def test_added_field_needs_a_default():
    old = record(field("a", "int"))
    assert can_read(record(field("a", "int"), field("b", "string", default="")), old) == []
    problems = can_read(record(field("a", "int"), field("b", "string")), old)
    assert len(problems) == 1 and "'b'" in problems[0] and "default" in problems[0]


def test_fields_only_the_writer_has_are_skipped():
    assert can_read(record(field("a", "int")), record(field("a", "int"), field("gone", "string"))) == []


@pytest.mark.parametrize(
    "writer, reader",
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
        ("int", "int"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "long"),  # logical types are ignored
    ],
)
def test_allowed_promotions(writer, reader):
    assert one(reader, writer) == []


@pytest.mark.parametrize(
    "writer, reader",
    [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("double", "int"),
        ("string", "int"),
        ("boolean", "int"),
        ("null", "string"),
        ("int", "string"),
    ],
)
def test_refused_promotions(writer, reader):
    problems = one(reader, writer)
    assert len(problems) == 1
    assert "/Reading/v" in problems[0] and "type mismatch" in problems[0]


def test_unions():
    # a non-union writer is fine if some reader branch reads it
    assert one(["null", "int"], "int") == []
    assert one(["null", "long"], "int") == []  # via promotion
    # every writer branch must be readable
    assert one(["long", "string"], ["int", "string"]) == []
    problems = one("int", ["null", "int"])
    assert len(problems) == 1 and "null" in problems[0]
    problems = one(["int"], ["int", "string"])
    assert len(problems) == 1 and "'string'" in problems[0]
    problems = one(["null", "string"], "int")
    assert len(problems) == 1 and "matches no branch" in problems[0]


def enum(symbols: list[str], **extra: object) -> dict:
    return {"type": "enum", "name": "Kind", "symbols": symbols, **extra}


def test_enums():
    assert one(enum(["A", "B", "C"]), enum(["A", "B"])) == []  # reader knows more symbols
    problems = one(enum(["A"]), enum(["A", "B"]))
    assert len(problems) == 1 and "['B']" in problems[0]
    assert one(enum(["A", "U"], default="U"), enum(["A", "B"])) == []  # unknown -> default
    renamed = {**enum(["A", "B"]), "name": "Sort"}
    assert "name mismatch" in one(renamed, enum(["A", "B"]))[0]
    assert one({**renamed, "aliases": ["Kind"]}, enum(["A", "B"])) == []


def test_fixed_sizes_must_match():
    fixed = {"type": "fixed", "name": "Mac", "size": 6}
    assert one(fixed, fixed) == []
    problems = one({**fixed, "size": 8}, fixed)
    assert len(problems) == 1 and "size" in problems[0]


def test_arrays_and_maps_check_their_elements():
    assert one({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    problems = one({"type": "array", "items": "int"}, {"type": "array", "items": "long"})
    assert len(problems) == 1 and "/Reading/v/items" in problems[0]
    assert one({"type": "map", "values": "double"}, {"type": "map", "values": "float"}) == []
    problems = one({"type": "map", "values": "float"}, {"type": "map", "values": "double"})
    assert len(problems) == 1 and "/Reading/v/values" in problems[0]
    assert one({"type": "map", "values": "int"}, {"type": "array", "items": "int"}) != []


def test_nested_records_report_the_path_of_the_problem():
    def outer(inner_fields: list[dict]) -> dict:
        return record(field("meta", record(*inner_fields, name="Meta")))

    assert can_read(outer([field("fw", "string"), field("hw", "int", default=1)]), outer([field("fw", "string")])) == []
    problems = can_read(outer([field("fw", "int")]), outer([field("fw", "string")]))
    assert len(problems) == 1 and problems[0].startswith("/Reading/meta/fw:")
    problems = can_read(outer([field("fw", "string")]), record(field("meta", record(field("fw", "string"), name="Other"))))
    assert len(problems) == 1 and "name mismatch" in problems[0]


def test_named_references_and_recursive_types():
    def linked_list(*extra: dict) -> dict:
        return {
            "type": "record",
            "name": "Node",
            "fields": [field("value", "int"), *extra, field("next", ["null", "Node"], default=None)],
        }

    assert can_read(linked_list(), linked_list()) == []
    assert can_read(linked_list(field("label", "string", default="")), linked_list()) == []
    problems = can_read(linked_list(field("label", "string")), linked_list())
    assert len(problems) == 1 and "'label'" in problems[0]

    # a type defined once and referenced by name later is checked where it is used
    def pair(second_kind: str) -> dict:
        point = {"type": "record", "name": "Point", "fields": [field("x", second_kind)]}
        return record(field("first", point), field("second", "Point"))

    assert can_read(pair("double"), pair("float")) == []
    problems = can_read(pair("float"), pair("double"))
    assert {p.split(":")[0] for p in problems} == {"/Reading/first/x", "/Reading/second/x"}


def test_renamed_field_needs_an_alias_or_a_default():
    old = record(field("temp", "double"))
    assert can_read(record(field("temp_c", "double", aliases=["temp"])), old) == []
    assert "'temp_c'" in can_read(record(field("temp_c", "double")), old)[0]


# -------------------------------------------------------------------------- levels


def parsed(schema: dict):
    return parse_avro(text(schema))


A = record(field("a", "int"))
A_B_DEFAULT = record(field("a", "int"), field("b", "string", default=""))
A_B_REQUIRED = record(field("a", "int"), field("b", "string"))
EMPTY = record()
A_AS_STRING = record(field("a", "string", default=""))


@pytest.mark.parametrize(
    "level, new, history, compatible",
    [
        (NONE, A_AS_STRING, [A], True),
        (BACKWARD, A_B_DEFAULT, [A], True),
        (BACKWARD, A_B_REQUIRED, [A], False),  # new readers cannot fill b from old data
        (FORWARD, A_B_REQUIRED, [A], True),  # old readers ignore b
        (FORWARD, EMPTY, [A], False),  # old readers need a, which has no default
        (FORWARD, A, [A_B_DEFAULT], True),  # old reader has a default for b
        (FULL, A_B_DEFAULT, [A], True),
        (FULL, A_B_REQUIRED, [A], False),
        (FULL, EMPTY, [A], False),
        # the latest version alone accepts it, the first one does not
        (BACKWARD, A_AS_STRING, [A, EMPTY], True),
        (BACKWARD_TRANSITIVE, A_AS_STRING, [A, EMPTY], False),
        (FORWARD, A, [A_AS_STRING, A_B_DEFAULT], True),
        (FORWARD_TRANSITIVE, A, [A_AS_STRING, A_B_DEFAULT], False),
        (FULL, A_B_DEFAULT, [A_AS_STRING, A], True),
        (FULL_TRANSITIVE, A_B_DEFAULT, [A_AS_STRING, A], False),
        (FULL_TRANSITIVE, A_B_DEFAULT, [A, A], True),
    ],
)
def test_compatibility_levels(level, new, history, compatible):
    existing = [(i + 1, parsed(s)) for i, s in enumerate(history)]
    problems = compatibility_problems(level, parsed(new), existing)
    assert (problems == []) is compatible, problems
    if not compatible:
        assert all(p.startswith(level) for p in problems)


def test_registration_enforces_the_subject_level_and_names_the_field():
    reg = Registry()
    reg.register("s", A)
    with pytest.raises(RegistryError) as exc:
        reg.register("s", A_B_REQUIRED)
    assert exc.value.http_status == 409 and error_code(exc) == 409
    assert "'b'" in exc.value.message and "version 1" in exc.value.message
    assert len(reg.log) == 1  # nothing written
    reg.set_level("s", FORWARD)
    assert reg.register("s", A_B_REQUIRED) == 2


def test_soft_deleted_versions_are_not_checked():
    reg = Registry()
    reg.register("s", A)
    reg.delete_version("s", 1)
    assert reg.register("s", A_AS_STRING) == 2  # would break BACKWARD against version 1


def test_test_compatibility_against_one_version_or_all():
    reg = Registry()
    reg.set_level("s", BACKWARD_TRANSITIVE)
    reg.register("s", A)
    reg.register("s", EMPTY)
    new = text(A_AS_STRING)
    assert reg.state.test_compatibility("s", new, "latest") == []  # one version: not transitive
    assert reg.state.test_compatibility("s", new, 1) != []
    assert reg.state.test_compatibility("s", new, None) != []  # all, as registration would
    assert reg.state.test_compatibility("fresh", new, "latest") == []
    with pytest.raises(RegistryError) as exc:
        reg.state.test_compatibility("s", new, 9)
    assert error_code(exc) == 40402
