"""How many seeds: plan a study from a pilot study or from stated values (``steadytune plan``).

:func:`plan_seeds` answers, for every pair of recipes of a pilot study (per task, model and
grid point), how many seeds per recipe a study needs to show that they differ in failure
rate, in mean score and in spread, at a given α and power (:mod:`steadytune.analyses.power`
says how each is computed); or the same for values stated directly. :func:`plan_lines`
turns each answer into one sentence.

:func:`precision_table` answers the other question, for one recipe: how the 95% interval
of its mean, the interval of its failure rate and its expected best-of-n score
(Dodge et al. 2019) change with the number of seeds, extrapolated from the pilot runs.

The pilot's values are estimates: a pilot rate of 0/10 is compatible with a true rate of
up to 28% (Wilson 95%), so the plan is only as good as the pilot; the sentences print the
pilot counts for that reason.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from steadytune.analyses import power as pw
from steadytune.analyses.intervals import expected_max, wilson_interval
from steadytune.analyses.stats import GROUP_KEYS, checked_runs, failed_mask
from steadytune.store.study import Study

__all__ = ["MIN_PILOT", "PLAN_COLUMNS", "PRECISION_COLUMNS", "plan_lines", "plan_seeds", "plan_study",
           "precision_table", "read_pilot"]

MIN_PILOT = 3
"""The fewest runs a pilot group needs."""
EXACT_UP_TO = 200
"""The exact (Fisher) seed count is searched when the normal approximation says at most this many."""
PLAN_COLUMNS = ["task", "model", "grid", "metric", "quantity", "recipe_a", "recipe_b", "value_a", "value_b",
                "n_pilot_a", "n_pilot_b", "failed_a", "failed_b", "seeds", "seeds_normal", "method", "alpha",
                "power", "alternative"]
"""The columns of :func:`plan_seeds`."""
_METHODS = {"exact": "Fisher's exact test", "normal": "normal approximation (arcsine)",
            "welch": "Welch's t-test", "pilot": "Brown–Forsythe test, simulated from the pilot runs",
            "normal_runs": "Brown–Forsythe test, simulated normal runs"}


def plan_seeds(pilot: pd.DataFrame | None = None, *, recipes: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None, rates: Sequence[float] | None = None,
               means: Sequence[float] | None = None, stds: Sequence[float] | None = None,
               alpha: float = 0.05, power: float = 0.8, alternative: str = "two-sided", which: str = "final",
               n_sim: int = 2000, random_state: int = 0) -> pd.DataFrame:
    """Seeds per recipe to show a difference in failure rate, mean and spread.

    Args:
        pilot: a runs table (:mod:`steadytune.analyses.stats`), e.g. ``Study.runs_table()``;
            None to plan from stated values.
        recipes: compare only these two (A, B, in this order); default every pair, A
            before B alphabetically.
        tasks: only these tasks of the pilot.
        rates: stated failure rates of A and B (fractions), instead of a pilot.
        means, stds: stated mean scores and stds of A and B (the same units), instead of
            a pilot; ``stds`` alone plans a difference in spread.
        alpha, power: significance level and power, in (0, 1).
        alternative: ``two-sided``, or ``larger`` (A's value larger than B's: A fails
            more, scores higher on average, or spreads more).
        which: ``"final"`` or ``"best"`` checkpoint of the pilot.
        n_sim, random_state: of the simulated power of the spread test.

    Returns:
        :data:`PLAN_COLUMNS`, one row per pair and quantity (``failure rate``, ``mean``,
        ``std``): the pilot (or stated) values (means and stds ×100 for a pilot), the
        pilot's runs and failures, ``seeds`` per recipe (NA: no difference, or more than
        the search covers), ``seeds_normal`` (failure rate: the normal approximation),
        ``method``.

    Raises:
        ValueError: alpha or power outside (0, 1), an unknown alternative, a pilot group
            with fewer than 3 runs, an unknown recipe or task, fewer than two recipes,
            a rate outside [0, 1], stated values that are not two numbers, or neither a
            pilot nor stated values.
    """
    pw.check_levels(alpha, power, alternative)
    levels = {"alpha": alpha, "power": power, "alternative": alternative}
    if pilot is None:
        rows = _stated_rows(rates, means, stds, levels, n_sim, random_state)
    elif rates is not None or means is not None or stds is not None:
        raise ValueError("give a pilot study or stated values (rates, means, stds), not both")
    else:
        rows = [row for pair in _pilot_pairs(pilot, recipes, tasks, which)
                for row in _pair_rows(*pair, levels, n_sim, random_state)]
    table = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    table["seeds"] = table["seeds"].astype("Int64")
    table["seeds_normal"] = table["seeds_normal"].astype("Int64")
    return table


def _two(name: str, values: Sequence[float] | None) -> tuple[float, float] | None:
    if values is None:
        return None
    if len(values) != 2:
        raise ValueError(f"{name} needs two values (A, B), got {list(values)}")
    return float(values[0]), float(values[1])


def _stated_rows(rates, means, stds, levels: dict, n_sim: int, random_state: int) -> list[dict]:
    rates, means, stds = _two("rates", rates), _two("means", means), _two("stds", stds)
    if rates is None and means is None and stds is None:
        raise ValueError("nothing to plan: give a pilot study, or rates, means and/or stds of A and B")
    if means is not None and stds is None:
        raise ValueError("means need stds (the spread of each recipe's scores)")
    base = {"task": "", "model": "", "grid": "", "metric": "", "recipe_a": "A", "recipe_b": "B",
            "n_pilot_a": np.nan, "n_pilot_b": np.nan, "failed_a": np.nan, "failed_b": np.nan, **levels}
    rows = []
    if rates is not None:
        rows.append({**base, **_rate_answer(*rates, levels)})
    if means is not None:
        rows.append({**base, **_mean_answer(*means, *stds, levels)})  # type: ignore[misc]
    if stds is not None:
        rows.append({**base, **_spread_answer(stds[0], stds[1], stds, levels, n_sim, random_state)})
    return rows


def _group_label(keys: dict) -> str:
    label = f"{keys['task']}/{Path(str(keys['model'])).name}/{keys['recipe']}"
    return label + (f" [{keys['grid']}]" if keys.get("grid") else "")


def _pilot_pairs(pilot: pd.DataFrame, recipes: Sequence[str] | None, tasks: Sequence[str] | None, which: str):
    """``(about, a, b)`` per pair of recipes: ``about`` the shared keys, a/b (name, values, failed)."""
    df = checked_runs(pilot, which)
    for name, wanted, column in (("task", tasks, "task"), ("recipe", recipes, "recipe")):
        unknown = sorted(set(wanted or []) - set(df[column]))
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; the pilot has {', '.join(sorted(set(df[column])))}")
    if tasks:
        df = df[df["task"].isin(tasks)]
    if recipes is not None and len(recipes) != 2:
        raise ValueError(f"recipes: give two to compare (A, B), got {list(recipes)}")
    pairs = []
    for keys, g in df.groupby(["task", "model", "grid"], sort=True, dropna=False):
        groups = {}
        for recipe, part in g.groupby("recipe", sort=True):
            if len(part) < MIN_PILOT:
                about = {"task": keys[0], "model": keys[1], "grid": keys[2], "recipe": recipe}
                raise ValueError(f"pilot group {_group_label(about)} has {len(part)} run(s); a pilot needs at "
                                 f"least {MIN_PILOT} per group")
            v = part["value"].to_numpy(dtype=np.float64)
            groups[recipe] = (v, failed_mask(v, float(part["baseline"].iloc[0])))
        names = list(recipes) if recipes is not None else sorted(groups)
        about = {"task": keys[0], "model": keys[1], "grid": keys[2], "metric": g["metric"].iloc[0]}
        pairs += [(about, (a, *groups[a]), (b, *groups[b])) for a, b in itertools.combinations(names, 2)
                  if a in groups and b in groups]
    if not pairs:
        raise ValueError("the pilot needs two recipes of the same task, model and grid point to compare")
    return pairs


def _pair_rows(about: dict, a: tuple, b: tuple, levels: dict, n_sim: int, random_state: int) -> list[dict]:
    (name_a, va, fa), (name_b, vb, fb) = a, b
    fin_a, fin_b = va[np.isfinite(va)], vb[np.isfinite(vb)]
    base = {**about, "recipe_a": name_a, "recipe_b": name_b, "n_pilot_a": va.size, "n_pilot_b": vb.size,
            **levels}
    rows = [{**base, "failed_a": int(fa.sum()), "failed_b": int(fb.sum()),
             **_rate_answer(fa.mean(), fb.mean(), levels)}]
    none = {"failed_a": np.nan, "failed_b": np.nan}
    if fin_a.size >= 2 and fin_b.size >= 2:
        sa, sb = 100 * np.std(fin_a, ddof=1), 100 * np.std(fin_b, ddof=1)
        rows.append({**base, **none, **_mean_answer(100 * fin_a.mean(), 100 * fin_b.mean(), sa, sb, levels)})
    if fin_a.size >= MIN_PILOT and fin_b.size >= MIN_PILOT:
        rows.append({**base, **none, **_spread_answer(100 * fin_a, 100 * fin_b, None, levels, n_sim, random_state)})
    return rows


def _rate_answer(rate_a: float, rate_b: float, levels: dict) -> dict:
    approx = pw.seeds_for_rates(rate_a, rate_b, levels["alpha"], levels["power"], levels["alternative"])
    exact = None
    if approx is not None and approx <= EXACT_UP_TO:
        exact = pw.seeds_for_rates_exact(rate_a, rate_b, levels["alpha"], levels["power"], levels["alternative"],
                                         max_n=2 * EXACT_UP_TO)
    use_exact = approx is not None and approx <= EXACT_UP_TO
    return {"quantity": "failure rate", "value_a": float(rate_a), "value_b": float(rate_b),
            "seeds": exact if use_exact else approx, "seeds_normal": approx,
            "method": _METHODS["exact" if use_exact else "normal"]}


def _mean_answer(mean_a: float, mean_b: float, std_a: float, std_b: float, levels: dict) -> dict:
    n = pw.seeds_for_means(mean_a, mean_b, std_a, std_b, levels["alpha"], levels["power"], levels["alternative"])
    return {"quantity": "mean", "value_a": mean_a, "value_b": mean_b, "seeds": n, "seeds_normal": None,
            "method": _METHODS["welch"] + f" (stds {std_a:.3g} and {std_b:.3g})"}


def _spread_answer(a, b, stated: tuple | None, levels: dict, n_sim: int, random_state: int) -> dict:
    """The spread row; the Brown–Forsythe test is two-sided whatever ``alternative`` says."""
    n = pw.seeds_for_spread(a, b, levels["alpha"], levels["power"], n_sim=n_sim, random_state=random_state)
    std_a, std_b = stated if stated is not None else (np.std(a, ddof=1), np.std(b, ddof=1))
    return {"quantity": "std", "value_a": float(std_a), "value_b": float(std_b), "seeds": n, "seeds_normal": None,
            "alternative": "two-sided",
            "method": _METHODS["normal_runs" if stated is not None else "pilot"] + f", {n_sim} studies per n"}


def plan_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per row of :func:`plan_seeds`: what to compare, the pilot, the seeds needed.

    E.g. ``cola minilm: mosbach2021 vs devlin2019, failure rate 0% vs 30% (pilot 0/10 vs
    3/10 failed): 21 seeds per recipe (Fisher's exact test, two-sided α = 0.05, power 0.8;
    normal approximation: 12)``.
    """
    return [_line(r) for r in table.to_dict("records")]


