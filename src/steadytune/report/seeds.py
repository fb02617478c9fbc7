"""The report's seed-study sections: what more seeds would buy, how many to run, robust
aggregates, and (for a factorial study) which seed stream causes the spread.

Each function takes the scored runs table (:mod:`steadytune.analyses.stats`) and returns
HTML (and figures); the numbers come from :mod:`steadytune.analyses.planning`,
:mod:`~steadytune.analyses.robust` and :mod:`~steadytune.analyses.variance`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from steadytune.analyses.planning import (
    MIN_PILOT,
    plan_lines,
    plan_seeds,
    precision_table,
)
from steadytune.analyses.robust import improvement_table, robust_summary
from steadytune.analyses.stats import GROUP_KEYS, checked_runs
from steadytune.analyses.variance import variance_components
from steadytune.report.markup import esc, figure_html, frame_html

__all__ = ["plot_what_more_seeds_buy", "seed_sections"]

_PANELS = (("mean_ci_half_width", "± of the 95% interval of the mean (×100)"),
           ("failed_ci_width", "expected width of the failure-rate interval"),
           ("expected_max", "expected best of n seeds (×100), 5–95% band"))


def plot_what_more_seeds_buy(precision: pd.DataFrame) -> Figure:
    """Three panels against the number of seeds, one line per group (:func:`precision_table`):
    the interval of the mean, the interval of the failure rate, the expected best of n.

    A dotted vertical line marks each group's pilot size; beyond it the curves are
    extrapolated from the pilot runs.
    """
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for k, (keys, g) in enumerate(precision.groupby(["task", "model", "recipe", "grid"], sort=True)):
        label = " · ".join(str(x) for x in (keys[0], keys[2], keys[3]) if x)
        colour = f"C{k % 10}"
        for ax, (column, _) in zip(axes, _PANELS):
            ax.plot(g["n_seeds"], g[column], color=colour, lw=1.5, label=label)
            ax.axvline(g["n_pilot"].iloc[0], color=colour, ls=":", lw=1)
        axes[2].fill_between(g["n_seeds"], g["max_p05"], g["max_p95"], color=colour, alpha=0.12)
    for ax, (_, title) in zip(axes, _PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("number of seeds n")
        ax.grid(alpha=0.3)
    if (precision["mean_ci_half_width"] > 0).any():  # a log axis needs a positive value
        axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    return fig


def seed_sections(scored: pd.DataFrame, figdir: Path) -> list[tuple[str, str]]:
    """The seed-study sections of the report, as ``(title, HTML)``.

    "What more seeds would buy" (the figure and, where two recipes share a task, the
    seeds per recipe that would tell them apart), "Robust aggregates" (IQM and P(A > B)),
    and, when some run sets a stream seed, "Which seed stream causes the spread".
    """
    sections = [("What more seeds would buy", _more_seeds(scored, figdir)),
                ("Robust aggregates", _robust(scored))]
    streams = [c for c in ("head_seed", "data_seed", "dropout_seed") if c in scored.columns]
    if any((scored[c] != scored["seed"]).any() for c in streams):
        sections.append(("Which seed stream causes the spread", _variance(scored)))
    return sections


def _more_seeds(scored: pd.DataFrame, figdir: Path) -> str:
    first = checked_runs(scored)  # one run per seed unit: what a pilot's size counts
    sizes = first.groupby(GROUP_KEYS, dropna=False)["seed"].transform("size")
    kept = set(first.loc[sizes >= MIN_PILOT, GROUP_KEYS].itertuples(index=False, name=None))
    pilot = scored[[key in kept for key in scored[GROUP_KEYS].itertuples(index=False, name=None)]]
    if pilot.empty:
        return f"<p class=note>Every group has fewer than {MIN_PILOT} seeds: nothing to extrapolate from.</p>"
    body = figure_html(plot_what_more_seeds_buy(precision_table(pilot)), figdir, "what_more_seeds_buy",
                       "How the interval of the mean, the interval of the failure rate and the expected best "
                       "score change with the number of seeds, extrapolated from each group's runs (dotted: "
                       "the runs there are). Final checkpoint.")
    try:
        lines = plan_lines(plan_seeds(pilot))
    except ValueError as exc:  # one recipe per task: nothing to compare
        return body + f"<p class=note>How many seeds: {esc(exc)}</p>"
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return body + ("<h3>How many seeds to tell two recipes apart</h3>"
                   f"<ul>{items}</ul><p class=note>From these runs as a pilot (<code>steadytune plan</code>).</p>")


def _robust(scored: pd.DataFrame) -> str:
    iqm = robust_summary(scored)
    better = improvement_table(scored)
    body = ("<p class=note>Interquartile mean with a 95% bootstrap interval (rliable's definitions; final "
            "checkpoint, ×100), robust to the failed runs that move a mean.</p>" + frame_html(iqm))
    if len(better):
        body += ("<p class=note>P(A &gt; B): the probability that recipe A scores higher than recipe B on a random "
                 "seed (ties count one half; diverged runs rank last).</p>" + frame_html(better))
    return body


def _variance(scored: pd.DataFrame) -> str:
    try:
        table = variance_components(scored)
    except ValueError as exc:
        return f"<p class=note>No decomposition: {esc(exc)}</p>"
    shown = table[["task", "recipe", "grid", "design", "component", "variance", "std", "share", "share_ci_low",
                   "share_ci_high"]]
    return ("<p class=note>Random-effects variance components of the final score (×100²; negative estimates "
            "shown as 0), with 95% bootstrap intervals of each share (<code>steadytune summary --variance</code>)."
            "</p>" + frame_html(shown))
