"""steadytune plan: seeds per recipe from a pilot study or stated values, and what more seeds buy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from steadytune.analyses import power as pw
from steadytune.analyses.intervals import wilson_interval
from steadytune.analyses.planning import plan_lines, plan_seeds, precision_table
from steadytune.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
COLA = ROOT / "results" / "table1-cola1k-cpu.db"


def _pilot(values: dict[str, list[float]], task: str = "cola") -> pd.DataFrame:
    rows = [{"task": task, "model": "minilm", "recipe": recipe, "grid": "", "seed": seed, "metric": "mcc",
             "final": v, "best": v, "baseline": 0.0, "status": "diverged" if np.isnan(v) else "finished"}
            for recipe, vs in values.items() for seed, v in enumerate(vs, start=1)]
    return pd.DataFrame(rows)


A = [0.0, 0.0, 0.02, 0.05, 0.01, 0.04, 0.03, np.nan]  # 3 failed (two at the baseline, one diverged)
B = [0.08, 0.09, 0.07, 0.1, 0.085, 0.095, 0.06, 0.075]


def test_a_pilot_pair_gives_one_row_per_quantity_from_the_power_functions():
    table = plan_seeds(_pilot({"b": B, "a": A}))
    assert list(table["quantity"]) == ["failure rate", "mean", "std"]
    assert set(table["recipe_a"]) == {"a"} and set(table["recipe_b"]) == {"b"}  # alphabetical
    rate, mean, spread = (table.iloc[i] for i in range(3))
    assert (rate["failed_a"], rate["failed_b"], rate["n_pilot_a"]) == (3, 0, 8)
    assert rate["seeds"] == pw.seeds_for_rates_exact(3 / 8, 0.0) and rate["seeds_normal"] == pw.seeds_for_rates(3 / 8, 0)
    fa = 100 * np.array(A[:7])
    fb = 100 * np.array(B)
    assert mean["value_a"] == pytest.approx(fa.mean())
    assert mean["seeds"] == pw.seeds_for_means(fa.mean(), fb.mean(), fa.std(ddof=1), fb.std(ddof=1))
    assert spread["seeds"] == pw.seeds_for_spread(fa, fb)
    assert spread["value_b"] == pytest.approx(fb.std(ddof=1))


def test_the_answer_is_one_line():
    table = plan_seeds(_pilot({"a": A, "b": B}), alternative="larger")
    line = plan_lines(table)[0]
    n, approx = pw.seeds_for_rates_exact(3 / 8, 0, alternative="larger"), pw.seeds_for_rates(3 / 8, 0,
                                                                                             alternative="larger")
    assert line == (f"cola minilm: a vs b, failure rate 38% vs 0% (pilot 3/8 vs 0/8 failed): {n} seeds per recipe "
                    f"(Fisher's exact test, one-sided α = 0.05, power 0.8; normal approximation: {approx})")
    assert "the pilot points the other way (a's is not larger)" in plan_lines(table)[1]
    assert plan_lines(plan_seeds(rates=[0.2, 0.2])) == [
        "A vs B, failure rate 20% vs 20%: no difference: no number of seeds shows one (normal approximation "
        "(arcsine), two-sided α = 0.05, power 0.8)"]


def test_stated_values():
    table = plan_seeds(rates=[0.3, 0.1], means=[3.0, 8.0], stds=[3.6, 1.3], alpha=0.01, power=0.9)
    assert list(table["quantity"]) == ["failure rate", "mean", "std"]
    assert table.iloc[0]["seeds"] == pw.seeds_for_rates_exact(0.3, 0.1, 0.01, 0.9, max_n=400)
    assert table.iloc[1]["seeds"] == pw.seeds_for_means(3.0, 8.0, 3.6, 1.3, 0.01, 0.9)
    assert table.iloc[2]["seeds"] == pw.seeds_for_spread(3.6, 1.3, 0.01, 0.9)
    assert plan_seeds(stds=[1.0, 2.0])["quantity"].tolist() == ["std"]


@pytest.mark.parametrize("kwargs, words", [
    ({"power": 1.2}, r"power must be in \(0, 1\), got 1.2"),
    ({"alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
    ({"recipes": ["a", "c"]}, "unknown recipe 'c'; the pilot has a, b"),
    ({"recipes": ["a"]}, "recipes: give two to compare"),
    ({"tasks": ["rte"]}, "unknown task 'rte'"),
    ({"rates": [0.1, 0.2]}, "not both"),
])
def test_bad_plans_are_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        plan_seeds(_pilot({"a": A, "b": B}), **kwargs)


def test_small_pilots_and_missing_values_are_refused():
    with pytest.raises(ValueError, match=r"pilot group cola/minilm/b has 2 run\(s\); a pilot needs at least 3"):
        plan_seeds(_pilot({"a": A, "b": B[:2]}))
    with pytest.raises(ValueError, match="pilot group cola/minilm/a has 2 run"):
        precision_table(_pilot({"a": A[:2]}))
    with pytest.raises(ValueError, match="two recipes"):
        plan_seeds(_pilot({"a": A}))
    with pytest.raises(ValueError, match="nothing to plan"):
        plan_seeds()
    with pytest.raises(ValueError, match="means need stds"):
        plan_seeds(means=[1, 2])
    with pytest.raises(ValueError, match=r"rates needs two values \(A, B\)"):
        plan_seeds(rates=[0.1])


def test_precision_table_against_scipy_and_simulation():
    table = precision_table(_pilot({"a": A}), max_n=12)
    assert list(table["n_seeds"]) == list(range(1, 13)) and set(table["n_pilot"]) == {8}
    fa = np.array(A[:7])
    row = table.set_index("n_seeds").loc[5]
    low, high = sps.t.interval(0.95, 4, loc=0.0, scale=fa.std(ddof=1) / np.sqrt(5))
    assert row["mean_ci_half_width"] == pytest.approx(100 * high)
    assert np.isnan(table.iloc[0]["mean_ci_half_width"])
    rng = np.random.default_rng(0)
    ks = rng.binomial(5, 3 / 8, size=20_000)
    simulated = np.mean([wilson_interval(int(k), 5)[1] - wilson_interval(int(k), 5)[0] for k in ks])
    assert row["failed_ci_width"] == pytest.approx(simulated, abs=0.005)
    best = rng.choice(np.sort(fa), size=(20_000, 5)).max(axis=1)
    assert row["expected_max"] == pytest.approx(100 * best.mean(), abs=0.05)
    assert row["max_p05"] == pytest.approx(100 * np.quantile(best, 0.05, method="inverted_cdf"))
    assert row["max_p95"] == pytest.approx(100 * np.quantile(best, 0.95, method="inverted_cdf"))
    assert table["failed_ci_width"].is_monotonic_decreasing


@pytest.mark.skipif(not COLA.exists(), reason="the stored CoLA-1k study is not in this checkout")
def test_the_cola_question_in_one_line_from_the_cli():
    """`steadytune plan results/table1-cola1k-cpu.db --recipes devlin2019,mosbach2021` answers how many
    seeds show that mosbach2021 fails less than devlin2019 on CoLA-1k."""
    res = CliRunner().invoke(app, ["plan", str(COLA), "--recipes", "devlin2019,mosbach2021"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    n = pw.seeds_for_rates_exact(0.3, 0.0)
    assert lines[0] == (f"cola minilm: devlin2019 vs mosbach2021, failure rate 30% vs 0% (pilot 3/10 vs 0/10 failed): "
                        f"{n} seeds per recipe (Fisher's exact test, two-sided α = 0.05, power 0.8; "
                        f"normal approximation: {pw.seeds_for_rates(0.3, 0.0)})")
    assert len(lines) == 3
    full = CliRunner().invoke(app, ["plan", str(COLA)])
    assert full.exit_code == 0 and len(full.stdout.strip().splitlines()) == 9  # 3 pairs x 3 quantities
    as_json = CliRunner().invoke(app, ["plan", str(COLA), "--format", "json", "--recipes", "devlin2019,mosbach2021"])
    assert as_json.exit_code == 0 and '"seeds": ' + str(n) in as_json.stdout


def test_cli_errors_and_stated_values(tmp_path):
    bad = CliRunner().invoke(app, ["plan", "--rates", "0.3,0.1", "--power", "1.5"])
    assert bad.exit_code == 2 and "power must be in (0, 1), got 1.5" in bad.output
    none = CliRunner().invoke(app, ["plan"])
    assert none.exit_code == 2 and "nothing to plan" in none.output
    missing = CliRunner().invoke(app, ["plan", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "nope.db" in missing.output and not (tmp_path / "nope.db").exists()
    ok = CliRunner().invoke(app, ["plan", "--rates", "0.3,0.1", "--means", "3,8", "--stds", "3.6,1.3"])
    assert ok.exit_code == 0 and len(ok.stdout.strip().splitlines()) == 3
    assert ok.stdout.startswith("A vs B, failure rate 30% vs 10%: ")
