"""``ecoretrofit eval``: score the detectors.

- ``ecoretrofit eval nab --data DIR [--detectors a,b] [--scores RESULTS_DIR] [--json]``
  streams every NAB series through each detector (score, then learn, per row) and
  scores the result the way NAB does, beside NAB's published scoreboard. Result
  directories in NAB's layout (``RESULTS_DIR/<detector>/<category>/<detector>_<file>.csv``)
  can be scored too; ``DIR/results`` is scored as a reference when present.
- ``ecoretrofit eval faults …`` scores detectors on simulated homes with injected
  faults (``evaluation.faults``), or the deployed processor through Kafka
  (``--through-kafka``, ``evaluation.faults_kafka``); both imported only when chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from ecoretrofit.errors import CommandError
from evaluation.faults import DEFAULT_THRESHOLD
from producers.faults import KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="{nab,faults,rul,maintenance,explain}")
    sub.required = True

    nab = sub.add_parser("nab", help="score detectors on the Numenta Anomaly Benchmark",
                         description="Stream every NAB series through each detector and score it "
                                     "with NAB's method (threshold swept per profile).")
    nab.add_argument("--data", required=True, metavar="DIR",
                     help="NAB directory: data/, labels/combined_windows.json, config/profiles.json")
    nab.add_argument("--detectors", metavar="A,B",
                     help="registered detectors to run (default: all, or none when --scores is given)")
    nab.add_argument("--scores", metavar="RESULTS_DIR",
                     help="also score results in NAB's layout: RESULTS_DIR/<detector>/<category>/<detector>_<file>.csv")
    nab.add_argument("--no-reference", action="store_true",
                     help="do not score DIR/results (NAB's own results shipped with the data) as a reference")
    nab.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                     help="processes to spread files over (default: all cores)")
    nab.add_argument("--json", action="store_true", help="print the results as JSON")
    nab.add_argument("--files", action="store_true", help="also print the per-file breakdown (standard profile)")

    from evaluation import rul

    rul.add_arguments(sub.add_parser("rul", help="remaining-useful-life predictor on NASA C-MAPSS",
                                     description=(rul.__doc__ or "").strip().split("\n")[0]))

    from evaluation import maintenance_eval

    maintenance_eval.add_arguments(sub.add_parser(
        "maintenance", help="predictive vs preventive vs run-to-failure on the simulated city",
        description=(maintenance_eval.__doc__ or "").strip().split("\n")[0]))

    from evaluation import explain_eval

    explain_eval.add_arguments(sub.add_parser(
        "explain", help="does the deterministic analysis name the true cause of inefficiency?",
        description=(explain_eval.__doc__ or "").strip().split("\n")[0]))

    faults = sub.add_parser("faults", help="score detectors on simulated homes with injected faults",
                            description="Inject seeded faults into simulated homes and score the detectors "
                                        "(event-level matching), in process or through Kafka.")
    faults_arguments(faults)


def run(args: argparse.Namespace, settings: object) -> int:
    if args.eval_command == "maintenance":
        from evaluation import maintenance_eval

        return maintenance_eval.run(args, settings)
    if args.eval_command == "explain":
        from evaluation import explain_eval

        return explain_eval.run(args, settings)
    if args.eval_command == "rul":
        from evaluation import rul

        return rul.run(args, settings)
    if args.eval_command == "faults":
        return run_faults(args, settings)
    return _run_nab(args)


# --------------------------------------------------------------------------- faults
def faults_arguments(parser) -> None:
    parser.add_argument("--homes", type=int, default=40, help="homes to simulate (default 40)")
    parser.add_argument("--hours", type=float, default=12.0, help="simulated hours (default 12)")
    parser.add_argument("--seed", type=int, default=None, help="scenario seed (default: ECO_SEED)")
    parser.add_argument("--step-s", type=float, default=10.0, help="seconds between readings (default 10)")
    parser.add_argument(
        "--start", default="2024-01-15T00:00:00Z", help="simulated start time, ISO 8601 UTC (default mid-January)"
    )
    parser.add_argument("--detectors", default="", help="comma-separated detector names (default: all, plus 'gaps')")
    parser.add_argument("--kinds", default="", help=f"comma-separated fault kinds (default: all of {', '.join(KINDS)})")
    parser.add_argument("--faults-per-kind", type=int, default=6, help="faults of each kind (default 6)")
    parser.add_argument(
        "--threshold",
        default=str(DEFAULT_THRESHOLD),
        help="alarm when score >= this: one value for all, and/or NAME=VALUE per detector "
        f"(default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="DET.KEY=VALUE", help="detector parameter, e.g. zscore.window=60"
    )
    parser.add_argument("--grace-s", type=float, default=600.0, help="alarms up to this long after a fault's end still match it")
    parser.add_argument("--merge-gap-s", type=float, default=None, help="alarms this close form one episode (default: one step)")
    parser.add_argument(
        "--jobs", type=int, default=0, help="worker processes for the detectors (default: one per CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument(
        "--through-kafka", action="store_true",
        help="measure end to end: produce to a fresh topic, score with one Faust worker, read its anomalies "
        "(starts the local stack if needed; ignores --start/--detectors/--threshold/--param)",
    )


def parse_thresholds(text: str, detectors: Sequence[str]) -> dict[str, float]:
    """``"0.9999"`` or ``"0.9999,stuck=0.999"`` -> per-detector thresholds.

    >>> parse_thresholds("0.99,stuck=0.5", ["zscore", "stuck"])
    {'zscore': 0.99, 'stuck': 0.5}
    """
    default = DEFAULT_THRESHOLD
    per: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            k, v = part.split("=", 1)
            per[k.strip()] = float(v)
        else:
            default = float(part)
    return {d: per.get(d, default) for d in detectors}


def parse_params(items: Sequence[str]) -> dict[str, dict[str, object]]:
    """``["zscore.window=60"]`` -> ``{"zscore": {"window": 60}}``.

    >>> parse_params(["zscore.window=60", "stuck.tol=0.001", "x.mode=fast"])
    {'zscore': {'window': 60}, 'stuck': {'tol': 0.001}, 'x': {'mode': 'fast'}}
    """
    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        det, _, name = key.partition(".")
        if not (det and name and _):
            raise ValueError(f"--param {item!r}: expected DET.KEY=VALUE")
        value: object = raw
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                pass
        out.setdefault(det, {})[name] = value
    return out


def run_faults(args, settings) -> int:
    from evaluation.faults import GAP_DETECTOR, default_detectors, evaluate, format_table, record

    if args.through_kafka:
        return run_faults_through_kafka(args, settings)
    seed = settings.seed if args.seed is None else args.seed
    step_ms = int(round(args.step_s * 1000))
    if step_ms <= 0 or args.homes < 1 or args.hours <= 0:
        raise CommandError("--homes, --hours and --step-s must be positive")
    try:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--start {args.start!r}: not an ISO 8601 time") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    kinds = fault_kinds(args.kinds)
    try:
        known = default_detectors() + [GAP_DETECTOR]
    except Exception as exc:  # a broken detector module should say so, not crash the CLI
        raise CommandError(f"cannot load the detectors: {exc}") from exc
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()] or known
    unknown = [d for d in detectors if d not in known]
    if unknown:
        raise CommandError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        thresholds = parse_thresholds(args.threshold, [d for d in detectors if d != GAP_DETECTOR])
        params = parse_params(args.param)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    progress = not args.no_progress
    t0 = time.perf_counter()
    rec = record(
        args.homes, args.hours, seed, step_ms=step_ms, start_ms=start_ms, regions=settings.regions,
        kinds=kinds, faults_per_kind=args.faults_per_kind, progress=progress,
    )
    sim_s = time.perf_counter() - t0
    merge = None if args.merge_gap_s is None else int(round(args.merge_gap_s * 1000))
    report = evaluate(
        rec, detectors, thresholds, params, grace_ms=int(round(args.grace_s * 1000)), merge_gap_ms=merge,
        progress=progress, jobs=args.jobs or os.cpu_count() or 1,
    )
    report.update(
        seed=seed, hours=args.hours, start=start.isoformat(), kinds=list(kinds), thresholds=thresholds,
        params=params, simulate_seconds=sim_s,
    )
    if args.json:
        return print_json(report)
    print(
        f"Fault detection: {report['homes']} homes x {args.hours:g} h at {step_ms / 1000:g} s steps "
        f"from {start:%Y-%m-%d %H:%M} UTC, seed {seed}: {report['readings']:,} readings, "
        f"{len(rec.faults)} faults, {report['series']} scored series"
    )
    thr = ", ".join(f"{k} {v:g}" for k, v in thresholds.items())
    print(
        f"alarm: score >= threshold ({thr}); episode = alarms <= {report['merge_gap_ms'] / 1000:g} s apart; "
        f"match window = [start, end + {report['grace_ms'] / 1000:g} s]"
    )
    print()
    print(format_table(report))
    print(
        "CPU time: simulate {:.1f} s; ".format(sim_s)
        + ", ".join(f"{k} {v:.1f} s" for k, v in report["detector_seconds"].items())
    )
    return 0



def run_faults_through_kafka(args, settings) -> int:
    """``ecoretrofit eval faults --through-kafka``."""
    from evaluation.faults import format_table
    from evaluation.faults_kafka import evaluate_through_kafka, format_counts

    kinds = fault_kinds(args.kinds)
    seed = settings.seed if args.seed is None else args.seed
    try:
        report = evaluate_through_kafka(
            settings, homes=args.homes, hours=args.hours, step_s=args.step_s, seed=seed, kinds=kinds,
            faults_per_kind=args.faults_per_kind, grace_s=args.grace_s, progress=not args.no_progress,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        return print_json(report)
    print(
        f"Fault detection through Kafka ({report['detector']} + stuck + gap in one Faust worker): "
        f"{report['homes']} homes x {report['hours']:g} h at {report['step_ms'] / 1000:g} s steps, seed {seed}, "
        f"{len(report['faults'])} faults; episode = alarms <= {report['merge_gap_ms'] / 1000:g} s apart; "
        f"match window = [start, end + {report['grace_ms'] / 1000:g} s]"
    )
    print(format_counts(report))
    print()
    # format_table's last line is about per-series rates, which do not apply here
    print("\n".join(format_table({**report, "false_episodes_per_series_day": {}}).splitlines()[:-1]))
    print(
        "false episodes per home-day: "
        + ", ".join(f"{k} {v:.2f}" for k, v in report["false_episodes_per_home_day"].items())
    )
    return 0


def fault_kinds(text: str) -> tuple[str, ...]:
    """``--kinds a,b`` -> the fault kinds (all when empty); unknown ones are an error."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip()) or KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise CommandError(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    return kinds


