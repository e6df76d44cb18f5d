"""``ecoretrofit topics [--format text|markdown] [--output FILE]``: the contract of
every topic (``ecoretrofit.topics``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecoretrofit.config import Settings
from ecoretrofit.topics import RENDERERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=sorted(RENDERERS), default="text", help="output format (default text)")
    parser.add_argument("--output", type=Path, default=None, help="write to this file instead of stdout")


def run(args: argparse.Namespace, settings: Settings) -> int:
    text = RENDERERS[args.format](settings)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
