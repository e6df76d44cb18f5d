"""``ecoretrofit maintain``: run the predictive-maintenance stream processor
(``maintenance.worker``): telemetry and work orders in, predictions and predictive
work orders out, refused messages to the dead letters, state checkpointed in ``--checkpoint``
(SQLite, ``maintenance.checkpoint``); /metrics on the ``maintain`` port. Stop it with Ctrl-C or SIGTERM: it
checkpoints before exiting."""

from __future__ import annotations

import logging
import signal
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="state file, SQLite (default DATA_DIR/maintain/state.sqlite)")
    parser.add_argument("--hold", type=float, default=60.0,
                        help="seconds a work order may wait for its home's telemetry to catch up (default 60)")
    parser.add_argument("--horizon-days", type=float, default=None,
                        help="failure horizon of the predictions, days (default: the workflow's, 7)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="p_fail that opens a predictive work order (default: the workflow's, 0.5)")


def run(args, settings) -> int:
    from ecoretrofit import metrics
    from ecoretrofit.errors import CommandError
    from maintenance.worker import MaintenanceWorker
    from maintenance.workflow import WorkflowConfig

    changes = {k: v for k, v in (("horizon_days", args.horizon_days), ("threshold", args.threshold)) if v is not None}
    if changes.get("horizon_days", 1.0) <= 0 or not 0 < changes.get("threshold", 0.5) < 1:
        raise CommandError("--horizon-days > 0 and 0 < --threshold < 1")

    metrics.serve(metrics.port_for(settings, "maintain"), settings.bind_host)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    path = args.checkpoint or settings.data_dir / "maintain" / "state.sqlite"
    worker = MaintenanceWorker(settings, path, WorkflowConfig(**changes), hold_s=args.hold)
    worker.run(lambda: bool(stopping), settings.checkpoint_interval_s)
    return 0
