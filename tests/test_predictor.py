"""The online failure predictor: learning from failures, checkpoints, C-MAPSS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecoretrofit.cli import main
from ecoretrofit.errors import CommandError
from evaluation import rul
from maintenance.predictor import RulPredictor

CMAPSS = Path(__file__).resolve().parents[1].parent / "shared" / "cmapss" / "train_FD001.txt"
if not CMAPSS.exists():
    CMAPSS = Path("/work/shared/cmapss/train_FD001.txt")


def unit(rng, life, onset=60):
    """A synthetic unit: 'wear' rises over its last ``onset`` readings, 'noise' is noise."""
    for t in range(life):
        w = max(0.0, 1.0 - (life - t) / onset)
        yield {"wear": 10.0 + 3.0 * w ** 1.5 + 0.2 * rng.standard_normal(), "noise": rng.standard_normal()}


def trained(seed=0, units=30):
    rng = np.random.default_rng(seed)
    p = RulPredictor(["wear", "noise"], window=10, cap=60, horizon=15)
    for k in range(units):
        for r in unit(rng, int(rng.integers(120, 200))):
            p.update(f"u{k}", r)
        assert p.failed(f"u{k}") > 0
    return p, rng


def test_learns_from_failures_and_sees_the_end_coming():
    p, rng = trained()
    preds = [p.update("new", r) for r in unit(rng, 150)]
    early, late = preds[50], preds[-5]
    assert early.rul > 45 and early.p_fail < 0.1
    assert late.rul < 20 and late.p_fail > 0.5
    assert late.top_signals and late.top_signals[0][0] == "wear"
    rmse = np.sqrt(np.mean([(pr.rul - min(149 - i, 60)) ** 2 for i, pr in enumerate(preds)]))
    assert rmse < 10


def test_untrained_predictor_says_healthy():
    p = RulPredictor(["a"], cap=100, horizon=10)
    pred = p.update("x", {"a": 1.0})
    assert pred.rul == 100 and pred.p_fail < 0.05 and pred.top_signals == ()


def test_a_repair_resets_the_prediction():
    p, rng = trained()
    for r in unit(rng, 150):
        worn = p.update("pump", r)
    assert worn.p_fail > 0.5
    labels = p.labels
    p.reset("pump")  # the technician replaced the worn part: no label, fresh indicators
    assert p.labels == labels and "pump" not in p.assets
    fresh = [p.update("pump", r) for r in unit(rng, 400)][:40]
    assert fresh[-1].p_fail < 0.1 and fresh[-1].rul > 45


def test_checkpoint_is_json_and_resumes_exactly():
    p, rng = trained(units=10)
    rows = list(unit(rng, 150))
    for r in rows[:100]:
        p.update("a", r)
    text = json.dumps(p.state())
    q = RulPredictor.from_state(json.loads(text))
    for r in rows[100:]:
        assert p.update("a", r) == q.update("a", r)
    p.failed("a"), q.failed("a")
    assert np.allclose(p.w, q.w)
    with pytest.raises(ValueError):
        RulPredictor.from_state({**json.loads(text), "name": "other"})
    bad = json.loads(text)
    bad["w"] = bad["w"][:-1]
    with pytest.raises(ValueError):
        RulPredictor.from_state(bad)


def test_missing_or_broken_values_keep_the_last_level():
    p = RulPredictor(["a", "b"])
    p.update("x", {"a": 1.0, "b": 2.0})
    p.update("x", {"a": None, "b": float("nan")})
    p.update("x", {"b": "inf"})
    assert np.allclose(p.assets["x"].level, [1.0, 2.0]) and p.count == 1


def test_bias_corrected_levels_are_weighted_means_from_the_first_reading():
    xs = [10.0, 0.0, 0.0, 0.0]  # a noisy first reading, then the true value
    plain, corrected = RulPredictor(["a"], alphas=(0.1,)), RulPredictor(["a"], alphas=(0.1,), bias_correction=True)
    for x in xs:
        plain.update("u", {"a": x}), corrected.update("u", {"a": x})
    weights = 0.9 ** np.arange(len(xs))[::-1]
    assert corrected.assets["u"].level[0, 0] == pytest.approx(weights @ xs / weights.sum())  # 10 * 0.729 / 3.439
    assert plain.assets["u"].level[0, 0] == pytest.approx(10.0 * 0.9 ** 3)  # still dominated by the first
    # a checkpoint of version 1 (no weights) loads as settled plain levels
    old = json.loads(json.dumps(plain.state()))
    old["version"] = 1
    del old["assets"]["u"]["weight"]
    restored = RulPredictor.from_state(old)
    assert restored.assets["u"].weight[0, 0] == pytest.approx(10.0)
    assert restored.update("u", {"a": 0.0}) == plain.update("u", {"a": 0.0})


def test_phm08_and_rmse():
    assert rul.rmse([1, 2], [1, 4]) == pytest.approx(np.sqrt(2))
    assert rul.phm08_score([50], [60]) > rul.phm08_score([60], [50]) > 0  # late costs more


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(CommandError, match="26 columns"):
        rul.load(bad)
    bad.write_text("hello\n")
    with pytest.raises(CommandError):
        rul.load(bad)
    gap = tmp_path / "g.txt"
    gap.write_text("\n".join(" ".join(["1", str(c)] + ["0.5"] * 24) for c in (1, 3)))
    with pytest.raises(CommandError, match="cycles"):
        rul.load(gap)


@pytest.mark.skipif(not CMAPSS.exists(), reason="shared C-MAPSS FD001 not present")
def test_eval_rul_cross_validates_on_cmapss(capsys):
    assert main(["eval", "rul", "--train", str(CMAPSS), "--folds", "2", "--cuts", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "truth capped at 125" and out["scored"] == 100
    # far better than predicting the mean; the README has the 5-fold figures
    assert out["rmse"] < 20 and out["score"] > 0
