"""TLS material of the device gateway (HTTPS and MQTT share it).

Real certificates come from ``ECO_GATEWAY_TLS_CERT`` / ``ECO_GATEWAY_TLS_KEY`` (and the
CA devices should trust, ``ECO_GATEWAY_TLS_CA``). Without them the local stack makes its
own once per data directory: a CA (``DATA_DIR/tls/ca.pem``, what devices trust) and a
server certificate it signs for 127.0.0.1, localhost and the bind host. Keys are 600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


def tls_files(settings) -> TlsFiles:
    """The configured certificates, or the data directory's own (made on first use)."""
    if settings.gateway_tls_cert or settings.gateway_tls_key:
        if not (settings.gateway_tls_cert and settings.gateway_tls_key):
            from ecoretrofit.config import ConfigError

            raise ConfigError("ECO_GATEWAY_TLS_CERT and ECO_GATEWAY_TLS_KEY go together")
        cert = Path(settings.gateway_tls_cert)
        return TlsFiles(cert, Path(settings.gateway_tls_key), Path(settings.gateway_tls_ca or cert))
    d = Path(settings.data_dir) / "tls"
    files = TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")
    if not (files.cert.exists() and files.key.exists() and files.ca.exists()):
        hosts = sorted({"127.0.0.1", "localhost", settings.bind_host, settings.mqtt_host} - {"", "0.0.0.0", "::"})
        _generate(files, hosts)
    return files


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EcoRetrofit local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _generate(files: TlsFiles, hosts: list[str]) -> None:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("EcoRetrofit local CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    _write(files.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    _write(files.cert, cert.public_bytes(pem), 0o644)
    _write(files.ca, ca.public_bytes(pem), 0o644)  # the CA key is not kept: nothing else gets signed


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
