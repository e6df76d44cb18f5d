"""The registry's HTTP API, driven by the clients that will use it for real.

confluent-kafka's SchemaRegistryClient and Avro serdes talk to an in-process server on
a free port with a MemoryLog. The last test (integration) runs the server on a
KafkaLog against the local stack's broker and restarts it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import uuid

import httpx
import pytest
from confluent_kafka.schema_registry import ConfigCompatibilityLevel, Schema, SchemaRegistryClient, ServerConfig
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from ecoretrofit import processes
from infra.localstack.registry.server import RegistryServer
from infra.localstack.registry.store import KafkaLog, MemoryLog, StoreError
from helpers import free_port

TOPIC = "eco.telemetry.v1"
SUBJECT = f"{TOPIC}-value"

READING_V1 = {
    "type": "record",
    "name": "Reading",
    "namespace": "eco.test",
    "fields": [
        {"name": "home_id", "type": "string"},
        {"name": "power_w", "type": "double"},
    ],
}
# compatible: a new optional field with a default
READING_V2 = {
    **READING_V1,
    "fields": READING_V1["fields"] + [{"name": "voltage_v", "type": ["null", "double"], "default": None}],
}
# breaking: a new field without a default cannot be read from v1 data
READING_BROKEN = {**READING_V1, "fields": READING_V1["fields"] + [{"name": "region", "type": "string"}]}


# What the registry's writes need, and how Confluent's clients send it.
CREDENTIALS = ("eco", "test-secret")
AUTH = {"basic.auth.user.info": ":".join(CREDENTIALS)}


def avro(schema: dict, indent: int | None = None) -> Schema:
    return Schema(json.dumps(schema, indent=indent), "AVRO")


@pytest.fixture
def server():
    with RegistryServer(MemoryLog(), credentials=CREDENTIALS, port=0).start() as srv:
        yield srv


@pytest.fixture
def client(server):
    # No retries: a 5xx must fail the test at once, not after back-off.
    with SchemaRegistryClient({**AUTH, "url": server.url, "max.retries": 0}) as c:
        yield c


def sr_error(call, *args, **kwargs) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as exc:
        call(*args, **kwargs)
    return exc.value


def test_register_get_by_id_and_list(client):
    schema_id = client.register_schema(SUBJECT, avro(READING_V1))
    assert schema_id == 1
    # same schema, other layout, other subject: same id, as Confluent does
    assert client.register_schema("other-value", avro(READING_V1, indent=4)) == 1
    assert client.register_schema(SUBJECT, avro(READING_V1, indent=2)) == 1  # idempotent
    fetched = client.get_schema(1)
    assert json.loads(fetched.schema_str) == READING_V1
    assert fetched.schema_type == "AVRO"
    assert client.get_subjects() == ["eco.telemetry.v1-value", "other-value"]
    assert client.get_versions(SUBJECT) == [1]
    latest = client.get_latest_version(SUBJECT)
    assert (latest.schema_id, latest.version, latest.subject) == (1, 1, SUBJECT)
    found = client.lookup_schema(SUBJECT, avro(READING_V1, indent=1))
    assert (found.schema_id, found.version) == (1, 1)
    assert client.get_subjects_by_schema_id(1) == ["eco.telemetry.v1-value", "other-value"]
    assert [(v.subject, v.version) for v in client.get_schema_versions(1)] == [
        ("eco.telemetry.v1-value", 1),
        ("other-value", 1),
    ]
    assert client.get_schema_types() == ["AVRO"]


def test_serializer_to_deserializer_round_trip(client):
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    serializer = AvroSerializer(client, json.dumps(READING_V1))  # auto-registers
    deserializer = AvroDeserializer(client)
    data = serializer({"home_id": "H000042", "power_w": 812.5}, ctx)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1  # Confluent framing, id 1
    assert client.get_versions(SUBJECT) == [1]
    # a fresh client has no cache: the deserializer must fetch the writer schema by id
    with SchemaRegistryClient({**AUTH, "url": client._rest_client.base_urls[0]}) as fresh:
        assert AvroDeserializer(fresh)(data, ctx) == {"home_id": "H000042", "power_w": 812.5}
    assert deserializer(data, ctx) == {"home_id": "H000042", "power_w": 812.5}


def test_compatible_evolution_is_accepted_and_old_data_still_reads(client):
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    old_bytes = AvroSerializer(client, json.dumps(READING_V1))({"home_id": "H1", "power_w": 1.0}, ctx)
    assert client.register_schema(SUBJECT, avro(READING_V2)) == 2
    assert client.get_versions(SUBJECT) == [1, 2]
    assert client.test_compatibility(SUBJECT, avro(READING_V2)) is True
    # a consumer on the new schema reads data written with the old one
    reader = AvroDeserializer(client, json.dumps(READING_V2))
    assert reader(old_bytes, ctx) == {"home_id": "H1", "power_w": 1.0, "voltage_v": None}


def test_breaking_change_is_refused_with_409(client):
    client.register_schema(SUBJECT, avro(READING_V1))
    err = sr_error(client.register_schema, SUBJECT, avro(READING_BROKEN))
    assert err.http_status_code == 409 and err.error_code == 409
    assert "region" in err.error_message and "default" in err.error_message
    assert client.get_versions(SUBJECT) == [1]
    assert client.test_compatibility(SUBJECT, avro(READING_BROKEN)) is False
    # a serializer with auto-registration fails the same way
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    with pytest.raises(SchemaRegistryError):
        AvroSerializer(client, json.dumps(READING_BROKEN))({"home_id": "H", "power_w": 1.0, "region": "n"}, ctx)


def test_verbose_compatibility_check_explains(server, client):
    client.register_schema(SUBJECT, avro(READING_V1))
    url = f"{server.url}/compatibility/subjects/{SUBJECT}/versions/latest?verbose=true"
    answer = httpx.post(url, json={"schema": json.dumps(READING_BROKEN)}).json()
    assert answer["is_compatible"] is False
    assert len(answer["messages"]) == 1 and "'region'" in answer["messages"][0]
    answer = httpx.post(url, json={"schema": json.dumps(READING_V2)}).json()
    assert answer == {"is_compatible": True, "messages": []}
    quiet = httpx.post(url.replace("?verbose=true", ""), json={"schema": json.dumps(READING_BROKEN)}).json()
    assert quiet == {"is_compatible": False}


def test_per_subject_config(server, client):
    client.register_schema(SUBJECT, avro(READING_V1))
    assert client.get_compatibility() == "BACKWARD"
    err = sr_error(client.get_compatibility, SUBJECT)  # no subject-level setting yet
    assert (err.http_status_code, err.error_code) == (404, 40408)
    r = httpx.get(f"{server.url}/config/{SUBJECT}", params={"defaultToGlobal": "true"})
    assert r.json() == {"compatibilityLevel": "BACKWARD"}

    assert client.set_compatibility(SUBJECT, "NONE") == {"compatibility": "NONE"}
    assert client.get_compatibility(SUBJECT) == "NONE"
    assert client.get_compatibility() == "BACKWARD"  # global untouched
    assert client.register_schema(SUBJECT, avro(READING_BROKEN)) == 2  # NONE lets it through
    client.delete_config(SUBJECT)
    assert httpx.get(f"{server.url}/config/{SUBJECT}?defaultToGlobal=true").json()["compatibilityLevel"] == "BACKWARD"

    client.set_compatibility(level="FULL")
    assert client.get_compatibility() == "FULL"
    client.set_config(SUBJECT, ServerConfig(compatibility_level=ConfigCompatibilityLevel.FORWARD))
    assert client.get_config(SUBJECT).compatibility_level == "FORWARD"
    err = sr_error(client.set_compatibility, level="SOMETIMES")
    assert (err.http_status_code, err.error_code) == (422, 42203)


def test_not_found_and_invalid_codes(client):
    client.register_schema(SUBJECT, avro(READING_V1))
    cases = [
        (lambda: client.get_versions("nope"), 404, 40401),
        (lambda: client.get_version(SUBJECT, 9), 404, 40402),
        (lambda: client.get_schema(99), 404, 40403),
        (lambda: client.lookup_schema(SUBJECT, avro(READING_V2)), 404, 40403),
        (lambda: client.lookup_schema("nope", avro(READING_V1)), 404, 40401),
        (lambda: client.get_version(SUBJECT, "first"), 422, 42202),
        (lambda: client.register_schema(SUBJECT, Schema('{"type": "recrod"}', "AVRO")), 422, 42201),
        (lambda: client.register_schema(SUBJECT, Schema('syntax = "proto3";', "PROTOBUF")), 422, 42201),
    ]
    for call, status, code in cases:
        err = sr_error(call)
        assert (err.http_status_code, err.error_code) == (status, code), err


def test_deletes(client):
    client.register_schema(SUBJECT, avro(READING_V1))
    client.register_schema(SUBJECT, avro(READING_V2))
    assert client.delete_version(SUBJECT, 2) == 2
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_version(SUBJECT, 2, deleted=True).schema_id == 2
    assert json.loads(client.get_schema(2).schema_str) == READING_V2  # old data stays readable
    assert client.delete_subject(SUBJECT) == [1]
    assert client.get_subjects() == []
    assert client.get_subjects(deleted=True) == [SUBJECT]
    assert client.delete_subject(SUBJECT, permanent=True) == [1, 2]
    assert client.get_subjects(deleted=True) == []
    err = sr_error(client.get_versions, SUBJECT, deleted=True)
    assert err.error_code == 40401


def test_raw_http_shapes(server, client):
    client.register_schema(SUBJECT, avro(READING_V1))
    base = server.url
    r = httpx.get(f"{base}/schemas/ids/1")
    assert r.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert set(r.json()) == {"schema"} and json.loads(r.json()["schema"]) == READING_V1  # what ClickHouse reads
    assert httpx.get(f"{base}/schemas/ids/1?subject={SUBJECT}").json() == r.json()
    assert httpx.get(f"{base}/schemas/ids/1/schema").json() == READING_V1
    assert httpx.get(f"{base}/subjects/{SUBJECT}/versions/1/schema").json() == READING_V1
    assert httpx.get(f"{base}/subjects/{SUBJECT}/versions/-1").json() == {
        "subject": SUBJECT,
        "version": 1,
        "id": 1,
        "schema": r.json()["schema"],
    }
    assert httpx.get(f"{base}/").json() == {}
    assert httpx.get(f"{base}/mode").json() == {"mode": "READWRITE"}
    assert httpx.get(f"{base}/health").status_code == 200
    # plain JSON content type is accepted too
    r = httpx.post(
        f"{base}/subjects/plain-value/versions",
        content=json.dumps({"schema": '"string"'}),
        headers={"Content-Type": "application/json"},
        auth=CREDENTIALS,
    )
    assert r.json() == {"id": 2}
    bad = httpx.post(f"{base}/subjects/x/versions", content=b"{oops", headers={"Content-Type": "application/json"},
                     auth=CREDENTIALS)
    assert bad.status_code == 400 and "error_code" in bad.json()
    assert httpx.get(f"{base}/no/such/path").json()["error_code"] == 404
    # a subject name with a slash, URL-encoded by the client, stays one subject
    assert client.register_schema("a/b", avro(READING_V1)) == 1
    assert "a/b" in client.get_subjects()
    metrics = httpx.get(f"{base}/metrics").text
    assert 'eco_registry_requests_total{method="POST",status="200"}' in metrics
    assert "eco_registry_schemas 2.0" in metrics


def test_restart_on_the_same_log_keeps_ids_and_versions():
    memory = MemoryLog()
    with RegistryServer(memory, credentials=CREDENTIALS).start() as first:
        with SchemaRegistryClient({**AUTH, "url": first.url}) as c:
            c.register_schema(SUBJECT, avro(READING_V1))
            c.register_schema(SUBJECT, avro(READING_V2))
            c.set_compatibility(SUBJECT, "FULL")
    with RegistryServer(memory, credentials=CREDENTIALS).start() as second:
        with SchemaRegistryClient({**AUTH, "url": second.url}) as c:
            assert c.get_versions(SUBJECT) == [1, 2]
            assert c.get_version(SUBJECT, 2).schema_id == 2
            assert c.get_compatibility(SUBJECT) == "FULL"
            assert c.register_schema("new-value", avro(READING_BROKEN)) == 3  # ids continue


def test_concurrent_registrations_get_distinct_ids(server):
    ids: dict[int, int] = {}

    def register(i: int) -> None:
        schema = {"type": "record", "name": f"R{i}", "fields": [{"name": "x", "type": "int"}]}
        with SchemaRegistryClient({**AUTH, "url": server.url}) as c:
            ids[i] = c.register_schema(f"s{i}", Schema(json.dumps(schema), "AVRO"))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids.values()) == list(range(1, 13))


def test_port_already_taken_raises_oserror(server):
    with pytest.raises(OSError):
        RegistryServer(MemoryLog(), credentials=CREDENTIALS, host=server.host, port=server.port)


@pytest.mark.integration
def test_kafka_log_survives_a_registry_restart(stack_settings):
    topic = f"_schemas_test_{uuid.uuid4().hex[:10]}"  # fresh per run: re-runs do not collide
    config = stack_settings.kafka_client_config()

    with RegistryServer(KafkaLog(config, topic), credentials=CREDENTIALS).start() as first:
        with SchemaRegistryClient({**AUTH, "url": first.url}) as c:
            assert c.register_schema(SUBJECT, avro(READING_V1)) == 1
            assert c.register_schema(SUBJECT, avro(READING_V2)) == 2
            assert c.register_schema("other-value", avro(READING_V1)) == 1
            c.delete_version("other-value", 1)
            c.set_compatibility(SUBJECT, "FULL")

    with RegistryServer(KafkaLog(config, topic), credentials=CREDENTIALS).start() as second:
        with SchemaRegistryClient({**AUTH, "url": second.url}) as c:
            assert c.get_versions(SUBJECT) == [1, 2]
            assert c.get_version(SUBJECT, 1).schema_id == 1
            assert c.get_version(SUBJECT, 2).schema_id == 2
            assert json.loads(c.get_schema(2).schema_str) == READING_V2
            assert c.get_subjects() == [SUBJECT]  # the soft delete was replayed too
            assert c.get_compatibility(SUBJECT) == "FULL"
            assert c.register_schema("third-value", avro(READING_BROKEN)) == 3


# ------------------------------------------------------------------------------ CLI




def _cli(tmp_path, *args: str) -> subprocess.Popen:
    return processes.start("registry", processes.cli_argv("registry", "serve", "--memory", *args), None,
                           env={"ECO_DATA_DIR": str(tmp_path)}, capture=True, stop_timeout=10).popen


def test_cli_serves_until_sigterm_and_exits_0(tmp_path):
    port = free_port()
    proc = _cli(tmp_path, "--port", str(port))
    try:
        ready = proc.stdout.readline()  # one line once it accepts requests
        assert f"http://127.0.0.1:{port}" in ready, ready + proc.stderr.read()
        assert httpx.get(f"http://127.0.0.1:{port}/subjects").json() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            processes.stop_pid(proc.pid, signal.SIGKILL, 5)
            proc.wait()


def test_cli_reports_a_taken_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _cli(tmp_path, "--port", str(taken.getsockname()[1]))
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0 and "cannot listen on 127.0.0.1" in err, err


class FailingLog(MemoryLog):
    """A log whose writes fail, like a broker that stopped answering."""

    def append(self, record: dict) -> None:
        raise StoreError("broker unreachable")


def test_a_failed_write_is_a_50001_and_changes_nothing():
    with RegistryServer(FailingLog(), credentials=CREDENTIALS).start() as srv:
        with SchemaRegistryClient({**AUTH, "url": srv.url, "max.retries": 0}) as c:
            err = sr_error(c.register_schema, SUBJECT, avro(READING_V1))
            assert (err.http_status_code, err.error_code) == (500, 50001)
            assert "broker unreachable" in err.error_message
            assert c.get_subjects() == []
            assert sr_error(c.get_schema, 1).error_code == 40403


# --------------------------------------------------------------------------- access
WRITES = [
    ("POST", f"/subjects/{SUBJECT}/versions", {"schema": json.dumps(READING_V2)}),
    ("DELETE", f"/subjects/{SUBJECT}", None),
    ("DELETE", f"/subjects/{SUBJECT}?permanent=true", None),
    ("DELETE", f"/subjects/{SUBJECT}/versions/1", None),
    ("DELETE", f"/subjects/{SUBJECT}/versions/1?permanent=true", None),
    ("PUT", f"/config/{SUBJECT}", {"compatibility": "NONE"}),
    ("DELETE", f"/config/{SUBJECT}", None),
    ("PUT", "/config", {"compatibility": "NONE"}),
    ("DELETE", "/config", None),
]


@pytest.mark.parametrize("auth", [None, ("eco", "wrong"), ("intruder", CREDENTIALS[1]), "Bearer abc", "Basic !!"],
                         ids=["anonymous", "wrong-password", "wrong-user", "other-scheme", "garbage"])
def test_writes_without_the_right_credentials_are_refused_and_change_nothing(server, client, auth):
    client.register_schema(SUBJECT, avro(READING_V1))
    client.set_compatibility(SUBJECT, "FULL")
    before = (httpx.get(f"{server.url}/subjects/{SUBJECT}/versions?deleted=true").json(),
              httpx.get(f"{server.url}/config/{SUBJECT}").json(), httpx.get(f"{server.url}/config").json())
    for method, path, body in WRITES:
        kwargs = {"auth": auth} if isinstance(auth, tuple) else {"headers": {"Authorization": auth}} if auth else {}
        r = httpx.request(method, server.url + path, json=body, **kwargs)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error_code"] == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    after = (httpx.get(f"{server.url}/subjects/{SUBJECT}/versions?deleted=true").json(),
             httpx.get(f"{server.url}/config/{SUBJECT}").json(), httpx.get(f"{server.url}/config").json())
    assert after == before == ([1], {"compatibilityLevel": "FULL"}, {"compatibilityLevel": "BACKWARD"})


def test_reads_stay_open_as_in_confluents_default(server, client):
    client.register_schema(SUBJECT, avro(READING_V1))
    base = server.url
    # what ClickHouse's AvroConfluent and consumers' deserializers call, anonymously
    assert json.loads(httpx.get(f"{base}/schemas/ids/1").json()["schema"]) == READING_V1
    assert httpx.get(f"{base}/subjects").json() == [SUBJECT]
    assert httpx.get(f"{base}/subjects/{SUBJECT}/versions/latest").json()["id"] == 1
    # lookups and compatibility tests are POSTs that change nothing: open too
    assert httpx.post(f"{base}/subjects/{SUBJECT}", json={"schema": json.dumps(READING_V1)}).json()["id"] == 1
    assert httpx.post(f"{base}/compatibility/subjects/{SUBJECT}/versions/latest",
                      json={"schema": json.dumps(READING_V2)}).json() == {"is_compatible": True}
    # credentials that are sent are checked even on a read: a misconfigured client finds out
    assert httpx.get(f"{base}/subjects", auth=("eco", "wrong")).status_code == 401


def test_confluents_client_needs_basic_auth_for_every_write(server):
    with SchemaRegistryClient({"url": server.url, "max.retries": 0}) as anonymous:
        for call, args in [(anonymous.register_schema, (SUBJECT, avro(READING_V1))),
                           (anonymous.set_compatibility, (SUBJECT, "NONE"))]:
            err = sr_error(call, *args)
            assert err.http_status_code == 401, err
        # an anonymous producer's serializer cannot auto-register a schema either
        with pytest.raises(SchemaRegistryError, match="Unauthorized"):
            AvroSerializer(anonymous, json.dumps(READING_V1))(
                {"home_id": "H1", "power_w": 1.0}, SerializationContext(TOPIC, MessageField.VALUE))
    with SchemaRegistryClient({**AUTH, "url": server.url, "max.retries": 0}) as c:
        assert c.register_schema(SUBJECT, avro(READING_V1)) == 1
        c.set_compatibility(SUBJECT, "NONE")
        assert c.delete_subject(SUBJECT) == [1]
        assert c.delete_subject(SUBJECT, permanent=True) == [1]
        assert c.get_subjects() == []
    with SchemaRegistryClient({"url": server.url, "max.retries": 0}) as anonymous:
        assert sr_error(anonymous.delete_subject, "whatever", permanent=True).http_status_code == 401


def test_the_registry_refuses_to_start_without_credentials():
    with pytest.raises(ValueError, match="user and a password"):
        RegistryServer(MemoryLog(), credentials=("eco", ""), port=0)
