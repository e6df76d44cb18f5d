"""The NAB scorer against NAB's own numbers, file by file, and against NAB's rules.

The shared NAB subset (data, labels, profiles and NAB's windowedGaussian results) is
found through ECO_NAB_DIR, by default ``<repo>/../shared/nab``. Without it these tests
fail: a scorer that is not checked against NAB is not a NAB scorer.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from evaluation import nab

REPO = Path(__file__).resolve().parents[1]
NAB_DIR = Path(os.environ.get("ECO_NAB_DIR", REPO.parent / "shared" / "nab"))
REF = "windowedGaussian"


@pytest.fixture(scope="module")
def corpus():
    if not (NAB_DIR / "data").is_dir() or not (NAB_DIR / "results" / REF).is_dir():
        pytest.fail(f"NAB data not found at {NAB_DIR} (set ECO_NAB_DIR to the directory with "
                    f"data/, labels/, config/ and results/{REF}/)", pytrace=False)
    files = nab.load_corpus(NAB_DIR)
    return files, nab.load_profiles(NAB_DIR), nab.load_results(NAB_DIR / "results", REF, files)


def _reference_rows(profile: str) -> dict[str, dict[str, str]]:
    with open(NAB_DIR / "results" / REF / f"{REF}_{profile}_scores.csv", newline="") as fh:
        return {r["File"]: r for r in csv.DictReader(fh) if r["File"].endswith(".csv")}


def test_corpus_matches_labels(corpus):
    files, profiles, _ = corpus
    with open(NAB_DIR / "labels" / "combined_windows.json") as fh:
        labels = json.load(fh)
    assert {f.name for f in files} == {k for k in labels if (NAB_DIR / "data" / k).exists()}
    assert sum(len(f.windows) for f in files) == sum(len(labels[f.name]) for f in files)
    assert set(nab.PROFILE_NAMES) <= set(profiles)


@pytest.mark.parametrize("profile", nab.PROFILE_NAMES)
def test_file_by_file_against_nab(corpus, profile):
    """Counts and raw score of every file at NAB's threshold, as in NAB's own output."""
    files, profiles, scores = corpus
    ref = _reference_rows(profile)
    assert set(ref) == {f.name for f in files}
    mismatches = []
    for f in files:
        r = ref[f.name]
        got = nab.score_file(f, scores[f.name], float(r["Threshold"]), profiles[profile])
        want = (int(r["TP"]), int(r["TN"]), int(r["FP"]), int(r["FN"]), int(r["Total_Count"]))
        if (got.tp, got.tn, got.fp, got.fn, got.total) != want or abs(got.score - float(r["Score"])) > 1e-6:
            mismatches.append((f.name, want, float(r["Score"]), got))
    assert not mismatches, mismatches


@pytest.mark.parametrize("profile", nab.PROFILE_NAMES)
def test_row_rewards_against_nab(corpus, profile):
    """NAB's per-row column S(t): FP rows carry the FP reward, and each window's entries
    add up to its TP reward (first detection) or -fnWeight (missed)."""
    files, profiles, scores = corpus
    cost = profiles[profile]
    thresholds = {k: float(v["Threshold"]) for k, v in _reference_rows(profile).items()}
    for f in files:
        cat, name = f.name.split("/")
        with open(NAB_DIR / "results" / REF / cat / f"{REF}_{name}", newline="") as fh:
            rows = list(csv.DictReader(fh))
        st = np.array([float(r[f"S(t)_{profile}"]) for r in rows])
        labels = np.array([int(r["label"]) for r in rows])
        assert np.array_equal(labels == 1, f.window_id >= 0), f.name
        det = scores[f.name] >= thresholds[f.name]
        det[: f.probation] = False
        outside = f.window_id < 0
        expected_fp = np.where(det & outside, f.fp_curve * cost.fp, 0.0)
        np.testing.assert_allclose(st[outside], expected_fp[outside], atol=1e-9, err_msg=f.name)
        for start, end in f.windows:
            hits = np.flatnonzero(det[start:end + 1])
            want = f.tp_curve[start + hits[0]] * cost.tp if len(hits) else -cost.fn
            assert st[start:end + 1].sum() == pytest.approx(want, abs=1e-9), (f.name, start)


def test_sweep_reproduces_nab_threshold_and_is_consistent(corpus):
    files, profiles, scores = corpus
    for profile, cost in profiles.items():
        thresholds, raws = nab.sweep_thresholds(files, scores, cost)
        res = nab.score_profile(files, scores, cost, profile)
        # the swept optimum is what scoring the files at that threshold gives
        assert res.raw == pytest.approx(raws.max(), abs=1e-9)
        # and no threshold NAB could have chosen does better on this corpus
        for t in (1.0, 0.999, 0.99, 0.9, 0.5):
            at_t = sum(nab.score_file(f, scores[f.name], t, cost).score for f in files)
            assert at_t <= res.raw + 1e-9
    std = nab.score_profile(files, scores, profiles["standard"], "standard")
    assert std.threshold == 1.0  # NAB's own choice for windowedGaussian
    assert 30.0 < std.normalized < 45.0  # 39.6 on all 58 files


def test_sweep_matches_brute_force_on_random_scores(corpus):
    files, profiles, _ = corpus
    rng = np.random.default_rng(0)
    subset = [f for f in files if f.windows][:6]
    scores = {f.name: np.round(rng.random(len(f)) ** 30, 3) for f in subset}
    cost = profiles["reward_low_FN_rate"]
    thresholds, raws = nab.sweep_thresholds(subset, scores, cost)
    for t, raw in list(zip(thresholds, raws))[:40]:
        brute = sum(nab.score_file(f, scores[f.name], t, cost).score for f in subset)
        assert raw == pytest.approx(brute, abs=1e-9), t


def test_null_and_perfect_detectors_normalise_to_0_and_100(corpus):
    files, profiles, _ = corpus
    null = {f.name: np.zeros(len(f)) for f in files}
    perfect = {}
    for f in files:
        s = np.zeros(len(f))
        for start, _ in f.windows:
            s[start] = 1.0
        perfect[f.name] = s
    for profile, cost in profiles.items():
        assert nab.score_profile(files, null, cost).normalized == pytest.approx(0.0)
        assert nab.score_profile(files, perfect, cost).normalized == pytest.approx(100.0)


# ------------------------------------------------------------------ NAB's rules, synthetic


def _synthetic(n=1000, windows=((500, 509),), probation=True):
    ts = np.arange(n).astype("datetime64[m]").astype("datetime64[s]")
    f = nab.NabFile("x/y.csv", ts, np.zeros(n), list(windows))
    if not probation:
        f.probation = 0
    return f


COST = nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)


def test_rules_on_synthetic_files():
    f = _synthetic(probation=False)
    s = np.zeros(len(f))
    assert nab.score_file(f, s, 0.5, COST).score == -1.0                      # missed window
    s[500] = 1.0
    assert nab.score_file(f, s, 0.5, COST).score == pytest.approx(1.0)       # left edge = tpWeight
    late = np.zeros(len(f)); late[505] = 1.0
    assert 0.0 < nab.score_file(f, late, 0.5, COST).score < 1.0              # later is worth less
    both = s.copy(); both[505] = 1.0
    assert nab.score_file(f, both, 0.5, COST).score == pytest.approx(1.0)    # only the first counts
    before = np.zeros(len(f)); before[100] = 1.0
    assert nab.score_file(f, before, 0.5, COST).score == pytest.approx(-1.0 - 0.11)
    just_after = np.zeros(len(f)); just_after[510] = 1.0
    far_after = np.zeros(len(f)); far_after[900] = 1.0
    a = nab.score_file(f, just_after, 0.5, COST).score
    b = nab.score_file(f, far_after, 0.5, COST).score
    assert -1.11 <= b < a < -1.0 + 1e-9 and b == pytest.approx(-1.11)        # FPs after a window
    g = _synthetic()                                                          # with probation (150 rows)
    early = np.zeros(len(g)); early[10] = 1.0
    fs = nab.score_file(g, early, 0.5, COST)
    assert fs.fp == 0 and fs.score == -1.0 and fs.tn + fs.fn == len(g) - 150


def test_probation_length():
    assert nab.probation_length(4032) == 604
    assert nab.probation_length(15858) == 750


# ------------------------------------------------------------------ command line


def test_cli_scores_external_results(corpus, capsys):
    from ecoretrofit.cli import main

    rc = main(["eval", "nab", "--data", str(NAB_DIR), "--scores", str(NAB_DIR / "results"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    res = out["detectors"][REF]["profiles"]
    assert res["standard"]["threshold"] == 1.0
    assert 30.0 < res["standard"]["normalized"] < 45.0
    assert len(res["standard"]["files"]) == out["files"]


def test_cli_table_runs_a_detector(corpus, capsys):
    from ecoretrofit.cli import main

    rc = main(["eval", "nab", "--data", str(NAB_DIR), "--detectors", "extreme", "--no-reference", "--jobs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "extreme" in out and "Numenta HTM" in out and "low FN" in out


def test_cli_faults_dispatch(monkeypatch):
    from ecoretrofit.cli import main
    from evaluation import eval_cli

    seen = {}
    monkeypatch.setattr(eval_cli, "run_faults_through_kafka", lambda args, settings: seen.update(vars(args)) or 7)
    assert main(["eval", "faults", "--through-kafka", "--homes", "3", "--hours", "6"]) == 7
    assert seen["homes"] == 3 and seen["hours"] == 6.0 and seen["through_kafka"]
