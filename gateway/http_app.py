"""``POST /v1/telemetry``: readings from devices over HTTPS (a Starlette app; uvicorn
serves it with TLS, see ``gateway_cli``).

Order of checks, cheapest first, each with its own status:
401 no, unknown or revoked bearer token (header only: a query string is refused, so a
token never lands in an access log) -> 429 over the device's rate -> 413 body over the
limit -> 400 malformed or implausible (every bad field named) -> 403 another home's
readings -> 200 only after Kafka acknowledged every new reading; a reading whose
(home, seq) this gateway already stored is answered as a duplicate, not produced again.
503 (with Retry-After) when Kafka did not acknowledge: the device keeps the batch and
retries, and the retry is deduplicated.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ecoretrofit import metrics
from gateway.devices import token_sha256
from gateway.kafka_out import AckedProducer, DeliveryFailed
from gateway.limits import RecentSeqs, TokenBuckets
from gateway.readings import check_payload
from gateway.registry import DeviceRegistry

log = logging.getLogger(__name__)


def _error(status: int, message: str, **extra) -> JSONResponse:
    metrics.GATEWAY_REQUESTS.labels(transport="https", status=str(status)).inc()
    headers = {"WWW-Authenticate": 'Bearer realm="eco"'} if status == 401 else None
    if "retry_after" in extra:
        headers = {"Retry-After": str(max(1, int(extra.pop("retry_after") + 0.999)))}
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def build_app(
    settings, registry: DeviceRegistry, producer: AckedProducer, clock: Callable[[], float] = time.time
) -> Starlette:
    buckets = TokenBuckets(settings.gateway_rate_per_s, settings.gateway_rate_burst)
    recent = RecentSeqs()
    limit = settings.gateway_max_body_bytes
    topic = settings.topic_telemetry

    async def telemetry(request: Request) -> JSONResponse:
        if request.url.query:
            return _error(400, "no query string: the token goes in the Authorization header, nothing in the URL")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "missing bearer token (Authorization: Bearer <token>)")
        device = registry.by_token_hash(token_sha256(token.strip()))
        if device is None:
            return _error(401, "unknown or revoked token")
        if not buckets.allow(device.device_id, clock()):
            return _error(429, "over this device's request rate", retry_after=buckets.retry_after(device.device_id))
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return _error(413, f"body over {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _error(413, f"body over {limit} bytes")
        checked = check_payload(bytes(body), device.home_id, now_ms=int(clock() * 1000),
                                regions=settings.known_regions, max_batch=settings.gateway_max_batch)
        if checked.errors:
            return _error(400, "invalid readings", errors=checked.errors)
        if checked.foreign:
            return _error(403, "readings of another home", errors=checked.foreign)

        home = device.home_id
        by_seq = {r["seq"]: r for r in checked.readings}  # a seq twice in one batch is one reading
        new, dup, busy = recent.classify(home, list(by_seq))
        if busy:
            return _error(503, "some of these readings are being stored by another request", retry_after=1)
        recent.reserve(home, new)
        headers = [("source", b"gateway-https"), ("device", device.device_id.encode())]
        key = home.encode()
        try:
            await producer.send_async(topic, [(key, producer.encode(by_seq[s]), headers) for s in new])
        except DeliveryFailed as exc:
            recent.release(home, new)
            log.warning("device %s: %s", device.device_id, exc)
            return _error(503, "not stored: Kafka did not acknowledge; retry", retry_after=1)
        except BaseException:
            recent.release(home, new)
            raise
        recent.commit(home, new)
        metrics.GATEWAY_REQUESTS.labels(transport="https", status="200").inc()
        metrics.GATEWAY_READINGS.labels(transport="https", outcome="stored").inc(len(new))
        metrics.GATEWAY_READINGS.labels(transport="https", outcome="duplicate").inc(len(checked.readings) - len(new))
        return JSONResponse({"accepted": len(new), "duplicates": len(dup) + len(checked.readings) - len(by_seq)})

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/telemetry", telemetry, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
