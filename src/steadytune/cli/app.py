"""The ``steadytune`` command line: one thin command per library entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:  # names for annotations only: the sweep modules load with the sweep commands
    from steadytune.sweeps.driver import SweepTotals
    from steadytune.sweeps.events import FinishEvent, SweepEvent

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Stable, diagnosable fine-tuning of BERT-family encoders.")
console = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable).")]


def _fail(exc: Exception) -> None:
    from rich.markup import escape  # rich only when something is printed

    # escape: a message such as "pip install 'steadytune[ray]'" is text, not Rich markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[Exception], ...]:
    from steadytune.config.run import (
        ConfigError,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.data.tasks import DataError  # lazy: `steadytune --help` stays fast
    from steadytune.training.models import (
        ModelError,  # lazy: `steadytune --help` stays fast
    )

    return (ConfigError, DataError, ModelError, FileNotFoundError)


@app.command()
def run(
    task: Annotated[str, typer.Option(help="GLUE task (rte, mrpc, cola, sst2, stsb, qnli) or custom.")] = "rte",
    recipe: Annotated[str, typer.Option(help="Recipe name(s), '+'-joined; see `steadytune recipes`.")] = "devlin2019",
    seed: Annotated[int, typer.Option(help="Run seed.")] = 1,
    out: Annotated[Path, typer.Option(help="Output directory for result.json and curves.csv.")] = Path("runs/run"),
    model: Annotated[str, typer.Option(help="Hub id, local path, or 'minilm' (packaged).")] = "minilm",
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE directory (default $GLUE_DIR).")] = None,
    set_: SetOpt = None,
    train_limit: Annotated[Optional[int], typer.Option(help="Down-sample training data to N examples.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Train for exactly N optimiser steps.")] = None,
) -> None:
    """Fine-tune one model on one task with one recipe and seed; write DIR/result.json.

    Prints one line: status, final and best dev metric (best at step 0 is flagged as the
    untrained model), majority baseline, verdict. Exit status 0 when the run ends and
    writes result.json, also if it failed or diverged (status "diverged": a non-finite
    training loss, with the step); 2, with one "error:" line, on invalid configuration,
    data or model.
    """
    from rich.markup import escape  # rich only when something is printed
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )  # rich only when something is printed

    from steadytune.config.run import (
        parse_assignments,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.training.runner import (
        run as run_one,  # torch: loaded only by commands that train
    )

    try:
        overrides: dict[str, object] = dict(parse_assignments(set_))
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if train_limit is not None:
            overrides["train_limit"] = train_limit
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        bar = Progress(*columns, console=console, transient=False)
        jobs: list = []

        def progress(step: int, total: int, info: dict) -> None:
            if not jobs:  # the bar appears with the first step, its total known: a load error shows none
                bar.start()
                jobs.append(bar.add_task(f"{task} {recipe} seed {seed}", total=total))
            bar.update(jobs[0], completed=step)

        try:
            result = run_one(task, recipe, seed, model, out, progress=progress, **overrides)
        finally:
            if jobs:  # stopping a bar that never started prints an empty line
                bar.stop()
    except _user_errors() as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None
    final, best = result.metrics["final"], result.metrics["best"]
    value = final.get(result.metric)
    shown = "nan" if value is None or value != value else f"{value:.4f}"
    untrained = ": the untrained model, no later evaluation beat it" if result.best_is_untrained else ""
    console.print(
        f"{result.status}: {result.error + '; ' if result.error else ''}{result.metric} final {shown}, "
        f"best {best.get(result.metric, float('nan')):.4f} (step {result.best_step}{untrained}); "
        f"majority baseline {result.majority_baseline:.4f}; "
        f"{'FAILED' if result.failed else 'ok'}; {result.steps} steps in {result.wall_seconds:.1f}s", soft_wrap=True
    )
    typer.echo(str(Path(out) / "result.json"))


@app.command()
def recipes(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the recipes and per-model-family presets."""
    from steadytune.config.recipes import (  # lazy: `steadytune --help` stays fast
        FAMILY_PRESETS,
        RECIPES,
    )

    if as_json:
        typer.echo(json.dumps({"recipes": RECIPES, "family_presets": FAMILY_PRESETS}, indent=2))
        return
    for name, values in RECIPES.items():
        typer.echo(f"{name:12s} " + ", ".join(f"{k}={v}" for k, v in values.items()))
    typer.echo("\nper model family (applied before the recipe):")
    for name, values in FAMILY_PRESETS.items():
        typer.echo(f"{name:12s} " + ", ".join(f"{k}={v}" for k, v in values.items()))


