"""The sweep commands: ``sweep``, ``experiments``, ``experiment``.

Each parses its options into :class:`~steadytune.sweeps.spec.SweepSpec` values and makes one
:func:`~steadytune.sweeps.driver.run_sweeps` call, printing a line per finished run and a
progress bar (stderr) and the study's path (stdout).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from steadytune.cli.common import SetOpt, fail, split_list, study_errors, wide_console

if TYPE_CHECKING:  # names for annotations only: the sweep modules load with the sweep commands
    from steadytune.sweeps.driver import SweepTotals
    from steadytune.sweeps.events import FinishEvent, SweepEvent


def _finish_line(event: FinishEvent, many_models: bool) -> str:
    """``rte devlin2019 seed 3 acc 0.6250 ok 1.2s`` (model and grid only when they vary)."""
    parts = [event.task]
    if many_models:
        parts.append(Path(event.model).name)
    parts += [event.recipe, *([event.grid] if event.grid else []), f"seed {event.seed}",
              *([event.streams] if event.streams else [])]
    if event.attempt > 1:
        parts.append(f"attempt {event.attempt}")
    if event.status == "error":
        parts.append(f"[bold red]ERROR[/] {event.error}")
    else:
        value = event.value
        shown = "nan" if value is None or value != value else f"{value:.4f}"
        flag = "[red]FAILED[/]" if event.failed else "ok"
        parts += [str(event.metric), shown, flag + (f" ({event.status})" if event.status in ("diverged", "stopped")
                                                     else "")]
        if event.status == "stopped":
            parts.append(f"- {event.error}")
    return " ".join(parts) + f" {event.seconds:.1f}s"


def _print_plan(plan: SweepTotals) -> None:
    from rich.table import Table  # rich only when something is printed

    table = Table(title=f"plan for {plan.store}")
    for col in ("task", "model", "recipe", "grid", "runs", "done"):
        table.add_column(col, justify="right" if col in ("runs", "done") else "left")
    for g in plan.groups:
        table.add_row(g.task, Path(g.model).name, g.recipe, g.grid, str(g.runs), str(g.done))
    wide_console().print(table)
    typer.echo(f"{plan.planned} runs planned, {plan.done_before} already done, "
               f"{plan.to_run} to run (dry run: nothing written)")


ExecutorOpt = Annotated[str, typer.Option(help="local or ray.")]
RayOpt = Annotated[Optional[str], typer.Option(help="Existing Ray cluster (default: local Ray).")]
WorkersOpt = Annotated[int, typer.Option(help="Parallel local worker processes; 0 = automatic: 1 on CPU, "
    "several runs per GPU when the runs go to GPUs.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]
GROUP_HELP = ("Train up to K runs that differ only in their seed as one grouped model (several seeds "
              "per process; each run's result is the one it gets alone, up to rounding); 1 = every run alone; "
              "0 = automatic: where measured to pay (so far nowhere; docs/performance.md).")
GroupOpt = Annotated[int, typer.Option("--group-size", help=GROUP_HELP)]
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
        elif isinstance(event, events.AttemptEvent):  # one more run to go
            self.bar.update(self.job, total=self.bar.tasks[0].total + 1)
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
    guarded = (f", {totals.stopped} stopped by the guard ({totals.restarted} restarted)"
               if totals.stopped or totals.restarted else "")
    err.print(f"done: {totals.finished} finished, {totals.diverged} diverged{guarded}, {totals.error} errors "
              f"({totals.done_before} were already done{elsewhere})")
    if totals.checkpoints is not None:
        err.print(f"checkpoints kept: {totals.checkpoints} in {totals.checkpoint_dir} "
                  "(listed by steadytune.store.checkpoints.list_checkpoints)")
    typer.echo(totals.store)
    if totals.error:
        err.print("[bold red]some runs raised errors[/]; their logs are in the study; rerun to retry them")
        raise typer.Exit(code=1)


def _drive(specs: list, store: Path, *, executor: str, workers: int, ray_address: Optional[str],
           dry_run: bool, keep_checkpoints: int, group_size: int = 0,
           trackers: Optional[list[str]] = None) -> None:
    """Run (or plan) ``specs`` into ``store``: one :func:`run_sweeps` call, printing as it goes
    (and, with ``trackers``, logging each recorded run and the summary to them)."""
    from steadytune.sweeps.driver import (
        run_sweeps,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.sweeps.interrupts import (
        Terminated,  # lazy: `steadytune --help` stays fast
    )

    err = Console(file=sys.stderr, soft_wrap=True)  # bound now: runs redirect sys.stderr into their logs
    printer = None if dry_run else _SweepPrinter(err, len({m for spec in specs for m in spec.models}) > 1)
    tracker = None
    try:
        try:
            tracker = _tracker(trackers, store) if trackers and not dry_run else None
            on_event = printer if tracker is None else _both(printer, tracker)
            totals = run_sweeps(specs, store, executor=executor, workers=workers, ray_address=ray_address,
                                dry_run=dry_run, keep_checkpoints=keep_checkpoints, on_event=on_event,
                                group_size=group_size)
        finally:
            if printer is not None:
                printer.close()
            if tracker is not None:
                tracker.close()
    except study_errors() as exc:
        fail(exc)
        return
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (run_sweeps raises Terminated for it)
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        err.print(f"[bold yellow]{what}[/]: finished runs are stored; run the same command again to resume")
        raise typer.Exit(code=code) from None
    if totals.dry_run:
        _print_plan(totals)
    else:
        _print_totals(totals, err)


ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="A study file (TOML) with the keys of these flags; see docs/sweeps.md.")]


def _tracker(specs: list[str], store: Path):  # noqa: ANN202 - SweepTracker, loaded lazily
    from steadytune.integrations.trackers import (
        open_tracker,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.integrations.tracking import (
        SweepTracker,  # lazy: `steadytune --help` stays fast
    )

    return SweepTracker([open_tracker(spec) for spec in specs], store)


def _both(printer, tracker):  # noqa: ANN001, ANN202 - two on_event callbacks as one
    def on_event(event) -> None:  # noqa: ANN001
        printer(event)
        tracker(event)

    return on_event


TrackerOpt = Annotated[Optional[list[str]], typer.Option(
    "--tracker", help="Also log each run's curves and diagnostics and the study's summary to KIND:ROOT "
    "(jsonl:DIR, tensorboard:DIR, mlflow:DIR or a tracking URI); repeatable.")]


def sweep(
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated tasks, e.g. rte,mrpc.")] = None,
    recipes: Annotated[Optional[str], typer.Option(help="Comma-separated recipes, e.g. devlin2019,mosbach2021.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds: 1-25, 1,3,5 or 1-5,10.")] = None,
    store: Annotated[Optional[Path], typer.Option(help="The study file (SQLite), created if missing.")] = None,
    model: Annotated[Optional[list[str]], typer.Option(help="Model (repeatable); default minilm.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE directory (default $GLUE_DIR).")] = None,
    set_: SetOpt = None,
    grid: Annotated[Optional[list[str]], typer.Option(help="Sweep a key: key=v1,v2 (repeatable).")] = None,
    train_limit: Annotated[Optional[int], typer.Option(help="Down-sample training data to N examples.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Train for exactly N optimiser steps.")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Run each config and seed N times as distinct runs (the "
                                                        "nondeterminism floor; default 1).")] = None,
    executor: Annotated[Optional[str], typer.Option(help="local or ray.")] = None,
    ray_address: RayOpt = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel local worker processes; 0 = automatic: 1 on "
                                                        "CPU, several runs per GPU when the runs go to GPUs.")] = None,
    dry_run: DryRunOpt = False,
    keep_checkpoints: Annotated[Optional[int], typer.Option(
        "--keep-checkpoints", help="Keep the final models of at most K failed and K successful runs per group "
        "(lowest seeds) in STUDY.checkpoints/; 0 = save none.")] = None,
    group_size: Annotated[Optional[int], typer.Option("--group-size", help=GROUP_HELP)] = None,
    config: ConfigOpt = None,
    tracker: TrackerOpt = None,
) -> None:
    """Run (or resume) a seed sweep into a study; finished runs are never redone.

    With --config STUDY.toml the sweeps come from the file; --store, --executor,
    --workers, --ray-address, --keep-checkpoints and --dry-run may still be given (they
    win over the file), the flags that say what runs may not.
    """
    what = {"--tasks": tasks, "--recipes": recipes, "--seeds": seeds, "--model": model, "--data-dir": data_dir,
            "--set": set_, "--grid": grid, "--train-limit": train_limit, "--max-steps": max_steps,
            "--repeats": repeats}
    try:
        plan = _plan(config, what)
        target = store or plan.store
        if target is None:
            raise _config_error(f"give --store STUDY.db{' (the study file names none)' if config else ''}")
    except study_errors() as exc:
        fail(exc)
        return
    _drive(list(plan.specs), Path(target), executor=executor or plan.executor,
           workers=plan.workers if workers is None else workers, ray_address=ray_address or plan.ray_address,
           dry_run=dry_run, keep_checkpoints=plan.keep_checkpoints if keep_checkpoints is None else keep_checkpoints,
           group_size=plan.group_size if group_size is None else group_size, trackers=tracker or list(plan.trackers))


def _config_error(message: str) -> Exception:
    from steadytune.config.errors import (
        ConfigError,  # lazy: `steadytune --help` stays fast
    )

    return ConfigError(message)


def _plan(config: Optional[Path], what: dict):  # noqa: ANN202 - a StudyFile, loaded lazily
    """The sweeps of ``sweep``'s options: the study file, or one spec from the flags (not both)."""
    from steadytune.config.run import (  # lazy: `steadytune --help` stays fast
        DEFAULT_MODEL,
        parse_assignments,
    )
    from steadytune.sweeps.spec import (  # lazy: `steadytune --help` stays fast
        SweepSpec,
        parse_grid,
        parse_seeds,
    )
    from steadytune.sweeps.studyfile import (  # lazy: `steadytune --help` stays fast
        StudyFile,
        load_study_file,
    )

    if config is not None:
        given = [flag for flag, value in what.items() if value is not None]
        if given:
            raise _config_error(f"{given[0]} cannot be combined with --config: put it in {config}")
        return load_study_file(config)
    if what["--tasks"] is None or what["--recipes"] is None or what["--seeds"] is None:
        raise _config_error("give --tasks, --recipes and --seeds (or --config STUDY.toml)")
    return StudyFile((SweepSpec(
        tasks=split_list(what["--tasks"]), models=what["--model"] or [DEFAULT_MODEL],
        recipes=split_list(what["--recipes"]), seeds=parse_seeds(what["--seeds"]),
        overrides=parse_assignments(what["--set"]), grid=parse_grid(what["--grid"]),
        train_limit=what["--train-limit"], max_steps=what["--max-steps"], data_dir=what["--data-dir"],
        repeats=1 if what["--repeats"] is None else what["--repeats"]),))


