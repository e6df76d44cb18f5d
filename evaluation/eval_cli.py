"""``ecoretrofit eval``: score the detectors.

- ``ecoretrofit eval nab --data DIR [--detectors a,b] [--scores RESULTS_DIR] [--json]``
  streams every NAB series through each detector (score, then learn, per row) and
  scores the result the way NAB does, beside NAB's published scoreboard. Result
  directories in NAB's layout (``RESULTS_DIR/<detector>/<category>/<detector>_<file>.csv``)
  can be scored too; ``DIR/results`` is scored as a reference when present.
- ``ecoretrofit eval faults …`` is delegated to ``evaluation.faults`` (fault injection
  on simulated homes), imported only when chosen.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from ecoretrofit.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="{nab,faults,rul}")
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

    # Everything after "faults" goes to evaluation.faults' own parser, built in run():
    # '+' as prefix so that this placeholder takes "--options" as plain words.
    faults = sub.add_parser("faults", help="score detectors on simulated homes with injected faults",
                            add_help=False, prefix_chars="+")
    faults.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace, settings: object) -> int:
    if args.eval_command == "rul":
        from evaluation import rul

        return rul.run(args, settings)
    if args.eval_command == "faults":
        return _run_faults(args.rest, settings)
    return _run_nab(args)


# --------------------------------------------------------------------------- faults


def _run_faults(argv: list[str], settings: object) -> int:
    if "evaluation.faults" not in sys.modules and importlib.util.find_spec("evaluation.faults") is None:
        raise CommandError("'eval faults' is not available yet: evaluation/faults.py "
                           "(the fault-injection evaluation) is not in this checkout")
    faults = importlib.import_module("evaluation.faults")
    parser = argparse.ArgumentParser(prog="ecoretrofit eval faults",
                                     description=(faults.__doc__ or "").strip().split("\n")[0] or None)
    faults.add_arguments(parser)
    return int(faults.run(parser.parse_args(argv), settings) or 0)


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