def print_json(report: dict) -> int:
    json.dump(report, sys.stdout, indent=2, default=json_default)
    print()
    return 0


def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- nab


def _run_nab(args: argparse.Namespace) -> int:
    from evaluation import nab
    from processors.detectors import available

    data = Path(args.data)
    try:
        files = nab.load_corpus(data)
        profiles = nab.load_profiles(data)
    except (nab.NabError, OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    missing = [p for p in nab.PROFILE_NAMES if p not in profiles]
    if missing:
        raise CommandError(f"{data}/config/profiles.json lacks profiles {missing}")

    known = available()
    if args.detectors:
        names = [n.strip() for n in args.detectors.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CommandError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(known)}")
    else:
        names = [] if args.scores else known

    results: dict[str, dict] = {}  # label -> {"source", "profiles", "seconds"}
    n_events = sum(len(f) for f in files)
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: {len(files)} files, {n_events:,} events", file=sys.stderr)
        t0 = time.perf_counter()
        scores = nab.run_detector(name, files, jobs=max(1, args.jobs), progress=True, desc=name)
        seconds = time.perf_counter() - t0
        results[name] = {"source": "run", "seconds": seconds,
                         "profiles": nab.score_corpus(files, scores, profiles), "scores": scores}

    external: list[tuple[str, Path, str]] = []
    if args.scores:
        root = Path(args.scores)
        try:
            external += [(d, root, "results") for d in nab.result_detectors(root)]
        except nab.NabError as exc:
            raise CommandError(str(exc)) from None
        if not external:
            raise CommandError(f"{root}: no detector directories")
    ref_root = data / "results"
    if not args.no_reference and ref_root.is_dir() and (not args.scores or ref_root.resolve() != Path(args.scores).resolve()):
        external += [(d, ref_root, "reference") for d in nab.result_detectors(ref_root)]
    for det, root, source in external:
        try:
            scores = nab.load_results(root, det, files)
        except nab.NabError as exc:
            if source == "reference":
                print(f"reference {det}: skipped ({exc})", file=sys.stderr)
                continue
            raise CommandError(str(exc)) from None
        label = det if det not in results else f"{det} ({source})"
        results[label] = {"source": source, "seconds": None,
                          "profiles": nab.score_corpus(files, scores, profiles), "scores": scores}

    if args.json:
        print(json.dumps(_as_json(data, files, results), indent=2))
    else:
        print(_format(data, files, results, show_files=args.files, jobs=max(1, args.jobs)))
    return 0


_SHORT = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}