def _list_experiments() -> None:
    from steadytune.sweeps.experiments import (  # lazy: `steadytune --help` stays fast
        EXPERIMENTS,
        describe,
    )

    for name in EXPERIMENTS:
        typer.echo(f"{name:16s} {describe(name)}")


def experiments() -> None:
    """List the paper's experiments that `steadytune experiment NAME` runs."""
    _list_experiments()


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
    group_size: GroupOpt = 0,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments and exit.")] = False,
    export: Annotated[Optional[Path], typer.Option(
        help="Write the experiment as a study file (TOML) instead of running it.")] = None,
    tracker: TrackerOpt = None,
) -> None:
    """Run (or resume) one of the paper's experiments: all its sweeps into one study.

    With --export FILE.toml it writes them as a study file (`steadytune sweep --config
    FILE.toml` runs it) and runs nothing.
    """
    from steadytune.config.run import (  # lazy: `steadytune --help` stays fast
        DEFAULT_MODEL,
        ConfigError,
        parse_assignments,
    )
    from steadytune.sweeps.experiments import (  # lazy: `steadytune --help` stays fast
        experiment_specs,
        export_experiment,
    )
    from steadytune.sweeps.spec import (
        parse_seeds,  # lazy: `steadytune --help` stays fast
    )

    if list_:
        _list_experiments()
        return
    try:
        if name is None or (store is None and export is None):
            raise ConfigError("give an experiment NAME and --store STUDY.db (see `steadytune experiment --list`)")
        options = dict(seeds=parse_seeds(seeds), model=model or [DEFAULT_MODEL], data_dir=data_dir,
                       tasks=split_list(tasks) if tasks else None, overrides=parse_assignments(set_),
                       train_limit=train_limit)
        if export is not None:
            typer.echo(str(export_experiment(name, export, store=str(store) if store else None, **options)))
            return
        specs = experiment_specs(name, **options)
    except study_errors() as exc:
        fail(exc)
        return
    _drive(specs, store, executor=executor, workers=workers, ray_address=ray_address, dry_run=dry_run,
           keep_checkpoints=keep_checkpoints, group_size=group_size, trackers=tracker)
