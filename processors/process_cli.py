"""``ecoretrofit process``: run one Faust worker of the stream processor.

Start more (up to 4 on one machine) to share the partitions: they join the same
consumer group, and each exposes /metrics on the next free port.
"""

from __future__ import annotations

import logging

from ecoretrofit import metrics
from ecoretrofit.config import Settings


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=5000, help="max readings per processed batch (at most one fetch)")
    parser.add_argument("--loglevel", default="warning", help="Faust worker log level")


def run(args, settings: Settings) -> int:
    from faust.worker import Worker

    from processors.app import Processor

    for index in range(4):
        if metrics.serve(metrics.port_for(settings, "process", index), settings.bind_host):
            break
    # aiokafka logs at debug level on every send and fetch when left to the root level
    for name in ("faust", "aiokafka"):
        logging.getLogger(name).setLevel(args.loglevel.upper())
    processor = Processor(settings, batch_size=args.batch)
    worker = Worker(processor.app, loglevel=args.loglevel, quiet=True)
    # Worker installs SIGINT/SIGTERM handlers and stops the app cleanly (commits
    # offsets, flushes the changelog) before returning.
    worker.execute_from_commandline()
    return 0
