"""Two days of one-minute readings of the city's first homes, straight into the
warehouse, once per test stack (what-if calibration and history need the past)."""

import time

from bench.warehouse import bulk_insert
from sinks.warehouse import connect

SEEDED_HOMES, SEEDED_DAYS = 8, 2


def seed_once(settings) -> None:
    client = connect(settings)
    db = settings.clickhouse_database
    old = client.command(f"SELECT count() FROM {db}.telemetry WHERE home_id = 'H000000' "
                         f"AND ts < now64(3) - INTERVAL 1 DAY")
    if int(old) > 0:
        return
    now = int(time.time() * 1000)
    # ends two hours ago: the live readings of the tests start a fresh hour of the meter
    start = (now - SEEDED_DAYS * 86_400_000) // 60_000 * 60_000
    bulk_insert(client, f"{db}.telemetry", SEEDED_HOMES, SEEDED_DAYS * 1440 - 120, settings.regions, settings.seed,
                start, 60_000)
