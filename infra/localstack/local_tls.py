"""A private certificate authority per local data directory, for the local stack's
internal TLS (SeaweedFS's gRPC between master, volume, filer and S3 gateway, which is
otherwise unauthenticated: anyone on the machine could delete the broker's log
objects through it).

One CA and one certificate signed by it, valid for server and client use on
127.0.0.1/localhost. The files live in ``DATA_DIR/tls`` (0700, keys 0600); nothing is
committed, and a new data directory gets a new CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ecoretrofit.config import private_dir, write_private

VALID_DAYS = 3650


@dataclass(frozen=True)
class LocalTLS:
    ca: Path    # the CA certificate (PEM): what peers trust
    cert: Path  # a certificate for 127.0.0.1 and localhost, server and client use
    key: Path   # its private key (PKCS#8 PEM, 0600)


def paths(directory: Path) -> LocalTLS:
    """Where the files of ``directory`` are (whether or not they exist yet)."""
    return LocalTLS(directory / "ca.pem", directory / "local.pem", directory / "local.key")


def ensure(directory: Path) -> LocalTLS:
    """The CA and certificate in ``directory``, created on first use.

    >>> import tempfile, ssl
    >>> tls = ensure(Path(tempfile.mkdtemp()) / "tls")
    >>> ctx = ssl.create_default_context(cafile=str(tls.ca)); ctx.load_cert_chain(tls.cert, tls.key)
    >>> oct(tls.key.stat().st_mode & 0o777), ensure(tls.ca.parent) == tls
    ('0o600', True)
    """
    private_dir(directory)
    tls = paths(directory)
    if not (tls.ca.exists() and tls.cert.exists() and tls.key.exists()):
        _create(tls)
    return tls


def _create(tls: LocalTLS) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EcoRetrofit local stack CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # The CA's key is not kept: nothing else will ever be signed by this CA.
    write_private(tls.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode())
    write_private(tls.cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    write_private(tls.ca, ca.public_bytes(serialization.Encoding.PEM).decode())
