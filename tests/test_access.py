"""No one in who does not belong: the local stack's doors, tried as an outsider on the
same machine would (issue 9, "Access").

Schema-registry credentials themselves are tested in test_registry_api.py; here the
deployed registry, the object store around the S3 credentials, the data directory,
and what the Kafka broker (Tansu 0.6) can and cannot do.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import struct
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from ecoretrofit import processes
from ecoretrofit.admin import s3_client
from ecoretrofit.config import Settings
from helpers import free_port, wait_for
from infra.localstack.stack import LocalStack, tansu_binary, weed_binary


# ------------------------------------------------------------------ data directory
def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_data_directory_is_private_from_the_first_credential_on(tmp_path):
    data = tmp_path / "fresh"
    settings = Settings.from_env({"ECO_DATA_DIR": str(data), "ECO_PORT_BASE": "31000"})  # writes credentials
    assert mode(data) == 0o700 and mode(settings.credentials_file) == 0o600


def test_an_existing_world_readable_data_directory_is_tightened(tmp_path):
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # as an older version (or a umask of 022) left it
    settings = Settings.from_env({"ECO_DATA_DIR": str(data), "ECO_PORT_BASE": "31000"})
    LocalStack(settings, log=lambda _: None)._prepare_dirs()
    assert mode(data) == 0o700
    for secret in ("credentials.env", "s3-identities.json", "tls/local.key"):
        assert mode(data / secret) == 0o600, secret


def test_an_older_credentials_file_gets_the_new_credentials_added(tmp_path):
    old = tmp_path / "credentials.env"
    old.write_text("clickhouse_password=kept\ns3_access_key=ecokept\ns3_secret_key=kept2\n")
    old.chmod(0o600)
    settings = Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000"})
    assert (settings.clickhouse_password, settings.s3_access_key) == ("kept", "ecokept")
    assert len(settings.schema_registry_password) >= 16
    again = Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000"})
    assert again.schema_registry_password == settings.schema_registry_password
    assert mode(old) == 0o600


def test_the_running_stacks_data_directory_is_private(stack_settings):
    assert mode(stack_settings.data_dir) == 0o700
    assert mode(stack_settings.credentials_file) == 0o600


# ------------------------------------------------------------------ schema registry
def test_the_deployed_registry_refuses_an_anonymous_hard_delete_of_the_telemetry_subject(stack_settings):
    s = stack_settings
    subject = f"{s.topic_telemetry}-value"
    before = httpx.get(f"{s.schema_registry_url}/subjects/{subject}/versions").json()
    assert before, "the stack registers the telemetry schema at start"
    for url in (f"/subjects/{subject}", f"/subjects/{subject}?permanent=true"):
        assert httpx.delete(s.schema_registry_url + url).status_code == 401
    assert httpx.put(f"{s.schema_registry_url}/config/{subject}", json={"compatibility": "NONE"}).status_code == 401
    assert httpx.get(f"{s.schema_registry_url}/subjects/{subject}/versions").json() == before
    # every client of the project carries the credentials: a register goes through
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    name = f"access-test-{uuid.uuid4().hex[:8]}-value"
    client = SchemaRegistryClient(s.registry_client_config())
    assert client.register_schema(name, Schema('"string"', "AVRO")) > 0
    assert client.delete_subject(name, permanent=False) == [1]


# ------------------------------------------------------------------ object store
@pytest.fixture(scope="module")
def broker_log_object(stack_settings):
    """The key of an object the broker wrote to its bucket for a fresh topic, and its bytes."""
    s = stack_settings
    topic = f"eco.access-test.{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap})
    producer.produce(topic, b"private reading " * 64)
    assert producer.flush(30) == 0
    s3 = s3_client(s)

    def find():
        listed = s3.list_objects_v2(Bucket=s.s3_broker_bucket, Prefix="clusters/")
        keys = [o["Key"] for o in listed.get("Contents", []) if topic in o["Key"] and o["Size"] > 0]
        return keys[0] if keys else None

    key = wait_for(find, 30, what=f"an object of topic {topic} in the broker's bucket")
    return key, s3.get_object(Bucket=s.s3_broker_bucket, Key=key)["Body"].read()


def test_the_filer_port_neither_serves_nor_deletes_broker_log_objects(stack_settings, broker_log_object):
    s = stack_settings
    key, content = broker_log_object
    filer = f"http://127.0.0.1:{s.port('weed_filer')}"
    path = f"/buckets/{s.s3_broker_bucket}/{key}"
    directory = path.rsplit("/", 1)[0] + "/"
    attempts = {
        "GET object": httpx.get(filer + path),
        "GET metadata": httpx.get(filer + path + "?metadata=true"),
        "list directory": httpx.get(filer + directory, headers={"Accept": "application/json"}),
        "DELETE object": httpx.delete(filer + path),
        "DELETE directory": httpx.delete(filer + directory + "?recursive=true"),
        "overwrite": httpx.post(filer + path, files={"file": ("x", b"tampered")}),
    }
    assert {what: r.status_code for what, r in attempts.items()} == {what: 401 for what in attempts}
    assert not any(content[:32] in r.content for r in attempts.values())
    # authenticated S3 still reads the object, unchanged
    assert s3_client(s).get_object(Bucket=s.s3_broker_bucket, Key=key)["Body"].read() == content


def test_the_object_stores_grpc_refuses_a_client_without_the_stacks_certificate(stack_settings, broker_log_object):
    """`weed shell` (gRPC, no certificate) tries to delete the object: before mutual TLS
    it was gone within a second."""
    s = stack_settings
    key, content = broker_log_object
    shell = _run_outsider_shell(s, f"fs.rm /buckets/{s.s3_broker_bucket}/{key}")
    assert s3_client(s).get_object(Bucket=s.s3_broker_bucket, Key=key)["Body"].read() == content, shell


def test_the_object_stores_master_refuses_admin_requests(stack_settings, broker_log_object):
    """`POST /col/delete?collection=<broker bucket>` on the master's HTTP port deleted
    the broker's whole log while the master ran inside `weed server` (its white list
    would have applied to the volume server's uploads too)."""
    s = stack_settings
    key, content = broker_log_object
    master = f"http://127.0.0.1:{s.port('weed_master')}"
    attempts = {
        "delete the broker's collection": httpx.post(f"{master}/col/delete?collection={s.s3_broker_bucket}"),
        "delete it by GET": httpx.get(f"{master}/col/delete?collection={s.s3_broker_bucket}"),
        "grow volumes": httpx.post(f"{master}/vol/grow?collection={s.s3_broker_bucket}&count=1"),
        "vacuum": httpx.post(f"{master}/vol/vacuum"),
        "assign a file id": httpx.post(f"{master}/dir/assign"),
        "upload through the master": httpx.post(f"{master}/submit", files={"file": ("x", b"planted")}),
    }
    assert {what: r.status_code for what, r in attempts.items()} == {what: 401 for what in attempts}
    # authenticated S3 still reads and writes
    s3 = s3_client(s)
    assert s3.get_object(Bucket=s.s3_broker_bucket, Key=key)["Body"].read() == content
    probe = f"access-test/{uuid.uuid4().hex}"
    s3.put_object(Bucket=s.s3_lake_bucket, Key=probe, Body=b"written through S3")
    assert s3.get_object(Bucket=s.s3_lake_bucket, Key=probe)["Body"].read() == b"written through S3"
    s3.delete_object(Bucket=s.s3_lake_bucket, Key=probe)


