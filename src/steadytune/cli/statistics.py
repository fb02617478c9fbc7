"""The seed-study statistics on the command line (registered in :mod:`steadytune.cli.app`).

``steadytune plan`` parses its options, makes one call
(:func:`steadytune.analyses.planning.plan_study`) and prints the answer: one line per pair
of recipes and quantity, or a table. :func:`print_view` prints the other views of
``steadytune summary`` (``--variance``, ``--robust``, ``--improvement``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from steadytune.cli.common import fail, wide_console

PRECISION_NS = (1, 2, 3, 5, 10, 20, 30, 50)
"""The numbers of seeds the ``--precision`` table shows (besides the pilot's)."""


def _pair(option: str, text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} takes two numbers, A,B (e.g. 0.3,0.1), got {text!r}") from None


def plan(
    study: Annotated[Optional[Path], typer.Argument(help="A pilot study (omit to plan from stated values).")] = None,
    recipes: Annotated[Optional[str], typer.Option(help="Compare these two: A,B (default every pair).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Only these tasks of the pilot (comma-separated).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level, in (0, 1).")] = 0.05,
    power: Annotated[float, typer.Option(help="Power, in (0, 1).")] = 0.8,
    alternative: Annotated[str, typer.Option(help="two-sided, or larger (A's value is larger).")] = "two-sided",
    which: Annotated[str, typer.Option(help="final or best (dev checkpoint) of the pilot.")] = "final",
    rates: Annotated[Optional[str], typer.Option(help="Stated failure rates of A and B: 0.3,0.1.")] = None,
    means: Annotated[Optional[str], typer.Option(help="Stated mean scores of A and B (needs --stds).")] = None,
    stds: Annotated[Optional[str], typer.Option(help="Stated stds of A and B.")] = None,
    precision: Annotated[bool, typer.Option("--precision", help="What more seeds would buy each recipe of the "
                                                               "pilot: intervals and expected max against n.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="lines (or a table with --precision), csv or json.")] = "lines",
) -> None:
    """How many seeds per recipe show a difference in failure rate, mean and spread."""
    # pandas and SciPy come with the planning module: imported when the command runs
    from steadytune.analyses.planning import plan_lines, plan_study
    from steadytune.store.file import (
        StoreError,  # with the planning module, for the same reason
    )

    try:
        if fmt not in ("lines", "csv", "json"):
            raise ValueError(f"--format must be lines, csv or json, not {fmt!r}")
        table = plan_study(study, precision=precision, recipes=recipes.split(",") if recipes else None,
                           tasks=tasks.split(",") if tasks else None, rates=_pair("--rates", rates),
                           means=_pair("--means", means), stds=_pair("--stds", stds), alpha=alpha, power=power,
                           alternative=alternative, which=which)
    except (ValueError, FileNotFoundError, StoreError) as exc:
        fail(exc)
        return
    if fmt == "json":
        typer.echo(json.dumps(table.astype(object).where(table.notna(), None).to_dict("records"), indent=2))
    elif fmt == "csv":
        typer.echo(table.to_csv(index=False), nl=False)
    elif precision:
        _precision_table(table)
    else:
        for line in plan_lines(table):
            typer.echo(line)


def _precision_table(table: object) -> None:
    from rich.table import Table  # rich only when something is printed

    out = wide_console()
    view = Table(title="what more seeds would buy (extrapolated from the pilot runs; scores x100, rates as fractions)")
    for col in ("task", "recipe", "grid", "seeds", "mean ±", "failed rate", "failed CI width", "expected max",
                "max 5-95%"):
        view.add_column(col, justify="left" if col in ("task", "recipe", "grid") else "right")
    for r in table.to_dict("records"):  # type: ignore[attr-defined]
        if r["n_seeds"] not in PRECISION_NS and r["n_seeds"] != r["n_pilot"]:
            continue
        pilot = " (pilot)" if r["n_seeds"] == r["n_pilot"] else ""
        view.add_row(r["task"], r["recipe"], r["grid"], f"{r['n_seeds']}{pilot}", f"{r['mean_ci_half_width']:.2f}",
                     f"{r['failed_rate']:.2f}", f"{r['failed_ci_width']:.2f}", f"{r['expected_max']:.2f}",
                     f"{r['max_p05']:.2f}–{r['max_p95']:.2f}")
    out.print(view)


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}%"


def _num(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def _range(low: str, high: str) -> str:
    return "–" if "–" in (low, high) else f"{low}–{high}"


VIEWS: dict[str, tuple[str, list[tuple[str, object]]]] = {
    "variance": ("variance components of the score (x100): which seed stream causes the spread", [
        ("task", lambda r: r["task"]), ("recipe", lambda r: r["recipe"]), ("grid", lambda r: r["grid"]),
        ("design", lambda r: r["design"]), ("component", lambda r: r["component"]),
        ("variance", lambda r: _num(r["variance"])), ("std", lambda r: _num(r["std"])),
        ("share", lambda r: _pct(r["share"])),
        ("share 95% CI", lambda r: _range(_pct(r["share_ci_low"]), _pct(r["share_ci_high"])))]),
    "robust": ("robust aggregates (x100): interquartile mean with a 95% bootstrap interval", [
        ("task", lambda r: r["task"]), ("recipe", lambda r: r["recipe"]), ("grid", lambda r: r["grid"]),
        ("metric", lambda r: r["metric"]), ("n", lambda r: str(r["n"])), ("IQM", lambda r: _num(r["iqm"])),
        ("IQM 95% CI", lambda r: _range(_num(r["iqm_ci_low"]), _num(r["iqm_ci_high"]))),
        ("median", lambda r: _num(r["median"])), ("mean", lambda r: _num(r["mean"]))]),
    "improvement": ("P(A > B): the probability that A scores higher than B on a random seed", [
        ("task", lambda r: r["task"]), ("grid", lambda r: r["grid"]), ("A", lambda r: r["recipe_a"]),
        ("B", lambda r: r["recipe_b"]), ("n A", lambda r: str(r["n_a"])), ("n B", lambda r: str(r["n_b"])),
        ("P(A > B)", lambda r: f"{r['p_a_beats_b']:.2f}"),
        ("95% CI", lambda r: f"{r['ci_low']:.2f}–{r['ci_high']:.2f}")]),
}
"""``summary`` view -> its title and ``(column, cell of a row)`` for the table format."""


def view_function(view: str):  # type: ignore[no-untyped-def]
    """The library function of a ``summary`` view: ``(runs, which=...) -> table``."""
    # the analyses load pandas and SciPy: imported when the command runs (`steadytune --help` stays fast)
    from steadytune.analyses.robust import improvement_table, robust_summary
    from steadytune.analyses.variance import variance_components  # as above

    return {"variance": variance_components, "robust": robust_summary, "improvement": improvement_table}[view]


def print_view(view: str, table: object, fmt: str) -> None:
    """Print a ``summary`` view's table (a DataFrame) as a table, CSV or JSON (stdout)."""
    from rich.table import Table  # rich only when something is printed

    if fmt == "json":
        typer.echo(json.dumps(table.astype(object).where(table.notna(), None).to_dict("records"),  # type: ignore
                              indent=2))
        return
    if fmt == "csv":
        typer.echo(table.to_csv(index=False), nl=False)  # type: ignore[attr-defined]
        return
    title, columns = VIEWS[view]
    out = wide_console()
    shown = Table(title=title)
    for name, _ in columns:
        shown.add_column(escape(name))
    for r in table.to_dict("records"):  # type: ignore[attr-defined]
        shown.add_row(*(escape(str(cell(r))) for _, cell in columns))  # type: ignore[operator]
    out.print(shown)


__all__ = ["VIEWS", "plan", "print_view", "view_function"]
