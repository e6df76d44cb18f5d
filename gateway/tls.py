"""TLS material of the device gateway (HTTPS and MQTT share it).

Real certificates come from ``ECO_GATEWAY_TLS_CERT`` / ``ECO_GATEWAY_TLS_KEY`` (and the
CA devices should trust, ``ECO_GATEWAY_TLS_CA``). Without them the gateway uses the
local stack's own CA and certificate for 127.0.0.1/localhost, made once per data
directory (``infra/localstack/local_tls.py``): devices then trust ``DATA_DIR/tls/ca.pem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    from infra.localstack import local_tls

    local = local_tls.ensure(Path(settings.data_dir) / "tls")
    return TlsFiles(local.cert, local.key, local.ca)
