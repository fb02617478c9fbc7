"""Commands that read a study: ``summary``, ``export``, ``report`` (read-only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from steadytune.cli.common import console, fail, study_errors, wide_console
from steadytune.cli.statistics import print_view, view_function


def _summary_tables(summary: object, comparison: object, which: str) -> None:
    from rich.table import Table  # rich only when something is printed

    out = wide_console()
    table = Table(title=f"seed-sweep summary ({which} checkpoint, x100)")
    guarded = bool((summary["attempts_per_seed"] > 1).any() or (summary["n_stopped"] > 0).any())  # type: ignore[index]
    cols = ["task", "model", "recipe", "grid", "metric", "n", "failed", "stuck", "std", "mean", "median", "max"]
    repeated = bool(summary["n_repeated"].sum())  # type: ignore[index]
    extra = (["runs", "repeat std"] if repeated else []) + (["stopped", "attempts/seed", "steps/success"] if guarded else [])
    for col in cols + extra:
        table.add_column(col, justify="left" if col in cols[:5] else "right")
    for r in summary.to_dict("records"):  # type: ignore[attr-defined]
        stuck = "–" if r["n_stuck"] != r["n_stuck"] else str(int(r["n_stuck"]))  # NaN: not recorded
        floor = [str(r["n_runs"]), "–" if r["repeat_std"] != r["repeat_std"] else f"{r['repeat_std']:.2f}"]
        costs = [str(r["n_stopped"]), f"{r['attempts_per_seed']:.2f}", f"{r['steps_per_success']:.0f}"]
        table.add_row(r["task"], Path(r["model"]).name, r["recipe"], r["grid"], r["metric"], str(r["n"]),
                      str(r["n_failed"]), stuck, *(f"{r[k]:.2f}" for k in ("std", "mean", "median", "max")),
                      *(floor if repeated else []), *(costs if guarded else []))
    out.print(table)
    if repeated:
        out.print("n counts seeds; runs counts repeats too; repeat std = spread among repeats of one seed (the "
                  "nondeterminism floor), beside std, the spread among seeds", style="dim")
    out.print("stuck = runs whose last training loss is still >= 80% of the label-prior entropy "
              "(never left the majority solution: an optimisation failure; – = not recorded)", style="dim")
    if guarded:
        out.print("n counts seeds, each by its last attempt; stopped = seeds whose last attempt the guard stopped "
                  "(failed and stuck); steps/success = updates of every attempt over the seeds that did not fail",
                  style="dim")
    untrained = summary["n_best_untrained"].fillna(0).sum()  # type: ignore[index]
    if which == "best" and untrained:
        out.print(f"{int(untrained)} run(s) have their best dev score at step 0, the untrained model (the "
                  "paper's code keeps step 0 as a candidate; see result.json best_step)", style="bold yellow")
    if len(comparison) and comparison["runner_up_recipe"].notna().any():  # type: ignore[index,arg-type]
        cmp = Table(title="do the recipes differ in spread? (Levene / Brown-Forsythe p-values)")
        for col in ("task", "model", "grid", "recipes", "levene p", "BF p", "lowest std", "runner-up", "pair BF p"):
            cmp.add_column(col)
        for r in comparison.to_dict("records"):  # type: ignore[attr-defined]
            cmp.add_row(r["task"], Path(r["model"]).name, r["grid"], r["recipes"], f"{r['levene_p']:.3g}",
                        f"{r['bf_p']:.3g}", str(r["lowest_std_recipe"]), str(r["runner_up_recipe"]),
                        f"{r['pair_bf_p']:.3g}")
        out.print(cmp)


def _guard_table(guards: object) -> None:
    """Guarded vs unguarded groups (only when some seed was stopped or restarted)."""
    from rich.table import Table  # rich only when something is printed

    rows = guards.to_dict("records")  # type: ignore[attr-defined]
    if not any(r["n_stopped"] or r["attempts_per_seed"] > 1 or r["guard"] != "flag" for r in rows):
        return
    table = Table(title="guarded vs unguarded: failures, kept runs (x100) and compute per successful seed")
    cols = ("task", "recipe", "grid", "guard", "n", "failed", "stuck", "stopped", "attempts/seed",
            "mean ok", "std ok", "steps/seed", "steps/success", "s/success")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:4] else "right")
    for r in rows:
        table.add_row(r["task"], r["recipe"], r["grid"], r["guard"], str(r["n"]), str(r["n_failed"]),
                      "–" if r["n_stuck"] != r["n_stuck"] else str(int(r["n_stuck"])), str(r["n_stopped"]),
                      f"{r['attempts_per_seed']:.2f}", f"{r['mean_ok']:.2f}", f"{r['std_ok']:.2f}",
                      f"{r['steps_per_seed']:.0f}", f"{r['steps_per_success']:.0f}", f"{r['wall_per_success']:.0f}")
    wide_console().print(table)


def summary(
    study: Annotated[Path, typer.Argument(help="The study file.")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    which: Annotated[str, typer.Option(help="final or best (dev checkpoint).")] = "final",
    variance: Annotated[bool, typer.Option("--variance", help="Instead: variance components of a factorial "
                                                             "study (head init, data order, dropout).")] = False,
    robust: Annotated[bool, typer.Option("--robust", help="Instead: IQM with bootstrap intervals.")] = False,
    improvement: Annotated[bool, typer.Option("--improvement", help="Instead: P(A > B) on a random seed, "
                                                                   "per pair of recipes.")] = False,
) -> None:
    """Seed-sweep statistics per task, model, recipe and grid point (values x100)."""
    from steadytune.analyses.attempts import (
        compare_guards,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.analyses.stats import (  # lazy: `steadytune --help` stays fast
        compare_recipes,
        summarize,
    )
    from steadytune.store.study import Study  # lazy: `steadytune --help` stays fast

    chosen = [name for name, on in (("variance", variance), ("robust", robust), ("improvement", improvement)) if on]
    if fmt not in ("table", "csv", "json"):
        fail(ValueError(f"--format must be table, csv or json, not {fmt!r}"))
    if len(chosen) > 1:
        fail(ValueError(f"choose one of --variance, --robust, --improvement, not {' and '.join(chosen)}"))
    try:
        with Study.open(study, readonly=True) as st:
            runs = st.runs_table()
        if chosen:
            print_view(chosen[0], view_function(chosen[0])(runs, which=which), fmt)
            return
        result = summarize(runs, which=which)
        comparison = compare_recipes(runs, which=which) if fmt == "table" else None
        guards = compare_guards(result, runs) if fmt == "table" else None
    except (*study_errors(), ValueError) as exc:
        fail(exc)
        return
    if fmt == "json":  # NaN (unknown) and inf (no seed succeeded) are not JSON numbers: null
        finite = result.replace([float("inf"), float("-inf")], float("nan"))
        records = finite.astype(object).where(finite.notna(), None).to_dict("records")
        typer.echo(json.dumps(records, indent=2))
    elif fmt == "csv":
        typer.echo(result.to_csv(index=False), nl=False)
    elif result.empty:
        console.print(f"no finished runs in {study} yet")
    else:
        _summary_tables(result, comparison, which)
        _guard_table(guards)


def export(
    study: Annotated[Path, typer.Argument(help="The study file.")],
    out: Annotated[Path, typer.Option(help="FILE.parquet or FILE.csv; curves go to FILE.curves.<ext>.")],
) -> None:
    """Export a study's runs and curves to Parquet or CSV."""
    from steadytune.store.export import (
        export_study,  # loaded on use: keeps `steadytune --help` fast
    )
    from steadytune.store.study import Study  # lazy: `steadytune --help` stays fast

    try:
        with Study.open(study, readonly=True) as st:
            written = export_study(st, out)
    except study_errors() as exc:
        fail(exc)
        return
    for path in written:
        typer.echo(str(path))


def report(
    study: Annotated[Path, typer.Argument(help="The study file.")],
    out: Annotated[Path, typer.Option(help="Output directory for index.html and figures/.")] = Path("report"),
    title: Annotated[Optional[str], typer.Option(help="Page title.")] = None,
    analyses: Annotated[Optional[list[Path]], typer.Option(
        "--analysis", help="Output folder of `steadytune forgetting` or `surface` to include (repeatable).")] = None,
) -> None:
    """Write the stability report (Table 1, box plots, curves, diagnostics) as HTML."""
    from steadytune.report.html import (
        write_report,  # lazy: `steadytune --help` stays fast
    )

    try:
        path = write_report(study, out, title=title, analyses=analyses or [])
    except study_errors() as exc:
        fail(exc)
        return
    typer.echo(str(path))
