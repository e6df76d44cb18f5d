"""``ecoretrofit maintain``: run the predictive-maintenance stream processor
(``maintenance.worker``): telemetry and work orders in, predictions and predictive
work orders out, state checkpointed as JSON in ``--checkpoint``. Stop it with Ctrl-C
or SIGTERM: it checkpoints before exiting."""

from __future__ import annotations

import logging
import signal
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="state file (default DATA_DIR/maintain/state.json)")
    parser.add_argument("--hold", type=float, default=60.0,
                        help="seconds a work order may wait for its home's telemetry to catch up (default 60)")


def run(args, settings) -> int:
    from maintenance.worker import MaintenanceWorker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    path = args.checkpoint or settings.data_dir / "maintain" / "state.json"
    worker = MaintenanceWorker(settings, path, hold_s=args.hold)
    worker.run(lambda: bool(stopping), settings.checkpoint_interval_s)
    return 0
