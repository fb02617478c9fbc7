"""The ``steadytune`` command line: one thin command per library entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Stable, diagnosable fine-tuning of BERT-family encoders.")
console = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable).")]


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[Exception], ...]:
    from steadytune.config import ConfigError
    from steadytune.data import DataError
    from steadytune.models import ModelError

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
    """Fine-tune one model on one task with one recipe and seed; write DIR/result.json."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from steadytune.config import parse_assignments, resolve_config
    from steadytune.train import train_and_evaluate

    try:
        overrides: dict[str, object] = dict(parse_assignments(set_))
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if train_limit is not None:
            overrides["train_limit"] = train_limit
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        cfg = resolve_config(task=task, recipe=recipe, seed=seed, model=model, overrides=overrides)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            job = bar.add_task(f"{cfg.task} {cfg.recipe} seed {cfg.seed}", total=None)

            def progress(step: int, total: int, info: dict) -> None:
                bar.update(job, completed=step, total=total)

            result = train_and_evaluate(cfg, out, progress=progress)
    except _user_errors() as exc:
        _fail(exc)
        return
    final, best = result.metrics["final"], result.metrics["best"]
    value = final.get(result.metric)
    shown = "nan" if value is None or value != value else f"{value:.4f}"
    console.print(
        f"{result.status}: {result.metric} final {shown}, best {best.get(result.metric, float('nan')):.4f} "
        f"(step {result.best_step}); majority baseline {result.majority_baseline:.4f}; "
        f"{'FAILED' if result.failed else 'ok'}; {result.steps} steps in {result.wall_seconds:.1f}s"
    )
    typer.echo(str(Path(out) / "result.json"))


@app.command()
def recipes(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the recipes and per-model-family presets."""
    from steadytune.config import FAMILY_PRESETS, RECIPES

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
    from steadytune.config import RunConfig, field_docs

    defaults = RunConfig().to_dict()
    for key, doc in field_docs().items():
        typer.echo(f"{key:20s} {defaults[key]!s:16s} {doc}")


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