@app.command()
def keys() -> None:
    """List every configuration key with its default and meaning."""
    from steadytune.config.execution import (
        Execution,  # config only: keeps `steadytune --help` light
    )
    from steadytune.config.run import (  # lazy: `steadytune --help` stays fast
        RunConfig,
        field_docs,
    )

    defaults = {**RunConfig().to_dict(), **Execution().to_dict()}
    for key, doc in field_docs().items():
        typer.echo(f"{key:20s} {defaults[key]!s:16s} {doc}")


# ----------------------------------------------------------------------------- studies


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _study_errors() -> tuple[type[Exception], ...]:
    import sqlite3  # only needed here

    from steadytune.store.file import StoreError  # lazy: `steadytune --help` stays fast
    from steadytune.sweeps.executors import (
        ExecutorError,  # lazy: `steadytune --help` stays fast
    )

    return (*_user_errors(), StoreError, ExecutorError, sqlite3.DatabaseError)


def _finish_line(event: FinishEvent, many_models: bool) -> str:
    """``rte devlin2019 seed 3 acc 0.6250 ok 1.2s`` (model and grid only when they vary)."""
    parts = [event.task]
    if many_models:
        parts.append(Path(event.model).name)
    parts += [event.recipe, *([event.grid] if event.grid else []), f"seed {event.seed}"]
    if event.status == "error":
        parts.append(f"[bold red]ERROR[/] {event.error}")
    else:
        value = event.value
        shown = "nan" if value is None or value != value else f"{value:.4f}"
        flag = "[red]FAILED[/]" if event.failed else "ok"
        parts += [str(event.metric), shown, flag + (" (diverged)" if event.status == "diverged" else "")]
    return " ".join(parts) + f" {event.seconds:.1f}s"


def _print_plan(plan: SweepTotals) -> None:
    from rich.table import Table  # rich only when something is printed

    table = Table(title=f"plan for {plan.store}")
    for col in ("task", "model", "recipe", "grid", "runs", "done"):
        table.add_column(col, justify="right" if col in ("runs", "done") else "left")
    for g in plan.groups:
        table.add_row(g.task, Path(g.model).name, g.recipe, g.grid, str(g.runs), str(g.done))
    _wide_console().print(table)
    typer.echo(f"{plan.planned} runs planned, {plan.done_before} already done, "
               f"{plan.to_run} to run (dry run: nothing written)")


