"""Reliability statistics recover the simulator's component lives (pure, no stack)."""

from __future__ import annotations

import json
import math

import pytest

from ecoretrofit.cli import main
from maintenance.assets import ASSET_TYPES
from maintenance.fleet import Fleet, MaintenanceConfig
from maintenance.stats import fit_group, next_failures, reliability, unit_lives, weibull_residual_days

NOW = 1_700_000_000_000
# Stated tolerance on a long run (3,000 homes, up to 10 years of history): for every
# (type, model) with at least 200 failures, the Weibull fit is within 15% of the true
# shape and 8% of the true scale, and the fitted mean life (MTBF) within 8% of the true one.
MIN_FAILURES, SHAPE_TOL, SCALE_TOL, MEAN_TOL = 200, 0.15, 0.08, 0.08


@pytest.fixture(scope="module")
def city():
    n = 3000
    fleet = Fleet(11, [f"H{i:06d}" for i in range(n)], ["north", "south", "east"] * (n // 3),
                  [i % 3 == 0 for i in range(n)], NOW, MaintenanceConfig(history_years=10))
    return fleet, fleet.register(), fleet.drain_orders()


def test_weibull_fit_recovers_the_simulators_lives(city):
    fleet, register, orders = city
    checked = 0
    for g in reliability(register, orders, NOW, by="model"):
        if g.failures < MIN_FAILURES:
            continue
        spec = ASSET_TYPES[g.group[0]]
        scale = spec.scale_days * dict(spec.models)[g.group[1]]
        assert abs(g.weibull_shape / spec.shape - 1) < SHAPE_TOL, g
        assert abs(g.weibull_scale_days / scale - 1) < SCALE_TOL, g
        assert abs(g.mtbf_days / fleet.true_mean_life_days(*g.group) - 1) < MEAN_TOL, g
        checked += 1
    assert checked >= 6


def test_censoring_is_what_makes_it_right(city):
    """Filters are replaced every 120 days (history policy): most lives end censored.
    Averaging the observed failures alone underestimates the life badly."""
    fleet, register, orders = city
    lives = [x for x in unit_lives(register, orders, NOW) if x.asset_type == "water_filter" and x.model == "WF-10"]
    true_mean = fleet.true_mean_life_days("water_filter", "WF-10")
    naive = sum(x.days for x in lives if x.failed) / sum(x.failed for x in lives)
    assert naive < 0.8 * true_mean
    g = fit_group(lives)
    assert abs(g.mtbf_days / true_mean - 1) < MEAN_TOL
    assert sum(not x.failed for x in lives) > sum(x.failed for x in lives)


def test_lives_account_for_every_failure_and_unit(city):
    fleet, register, orders = city
    lives = unit_lives(register, orders, NOW)
    assert sum(x.failed for x in lives) == len(fleet.failures)
    replaced = {o["order_id"] for o in orders if o["status"] == "closed" and o["replaced"]}
    # one life per component, plus one per replacement (a failed unit waiting for its
    # technician ends its asset's lives)
    assert len(lives) == len(register) + len(replaced)
    assert all(x.days > 0 for x in lives)


def test_kaplan_meier_median_matches_the_true_median(city):
    _, register, orders = city
    for g in reliability(register, orders, NOW, by="model"):
        if g.failures >= MIN_FAILURES and g.km_median_days is not None:
            spec = ASSET_TYPES[g.group[0]]
            true_median = spec.scale_days * dict(spec.models)[g.group[1]] * math.log(2) ** (1 / spec.shape)
            assert abs(g.km_median_days / true_median - 1) < 0.1, g


def test_mttr_is_report_plus_technician_delay_plus_repair(city):
    fleet, register, orders = city
    cfg = fleet.config
    for g in reliability(register, orders, NOW, by="type"):
        if g.failures >= 20:
            spec = ASSET_TYPES[g.group[0]]
            expected = (cfg.report_delay_ms + cfg.technician_delay_ms) / 3_600_000 + spec.repair_hours
            assert abs(g.mttr_hours - expected) < 0.25 * spec.repair_hours + 0.5, g


def test_next_failure_is_sooner_for_older_units(city):
    _, register, orders = city
    fits = reliability(register, orders, NOW, by="model")
    nxt = next_failures(register, orders, NOW, fits)
    assert nxt == sorted(nxt, key=lambda r: r["next_failure_ms"])
    pumps = [r for r in nxt if r["model"] == "CP-25" and r["expected_remaining_days"] > 0]
    old, young = max(pumps, key=lambda r: r["age_days"]), min(pumps, key=lambda r: r["age_days"])
    assert old["expected_remaining_days"] < young["expected_remaining_days"]
    assert weibull_residual_days(0.0, 2.0, 100.0) == pytest.approx(100.0 * math.gamma(1.5))


def test_cli_json(capsys):
    assert main(["maintenance", "stats", "--homes", "300", "--by", "region", "--json", "--next", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["homes"] == 300 and len(out["next_failures"]) == 3
    assert {g["group"][0] for g in out["groups"]} >= {"circulation_pump", "uv_lamp", "water_filter"}
    assert all(len(g["group"]) == 2 for g in out["groups"])