def _run_outsider_shell(s: Settings, command: str, timeout: float = 15.0) -> str:
    """Run one `weed shell` command as an outsider (no certificate, no security.toml);
    the shell retries a refused connection forever, so it is stopped after ``timeout``."""
    try:
        done = subprocess.run(
            [str(weed_binary()), "shell",
             f"-master=127.0.0.1:{s.port('weed_master')}.{s.port('weed_master_grpc')}",
             f"-filer=127.0.0.1:{s.port('weed_filer')}.{s.port('weed_filer_grpc')}"],
            input=command + "\n", capture_output=True, text=True, timeout=timeout,
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"}, cwd="/",
        )
        return done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        return f"timed out after {timeout}s: {exc.stdout!r}"


# ------------------------------------------------------------------ Kafka (Tansu 0.6)
# These pin what the broker cannot do, measured (README "Guarantees", docs/cluster.md).
# When a new broker build makes one of them fail, enable broker TLS/authentication in
# the local stack and replace the test with one that asserts the protection.
def _tansu(*args: str) -> tuple[processes.Proc, int]:
    port = free_port()
    proc = processes.start("tansu-probe", [str(tansu_binary()), "broker",
                                           "--listener-url", f"tcp://127.0.0.1:{port}",
                                           "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                                           "--storage-engine", "memory://probe/", *args],
                           Path(os.devnull), stop_signal=signal.SIGINT, stop_timeout=5)  # Tansu ignores SIGTERM
    wait_for(lambda: _port_open(port) or not proc.running(), 10, what="the probe broker")
    return proc, port


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_tansu_0_6_cannot_serve_tls(tmp_path):
    from infra.localstack import local_tls

    tls = local_tls.ensure(tmp_path / "tls")
    both = subprocess.run([str(tansu_binary()), "broker", "--cert", str(tls.cert), "--key", str(tls.key)],
                          capture_output=True, text=True, timeout=20)
    assert both.returncode != 0 and "cannot be used with" in both.stderr
    # --cert alone starts, but the listener stays plaintext
    proc, port = _tansu("--cert", str(tls.cert))
    try:
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)  # plaintext answers
    finally:
        proc.stop()


