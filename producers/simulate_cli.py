"""``ecoretrofit simulate``: stream the simulated city to Kafka.

Live (default): one reading per home per second of wall time, until --duration or
Ctrl-C. Backfill (--backfill): simulated time from --start, as fast as the machine
allows, with a progress bar; ``--readings`` says how many in total.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime, timezone

from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError


def add_arguments(parser) -> None:
    parser.add_argument("--homes", type=int, default=None, help="number of homes (default ECO_HOMES)")
    parser.add_argument("--duration", type=float, default=None, help="live: seconds to run (default: until Ctrl-C)")
    parser.add_argument("--backfill", action="store_true", help="simulated time, as fast as possible")
    parser.add_argument("--readings", type=float, default=1e6, help="backfill: total readings (e.g. 5e7)")
    parser.add_argument("--start", default=None, help="backfill: simulated start, ISO date (default: now minus the span)")
    parser.add_argument("--step", type=float, default=1.0, help="seconds between a home's readings (default 1)")
    parser.add_argument("--faults", type=int, default=0, help="faults injected per kind (seeded scenario mix)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default ECO_SEED)")
    parser.add_argument("--ground-truth", default=None, help="write the injected faults to this JSON file")
    parser.add_argument("--causes", type=float, default=0.0, metavar="FRACTION",
                        help="give this share of homes a cause of inefficiency (producers.causes)")
    parser.add_argument("--causes-truth", default=None, metavar="FILE",
                        help="write each home's cause of inefficiency to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--maintenance", action="store_true",
                        help="components wear out and fail; live: technicians act on the work-orders topic")
    parser.add_argument("--technician-delay", type=float, default=None, metavar="HOURS",
                        help="with --maintenance: hours from an order opening to the technician's visit (default 24)")
    dev = parser.add_argument_group("device mode: homes send through the device gateway, each with an on-disk buffer")
    dev.add_argument("--devices", choices=("mqtt", "https"), default=None, help="send as devices over this transport")
    dev.add_argument("--buffer", default=None, help="the devices' buffer file (default DATA_DIR/devices/<transport>.sqlite)")
    dev.add_argument("--first-home", type=int, default=0, help="home index of the first device")
    dev.add_argument("--batch", type=int, default=500, help="most readings per message/request")
    dev.add_argument("--offline-homes", type=int, default=0, help="this many devices lose their link ...")
    dev.add_argument("--offline-at", type=float, default=0.0, help="... this many seconds after the start ...")
    dev.add_argument("--offline-for", type=float, default=0.0, help="... for this many seconds")
    dev.add_argument("--drain", type=float, default=120.0, help="seconds to keep sending buffered readings at the end")


def run(args, settings: Settings) -> int:
    from producers.faults import FaultPlan
    from producers.producer import TelemetryProducer, run_backfill, run_live
    from producers.causes import CausePlan
    from producers.simulator import CitySimulator, home_id

    homes = args.homes or settings.homes
    if args.devices:
        return _devices(args, settings, homes)
    seed = settings.seed if args.seed is None else args.seed
    step_ms = int(args.step * 1000)
    if homes <= 0 or step_ms <= 0:
        raise CommandError("--homes and --step must be positive")
    if args.backfill:
        ticks = max(1, int(args.readings // homes))
        span_ms = ticks * step_ms
        start_ms = (_parse_start(args.start) if args.start else int(time.time() * 1000) - span_ms)
    else:
        ticks = None
        start_ms = int(time.time() * 1000)
        span_ms = int((args.duration or 3600) * 1000)
    maintenance = None
    if args.maintenance:
        from maintenance.assets import HOUR_MS
        from maintenance.fleet import MaintenanceConfig

        delay = MaintenanceConfig().technician_delay_ms if args.technician_delay is None \
            else int(args.technician_delay * HOUR_MS)
        maintenance = MaintenanceConfig(technician_delay_ms=delay)
    elif args.technician_delay is not None:
        raise CommandError("--technician-delay needs --maintenance")
    if not 0.0 <= args.causes <= 1.0:
        raise CommandError("--causes must be a fraction between 0 and 1")
    causes = CausePlan.random([home_id(i) for i in range(homes)], seed, args.causes) if args.causes else None
    sim = CitySimulator(homes, settings.regions, seed, start_ms, step_ms=step_ms,
                        maintenance=maintenance, causes=causes)
    if causes is not None and args.causes_truth:
        with open(args.causes_truth, "w") as f:
            json.dump([c.as_dict() for c in causes], f, indent=1)
    plan = None
    if args.faults:
        plan = FaultPlan.random(sim.home_ids, start_ms, span_ms, seed=seed, faults_per_kind=args.faults,
                                water_homes=sim.water_homes, step_ms=step_ms)
        sim.set_faults(plan)
    metrics.serve(metrics.port_for(settings, "simulate"), settings.bind_host)
    producer = TelemetryProducer(settings)
    t0 = time.monotonic()
    if args.backfill:
        stats = run_backfill(sim, producer, start_ms, ticks, step_ms, progress=not args.quiet, homes_hint=homes)
    else:
        technicians = None
        if sim.fleet is not None:
            from maintenance.technicians import TopicTechnicians

            technicians = TopicTechnicians(settings, sim.fleet)
        try:
            stats = asyncio.run(_live(sim, producer, args.duration, args.step, args.quiet, technicians))
        finally:
            if technicians is not None:
                technicians.close()
                print(f"technicians: {technicians.taken} orders taken from {settings.topic_workorders}, "
                      f"{technicians.published} work-order versions published")
    elapsed = time.monotonic() - t0
    if plan is not None and args.ground_truth:
        with open(args.ground_truth, "w") as f:
            json.dump([r._asdict() if hasattr(r, "_asdict") else vars(r) for r in plan.ground_truth()], f, indent=1)
    print(
        f"produced {stats.sent:,} readings of {homes:,} homes in {elapsed:.1f}s "
        f"({stats.sent / max(elapsed, 1e-9):,.0f}/s): {stats.acked:,} acknowledged, {stats.failed:,} failed"
        + (f" {stats.errors}" if stats.failed else "")
        + (f"; {len(plan.ground_truth())} faults injected" if plan else "")
        + (f"; {len(causes)} homes with a cause of inefficiency" if causes else "")
    )
    return 0 if stats.failed == 0 and stats.in_flight == 0 else 1


async def _live(sim, producer, duration, step_s, quiet, technicians=None):
    from producers.producer import run_live

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def progress(ticks: int, n: int) -> None:
        if technicians is not None:
            technicians.step()
        if not quiet and ticks % 10 == 0:
            s = producer.stats
            print(f"tick {ticks}: produced {s.sent:,}, acknowledged {s.acked:,}", flush=True)

    return await run_live(sim, producer, duration, step_s=step_s, stop=stop, on_tick=progress)


def _descriptors_for(devices: int) -> None:
    """Each MQTT device holds a socket: raise this process's descriptor limit to its
    hard limit if needed, or say how many devices fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = devices + 256  # the buffer, Python's own files, the loop, connections in progress
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < need:
            raise CommandError(f"--devices mqtt: {devices} devices need ~{need} open files, the limit is {hard}: "
                               "run more processes with other --first-home")


def _devices(args, settings: Settings, homes: int) -> int:
    """Device mode: prints one JSON line of counts at the end; exit 0 when every reading
    generated was acknowledged by the gateway (nothing left in the buffers)."""
    from pathlib import Path

    from producers.device_buffer import DeviceBuffer
    from producers.devices import OfflinePlan, run_devices

    if args.devices == "mqtt":
        _descriptors_for(homes)
    path = Path(args.buffer) if args.buffer else settings.data_dir / "devices" / f"{args.devices}.sqlite"
    buffer = DeviceBuffer(path)

    async def main() -> dict:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_devices(
            settings, homes=homes, transport=args.devices, buffer=buffer, duration_s=args.duration,
            first_home=args.first_home, step_s=args.step, batch_max=args.batch, drain_s=args.drain, stop=stop,
            offline=OfflinePlan(args.offline_homes, args.offline_at, args.offline_for), seed=args.seed)

    try:
        counts = asyncio.run(main())
    finally:
        buffer.close()
    print(json.dumps(counts), flush=True)
    return 0 if counts["buffered"] == 0 else 1


def _parse_start(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--start {text!r} is not an ISO date such as 2026-01-15 or 2026-01-15T08:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)