def _line(r: dict) -> str:
    where = " ".join(x for x in (r["task"], Path(str(r["model"])).name if r["model"] else "",
                                 f"[{r['grid']}]" if r["grid"] else "") if x)
    what = f"{r['recipe_a']} vs {r['recipe_b']}, {r['quantity']} "
    if r["quantity"] == "failure rate":
        what += f"{100 * r['value_a']:.0f}% vs {100 * r['value_b']:.0f}%"
        if not pd.isna(r["failed_a"]):
            what += (f" (pilot {int(r['failed_a'])}/{int(r['n_pilot_a'])} vs "
                     f"{int(r['failed_b'])}/{int(r['n_pilot_b'])} failed)")
    else:
        what += f"{r['value_a']:.3g} vs {r['value_b']:.3g}"
        if not pd.isna(r["n_pilot_a"]):
            what += f" (pilot {int(r['n_pilot_a'])} vs {int(r['n_pilot_b'])} runs)"
    sided = "one-sided" if r["alternative"] == "larger" else "two-sided"
    how = f"{r['method']}, {sided} α = {r['alpha']:g}, power {r['power']:g}"
    if r["quantity"] == "failure rate" and not pd.isna(r["seeds_normal"]) and r["seeds_normal"] != r["seeds"]:
        how += f"; normal approximation: {int(r['seeds_normal'])}"
    if pd.isna(r["seeds"]) and r["value_a"] == r["value_b"]:
        answer = "no difference: no number of seeds shows one"
    elif pd.isna(r["seeds"]) and r["alternative"] == "larger" and r["value_a"] < r["value_b"]:
        answer = f"the pilot points the other way ({r['recipe_a']}'s is not larger)"
    elif pd.isna(r["seeds"]):
        answer = "more seeds than the search covers"
    else:
        answer = f"{int(r['seeds'])} seeds per recipe"
    return f"{where + ': ' if where else ''}{what}: {answer} ({how})"