def _request(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    frame = struct.pack(">hhih", api_key, version, correlation, 5) + b"probe" + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = b""
    while len(size) < 4:
        chunk = sock.recv(4 - len(size))
        if not chunk:
            raise ConnectionError("closed by the broker")
        size += chunk
    (n,) = struct.unpack(">i", size)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def test_tansu_0_6_authentication_locks_out_clients_but_not_an_attacker():
    """With --authentication: a SCRAM user created through the Kafka admin API is never
    stored (login: unknown-user), yet a client that ignores the failed SCRAM exchange
    is served afterwards."""
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)

    # 1. the credential is acknowledged and lost
    proc, port = _tansu()
    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        upsert = UserScramCredentialUpsertion("eco", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw")
        for future in admin.alter_user_scram_credentials([upsert]).values():
            assert future.result(10) is None  # "success"
    finally:
        proc.stop()
    proc, port = _tansu("--authentication")
    try:
        # 2. anonymous: refused
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with pytest.raises(ConnectionError):
                _request(sock, 3, 0, 1, struct.pack(">i", 0))
        # 3. a failed SCRAM exchange, then a metadata request: answered
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            _request(sock, 17, 1, 1, struct.pack(">h", 13) + b"SCRAM-SHA-256")
            first = b"n=intruder,r=" + base64.b64encode(os.urandom(18))
            reply = _request(sock, 36, 0, 2, struct.pack(">i", len(first) + 3) + b"n,," + first)
            server_first = reply[reply.index(b"r="):]
            nonce = dict(kv.split(b"=", 1) for kv in server_first.split(b","))[b"r"]
            final = b"c=biws,r=" + nonce + b",p=" + base64.b64encode(os.urandom(32))
            assert b"e=unknown-user" in _request(sock, 36, 0, 3, struct.pack(">i", len(final)) + final)
            metadata = _request(sock, 3, 0, 4, struct.pack(">i", 0))
            assert struct.unpack(">i", metadata[:4]) == (4,) and b"127.0.0.1" in metadata
    finally:
        proc.stop()