def _as_json(data: Path, files, results: dict) -> dict:
    out = {"data": str(data), "files": len(files), "windows": sum(len(f.windows) for f in files),
           "events": sum(len(f) for f in files), "detectors": {},
           "published_scoreboard_58_files": {
               k: dict(zip(("standard", "reward_low_FP_rate", "reward_low_FN_rate"), v))
               for k, v in __import__("evaluation.nab", fromlist=["x"]).PUBLISHED_SCOREBOARD.items()}}
    for label, r in results.items():
        d = {"source": r["source"], "seconds": r["seconds"], "profiles": {}}
        for prof, pr in r["profiles"].items():
            hit, total = pr.windows_detected(files, r["scores"])
            d["profiles"][prof] = {
                "normalized": pr.normalized, "raw": pr.raw, "threshold": pr.threshold,
                "null": pr.null, "perfect": pr.perfect, "windows_detected": hit, "windows": total,
                **pr.counts,
                "files": [{"file": fs.name, "score": fs.score, "tp": fs.tp, "tn": fs.tn,
                           "fp": fs.fp, "fn": fs.fn, "total": fs.total} for fs in pr.files],
            }
        out["detectors"][label] = d
    return out


def _format(data: Path, files, results: dict, show_files: bool = False, jobs: int = 1) -> str:
    from evaluation.nab import PUBLISHED_SCOREBOARD

    n_windows = sum(len(f.windows) for f in files)
    n_events = sum(len(f) for f in files)
    lines = [f"NAB scores on {data}: {len(files)} files, {n_windows} windows, {n_events:,} events",
             "(normalised: 0 = null detector, 100 = perfect; the published scoreboard is on all 58 files,",
             " so a subset's numbers are comparable in kind, not to the decimal)", ""]

    rows = []
    for label, r in results.items():
        p = r["profiles"]
        rows.append((p["standard"].normalized, label,
                     [p[k].normalized for k in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")],
                     "this corpus" + (", NAB's output" if r["source"] != "run" else "")))
    for name, vals in PUBLISHED_SCOREBOARD.items():
        rows.append((vals[0], name, list(vals), "published, 58 files"))
    rows.sort(key=lambda r: -r[0])
    w = max(len(r[1]) for r in rows) + 2
    lines.append(f"{'detector':<{w}}{'standard':>9}{'low FP':>9}{'low FN':>9}   source")
    lines.append("-" * (w + 27 + 3 + 22))
    for _, label, vals, source in rows:
        mark = "* " if source.startswith("this") else "  "
        lines.append(f"{mark}{label:<{w - 2}}" + "".join(f"{v:9.1f}" for v in vals) + f"   {source}")
    lines.append("")

    lines.append("Per detector and profile (this corpus; 'windows' = windows with a detection, "
                 "FP/TP rows = rows at or above the threshold outside/inside windows):")
    lines.append(f"{'detector':<{w}}{'profile':<10}{'score':>7}{'threshold':>12}{'raw':>9}"
                 f"{'windows':>9}{'FP rows':>9}{'TP rows':>9}  wall time")
    for label, r in sorted(results.items(), key=lambda kv: -kv[1]["profiles"]["standard"].normalized):
        for prof, pr in r["profiles"].items():
            hit, total = pr.windows_detected(files, r["scores"])
            c = pr.counts
            thr = "never" if pr.threshold == float("inf") else f"{pr.threshold:.6f}"
            t = "" if r["seconds"] is None else f"{r['seconds']:.1f}s on {jobs} process{'es' if jobs > 1 else ''}"
            lines.append(f"{label:<{w}}{_SHORT.get(prof, prof):<10}{pr.normalized:7.1f}{thr:>12}"
                         f"{pr.raw:9.2f}{f'{hit}/{total}':>9}{c['fp']:9d}{c['tp']:9d}  "
                         + (t if prof == "standard" else ""))
    if show_files:
        for label, r in results.items():
            pr = r["profiles"]["standard"]
            lines.append("")
            lines.append(f"{label}, standard profile, threshold {pr.threshold:.6f}:")
            for fs in pr.files:
                lines.append(f"  {fs.name:<58}{fs.score:8.2f}  TP {fs.tp:5d}  FP {fs.fp:4d}  FN {fs.fn:5d}")
    return "\n".join(lines)
