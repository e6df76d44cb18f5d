"""``ecoretrofit explain HOME``: why a home uses more energy than it should.

Without a model: the deterministic analysis (``assistant.analysis``) of the evidence the
assistant's tools gather (warehouse + twin service), printed as ranked findings with
the numbers they rest on and how to check each one. ``--json`` prints the analysis.
"""

from __future__ import annotations

import argparse
import json

from ecoretrofit.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("home_id", metavar="HOME", help="home id, e.g. H000042")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument("--twin-url", default=None, help="the twin service (default: its local port)")


def render(analysis: dict) -> str:
    b = analysis["baseline"]
    lines = [f"{analysis['home_id']}: {b['kwh']} kWh over {b['days']} days, {b['hdd']} heating degree-days: "
             f"{b['kwh_per_hdd_per_100m2']} kWh per degree-day per 100 m2, percentile {b['percentile']} of "
             f"{b['peers']} homes in its region (median {b['peer_median']})"]
    if not analysis["findings"]:
        lines.append("no cause of inefficiency found")
    for i, f in enumerate(analysis["findings"], 1):
        lines.append(f"{i}. {f['cause']}: {f['title']} (about {f['excess_kwh_per_day']} kWh/day)")
        lines.append("   " + ", ".join(f"{k}={v}" for k, v in f["numbers"].items()))
        for c in f["check"]:
            lines.append(f"   check: {c}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings) -> int:
    from assistant.tools import ToolError, from_settings

    tools = from_settings(settings, args.twin_url)
    try:
        analysis = tools.explain(args.home_id)
    except ToolError as e:
        raise CommandError(str(e)) from None
    print(json.dumps(analysis, indent=2) if args.json else render(analysis))
    return 0