ExecutorOpt = Annotated[str, typer.Option(help="local or ray.")]
RayOpt = Annotated[Optional[str], typer.Option(help="Existing Ray cluster (default: local Ray).")]
WorkersOpt = Annotated[int, typer.Option(help="Parallel local worker processes; 0 = automatic: 1 on CPU, "
    "several runs per GPU when the runs go to GPUs.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]
KeepOpt = Annotated[int, typer.Option(
    "--keep-checkpoints", help="Keep the final models of at most K failed and K successful runs per group "
    "(lowest seeds) in STUDY.checkpoints/; 0 = save none.")]


class _SweepPrinter:
    """``on_event`` of the sweep commands: a line per plan and finished run, a progress bar (stderr)."""

    def __init__(self, err: Console, many_models: bool) -> None:
        from rich.progress import (  # rich only when something is printed
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        self.err, self.many_models = err, many_models
        self.bar = Progress(*columns, console=err, redirect_stdout=False, redirect_stderr=False)
        self.job: Optional[int] = None

    def __call__(self, event: SweepEvent) -> None:
        from steadytune.sweeps import (
            events,  # loaded by the sweep already; lazy for `steadytune --help`
        )

        if isinstance(event, events.SweepsPlanEvent):  # every spec planned: the bar appears
            self.bar.start()
            self.job = self.bar.add_task("runs", total=event.to_run)
        elif isinstance(event, events.PlanEvent):
            self.err.print(f"plan: {event.planned} runs, {event.done_before} already done, "
                           f"{event.to_run} to run on {event.workers} worker(s) -> {event.store}")
        elif isinstance(event, events.FinishEvent):
            self.bar.advance(self.job)
            self.err.print(_finish_line(event, self.many_models), highlight=False)
        elif isinstance(event, events.DoneElsewhereEvent):
            self.bar.advance(self.job)
        elif isinstance(event, events.WaitEvent):
            self.err.print(f"waiting for {event.runs} run(s) another driver of this study is training "
                           f"({'; '.join(event.holders)}); they are taken over if it dies", highlight=False)

    def close(self) -> None:
        if self.job is not None:  # stopping a bar that never started prints an empty line
            self.bar.stop()


def _print_totals(totals: SweepTotals, err: Console) -> None:
    """The last lines of a sweep: counts, kept checkpoints, the study (stdout); exit 1 on errors."""
    elsewhere = f", {totals.done_elsewhere} done by another driver" if totals.done_elsewhere else ""
    err.print(f"done: {totals.finished} finished, {totals.diverged} diverged, {totals.error} errors "
              f"({totals.done_before} were already done{elsewhere})")
    if totals.checkpoints is not None:
        err.print(f"checkpoints kept: {totals.checkpoints} in {totals.checkpoint_dir} "
                  "(listed by steadytune.store.checkpoints.list_checkpoints)")
    typer.echo(totals.store)
    if totals.error:
        err.print("[bold red]some runs raised errors[/]; their logs are in the study; rerun to retry them")
        raise typer.Exit(code=1)


def _drive(specs: list, store: Path, *, executor: str, workers: int, ray_address: Optional[str],
           dry_run: bool, keep_checkpoints: int) -> None:
    """Run (or plan) ``specs`` into ``store``: one :func:`run_sweeps` call, printing as it goes."""
    from steadytune.sweeps.driver import (
        run_sweeps,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.sweeps.interrupts import (
        Terminated,  # lazy: `steadytune --help` stays fast
    )

    err = Console(file=sys.stderr, soft_wrap=True)  # bound now: runs redirect sys.stderr into their logs
    printer = None if dry_run else _SweepPrinter(err, len({m for spec in specs for m in spec.models}) > 1)
    try:
        try:
            totals = run_sweeps(specs, store, executor=executor, workers=workers, ray_address=ray_address,
                                dry_run=dry_run, keep_checkpoints=keep_checkpoints, on_event=printer)
        finally:
            if printer is not None:
                printer.close()
    except _study_errors() as exc:
        _fail(exc)
        return
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (run_sweeps raises Terminated for it)
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        err.print(f"[bold yellow]{what}[/]: finished runs are stored; run the same command again to resume")
        raise typer.Exit(code=code) from None
    if totals.dry_run:
        _print_plan(totals)
    else:
        _print_totals(totals, err)


@app.command()
def sweep(
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks, e.g. rte,mrpc.")],
    recipes: Annotated[str, typer.Option(help="Comma-separated recipes, e.g. devlin2019,mosbach2021.")],
    seeds: Annotated[str, typer.Option(help="Seeds: 1-25, 1,3,5 or 1-5,10.")],
    store: Annotated[Path, typer.Option(help="The study file (SQLite), created if missing.")],
    model: Annotated[Optional[list[str]], typer.Option(help="Model (repeatable); default minilm.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE directory (default $GLUE_DIR).")] = None,
    set_: SetOpt = None,
    grid: Annotated[Optional[list[str]], typer.Option(help="Sweep a key: key=v1,v2 (repeatable).")] = None,
    train_limit: Annotated[Optional[int], typer.Option(help="Down-sample training data to N examples.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Train for exactly N optimiser steps.")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayOpt = None,
    workers: WorkersOpt = 0,
    dry_run: DryRunOpt = False,
    keep_checkpoints: KeepOpt = 0,
) -> None:
    """Run (or resume) a seed sweep into a study; finished runs are never redone."""
    from steadytune.config.run import (  # lazy: `steadytune --help` stays fast
        DEFAULT_MODEL,
        parse_assignments,
    )
    from steadytune.sweeps.spec import (  # lazy: `steadytune --help` stays fast
        SweepSpec,
        parse_grid,
        parse_seeds,
    )

    try:
        spec = SweepSpec(tasks=_split(tasks), models=model or [DEFAULT_MODEL], recipes=_split(recipes),
                         seeds=parse_seeds(seeds), overrides=parse_assignments(set_), grid=parse_grid(grid),
                         train_limit=train_limit, max_steps=max_steps, data_dir=data_dir)
    except _study_errors() as exc:
        _fail(exc)
        return
    _drive([spec], store, executor=executor, workers=workers, ray_address=ray_address, dry_run=dry_run,
           keep_checkpoints=keep_checkpoints)


def _list_experiments() -> None:
    from steadytune.sweeps.experiments import (  # lazy: `steadytune --help` stays fast
        EXPERIMENTS,
        describe,
    )

    for name in EXPERIMENTS:
        typer.echo(f"{name:16s} {describe(name)}")


@app.command()
def experiments() -> None:
    """List the paper's experiments that `steadytune experiment NAME` runs."""
    _list_experiments()


@app.command()
def experiment(
    name: Annotated[Optional[str], typer.Argument(help="Experiment: table1, downsampling, bias_correction, "
                                                       "ablation (see --list).")] = None,
    store: Annotated[Optional[Path], typer.Option(help="The study file (SQLite), created if missing.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds: 1-25, 1,3,5 or 1-5,10.")] = "1-25",
    model: Annotated[Optional[list[str]], typer.Option(help="Model (repeatable); default minilm.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE directory (default $GLUE_DIR).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated tasks instead of the paper's.")] = None,
    set_: SetOpt = None,
    train_limit: Annotated[Optional[int], typer.Option(help="Down-sample every run to N examples "
                                                            "(a cheaper version; not for downsampling).")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayOpt = None,
    workers: WorkersOpt = 0,
    dry_run: DryRunOpt = False,
    keep_checkpoints: KeepOpt = 0,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments and exit.")] = False,
) -> None:
    """Run (or resume) one of the paper's experiments: all its sweeps into one study."""
    from steadytune.config.run import (  # lazy: `steadytune --help` stays fast
        DEFAULT_MODEL,
        ConfigError,
        parse_assignments,
    )
    from steadytune.sweeps.experiments import (
        experiment_specs,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.sweeps.spec import (
        parse_seeds,  # lazy: `steadytune --help` stays fast
    )

    if list_:
        _list_experiments()
        return
    try:
        if name is None or store is None:
            raise ConfigError("give an experiment NAME and --store STUDY.db (see `steadytune experiment --list`)")
        specs = experiment_specs(name, seeds=parse_seeds(seeds), model=model or [DEFAULT_MODEL],
                                 data_dir=data_dir, tasks=_split(tasks) if tasks else None,
                                 overrides=parse_assignments(set_), train_limit=train_limit)
    except _study_errors() as exc:
        _fail(exc)
        return
    _drive(specs, store, executor=executor, workers=workers, ray_address=ray_address, dry_run=dry_run,
           keep_checkpoints=keep_checkpoints)


def _wide_console() -> Console:
    """Stdout console; when piped (no terminal width) wide enough not to cut names."""
    out = Console()
    if not out.is_terminal:
        out.width = 200
    return out


def _summary_tables(summary: object, comparison: object, which: str) -> None:
    from rich.table import Table  # rich only when something is printed

    out = _wide_console()
    table = Table(title=f"seed-sweep summary ({which} checkpoint, x100)")
    cols = ["task", "model", "recipe", "grid", "metric", "n", "failed", "stuck", "std", "mean", "median", "max"]
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:5] else "right")
    for r in summary.to_dict("records"):  # type: ignore[attr-defined]
        stuck = "–" if r["n_stuck"] != r["n_stuck"] else str(int(r["n_stuck"]))  # NaN: not recorded
        table.add_row(r["task"], Path(r["model"]).name, r["recipe"], r["grid"], r["metric"], str(r["n"]),
                      str(r["n_failed"]), stuck, *(f"{r[k]:.2f}" for k in ("std", "mean", "median", "max")))
    out.print(table)
    out.print("stuck = runs whose last training loss is still >= 80% of the label-prior entropy "
              "(never left the majority solution: an optimisation failure; – = not recorded)", style="dim")
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


@app.command()
def summary(
    study: Annotated[Path, typer.Argument(help="The study file.")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    which: Annotated[str, typer.Option(help="final or best (dev checkpoint).")] = "final",
) -> None:
    """Seed-sweep statistics per task, model, recipe and grid point (values x100)."""
    from steadytune.analyses.stats import (  # lazy: `steadytune --help` stays fast
        compare_recipes,
        summarize,
    )
    from steadytune.store.study import Study  # lazy: `steadytune --help` stays fast

    if fmt not in ("table", "csv", "json"):
        _fail(ValueError(f"--format must be table, csv or json, not {fmt!r}"))
    try:
        with Study.open(study, readonly=True) as st:
            runs = st.runs_table()
        result = summarize(runs, which=which)
        comparison = compare_recipes(runs, which=which) if fmt == "table" else None
    except (*_study_errors(), ValueError) as exc:
        _fail(exc)
        return
    if fmt == "json":
        records = result.astype(object).where(result.notna(), None).to_dict("records")
        typer.echo(json.dumps(records, indent=2))
    elif fmt == "csv":
        typer.echo(result.to_csv(index=False), nl=False)
    elif result.empty:
        console.print(f"no finished runs in {study} yet")
    else:
        _summary_tables(result, comparison, which)


@app.command()
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
    except _study_errors() as exc:
        _fail(exc)
        return
    for path in written:
        typer.echo(str(path))


@app.command()
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
    except _study_errors() as exc:
        _fail(exc)
        return
    typer.echo(str(path))


# The paper's analyses (forgetting probe, loss surface, generalisation) live in their own
# module to keep this one short; they are plain functions registered here.
from steadytune.cli import analyses as cli_analyses  # noqa: E402

app.command("forgetting")(cli_analyses.forgetting)
app.command("surface")(cli_analyses.surface)
app.command("generalisation")(cli_analyses.generalisation)


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