PRECISION_COLUMNS = [*GROUP_KEYS, "metric", "n_pilot", "n_seeds", "mean_ci_half_width", "failed_rate",
                     "failed_ci_width", "expected_max", "max_p05", "max_p95"]
"""The columns of :func:`precision_table`."""


def precision_table(runs: pd.DataFrame, which: str = "final", max_n: int | None = None,
                    confidence: float = 0.95) -> pd.DataFrame:
    """What n seeds would buy, per group: extrapolated from its pilot runs, for n = 1..max_n.

    Per n: ``mean_ci_half_width``, the half-width t(1 - α/2, n - 1) s / sqrt(n) of the
    interval of the mean with the pilot's std s (NaN for n = 1); ``failed_ci_width``, the
    expected width of the Wilson interval of the failure rate when the true rate is the
    pilot's (summed over the binomial outcomes); ``expected_max``, the expected best of n
    seeds (Dodge et al.; :func:`~steadytune.analyses.intervals.expected_max`), and
    ``max_p05`` / ``max_p95``, the 5% and 95% quantiles of that best, both drawing n runs
    from the pilot's with replacement. Diverged runs count as failed and are left out of
    the others. Values ×100, rates as fractions.

    Args:
        runs: the runs table (:mod:`steadytune.analyses.stats`).
        which: ``"final"`` or ``"best"``.
        max_n: the largest n (default max(50, 2 × the pilot's runs)).
        confidence: of the intervals, in (0, 1).

    Returns:
        :data:`PRECISION_COLUMNS`, one row per group and n.

    Raises:
        ValueError: as :func:`~steadytune.analyses.stats.summarize`, ``max_n < 1``, a
            confidence outside (0, 1), a group with fewer than 3 runs.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if max_n is not None and max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    parts = []
    for keys, g in checked_runs(runs, which).groupby(GROUP_KEYS, sort=True, dropna=False):
        about = dict(zip(GROUP_KEYS, keys))
        if len(g) < MIN_PILOT:
            raise ValueError(f"pilot group {_group_label(about)} has {len(g)} run(s); a pilot needs at least "
                             f"{MIN_PILOT} per group")
        v = g["value"].to_numpy(dtype=np.float64)
        ns = np.arange(1, (max_n or max(50, 2 * len(g))) + 1)
        part = _precision(v, failed_mask(v, float(g["baseline"].iloc[0])), ns, confidence)
        parts.append(part.assign(**about, metric=g["metric"].iloc[0], n_pilot=len(g)))
    if not parts:
        return pd.DataFrame(columns=PRECISION_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PRECISION_COLUMNS]


def _precision(v: np.ndarray, failed: np.ndarray, ns: np.ndarray, confidence: float) -> pd.DataFrame:
    finite = np.sort(v[np.isfinite(v)])
    std = float(np.std(finite, ddof=1)) if finite.size >= 2 else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sps.t.ppf(0.5 + confidence / 2, ns - 1) * std / np.sqrt(ns)
    rate = float(failed.mean())
    width = [_expected_wilson_width(rate, int(n), confidence) for n in ns]
    out = pd.DataFrame({"n_seeds": ns, "mean_ci_half_width": 100 * np.where(ns >= 2, half, np.nan),
                        "failed_rate": rate, "failed_ci_width": width})
    if finite.size:
        out["expected_max"] = 100 * expected_max(finite, ns)
        for name, q in (("max_p05", 0.05), ("max_p95", 0.95)):  # P(best of n <= v_(i)) = (i/N)^n
            index = np.ceil(finite.size * q ** (1.0 / ns)).astype(int) - 1
            out[name] = 100 * finite[np.clip(index, 0, finite.size - 1)]
    else:
        out["expected_max"] = out["max_p05"] = out["max_p95"] = np.nan
    return out


def _expected_wilson_width(rate: float, n: int, confidence: float) -> float:
    k = np.arange(n + 1)
    prob = sps.binom.pmf(k, n, rate)
    widths = np.array([np.subtract(*wilson_interval(int(i), n, confidence)[::-1]) for i in k])
    return float(prob @ widths)


def read_pilot(study: str | Path) -> pd.DataFrame:
    """The runs table of a stored study, opened read-only.

    Raises:
        FileNotFoundError: no file at ``study``.
        StoreError: the file is not a steadytune study.
    """
    path = Path(study)
    if not path.exists():
        raise FileNotFoundError(f"no study at {path}")
    with Study.open(path, create=False, readonly=True) as st:
        return st.runs_table()


def plan_study(study: str | Path | None = None, *, precision: bool = False, max_n: int | None = None,
               **options) -> pd.DataFrame:
    """``steadytune plan``: :func:`plan_seeds` of a stored pilot study (or of stated values
    when ``study`` is None), or with ``precision`` its :func:`precision_table`.

    Args:
        study: the pilot study file, or None.
        precision: return what more seeds would buy per group instead (needs ``study``).
        max_n: the largest n of the precision table.
        **options: of :func:`plan_seeds` (``which`` also for the precision table).

    Raises:
        FileNotFoundError, StoreError: as :func:`read_pilot`.
        ValueError: as :func:`plan_seeds` / :func:`precision_table`, or ``precision`` without a study.
    """
    pilot = read_pilot(study) if study is not None else None
    if precision:
        if pilot is None:
            raise ValueError("--precision needs a pilot study")
        return precision_table(pilot, options.get("which", "final"), max_n=max_n)
    return plan_seeds(pilot, **options)
