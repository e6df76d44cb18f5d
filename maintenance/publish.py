"""Work orders onto their topic: a thin adapter (Avro in the Confluent wire format,
key = asset_id), nothing else. Records come from ``maintenance.fleet`` or any
maintenance system speaking ``schemas/work_order.avsc``."""

from __future__ import annotations

from typing import Iterable

import schemas
from ecoretrofit.errors import CommandError


def publish_work_orders(settings, records: Iterable[dict], timeout_s: float = 30.0) -> int:
    """Produce every record (the project's producer settings, acks=all); returns how many were
    acknowledged. A record the schema rejects raises before anything is sent."""
    from confluent_kafka import Producer

    from ecoretrofit.serde import encoder_for

    enc = encoder_for(settings, settings.topic_workorders, schemas.WORK_ORDER)
    payloads = [(r["asset_id"].encode(), enc.encode(r)) for r in records]
    errors: list[str] = []
    acked = 0

    def on_delivery(err, _msg):
        nonlocal acked
        if err is not None:
            errors.append(str(err))
        else:
            acked += 1

    p = Producer(settings.producer_config())
    for key, value in payloads:
        while True:
            try:
                p.produce(settings.topic_workorders, value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout_s)
    if left or errors:
        raise CommandError(f"work orders: {left} not delivered, {len(errors)} failed ({errors[:1]})")
    return acked
