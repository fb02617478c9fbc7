"""Commands about single runs and settings: ``run``, ``recipes``, ``keys``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from steadytune.cli.common import SetOpt, console, fail, user_errors

if TYPE_CHECKING:  # the annotation only: torch loads with the commands that train
    from steadytune.training.results import RunResult


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
    from steadytune.config.run import (
        parse_assignments,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.training.runner import (
        run as run_one,  # torch: loaded only by commands that train
    )

    try:
        overrides: dict[str, object] = dict(parse_assignments(set_))
        shortcuts = {"data_dir": data_dir, "train_limit": train_limit, "max_steps": max_steps}
        overrides.update({k: v for k, v in shortcuts.items() if v is not None})
        with _StepBar(f"{task} {recipe} seed {seed}") as progress:
            result = run_one(task, recipe, seed, model, out, progress=progress, **overrides)
    except user_errors() as exc:
        fail(exc)
        return
    console.print(_result_line(result), soft_wrap=True)
    if note := _guard_line(result, seed):
        console.print(note, soft_wrap=True, highlight=False)
    typer.echo(str(Path(out) / "result.json"))


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


class _StepBar:
    """A ``progress(step, total, info)`` callback drawing a step bar (stderr) from the first step on.

    The bar appears with the first step, its total known, so a run that fails while loading
    shows none; a bar that never started is not stopped (that would print an empty line).
    """

    def __init__(self, label: str) -> None:
        from rich.progress import (  # rich only when something is printed
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(), TimeRemainingColumn())
        self.label, self.bar, self.job = label, Progress(*columns, console=console, transient=False), None

    def __call__(self, step: int, total: int, info: dict) -> None:
        if self.job is None:
            self.bar.start()
            self.job = self.bar.add_task(self.label, total=total)
        self.bar.update(self.job, completed=step)

    def __enter__(self) -> "_StepBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.job is not None:
            self.bar.stop()


def _result_line(r: RunResult) -> str:
    """``finished: acc final 0.6250, best 0.6500 (step 40); majority baseline 0.5271; ok; 60 steps in 3.1s``."""
    value = r.metrics["final"].get(r.metric)
    shown = "nan" if value is None or value != value else f"{value:.4f}"
    untrained = ": the untrained model, no later evaluation beat it" if r.best_is_untrained else ""
    return (f"{r.status}: {r.error + '; ' if r.error else ''}{r.metric} final {shown}, "
            f"best {r.metrics['best'].get(r.metric, float('nan')):.4f} (step {r.best_step}{untrained}); "
            f"majority baseline {r.majority_baseline:.4f}; "
            f"{'FAILED' if r.failed else 'ok'}; {r.steps} steps in {r.wall_seconds:.1f}s")


def _guard_line(r: RunResult, seed: int) -> str:
    """``attempt 2 of seed 1`` after a restart, and a doomed verdict that ``flag`` did not act on ("" otherwise)."""
    guard = r.guard
    flagged = guard.get("verdict") == "doomed" and not guard.get("stopped")
    if guard.get("attempt", 1) == 1 and not flagged:
        return ""
    note = f"; guard: doomed ({guard['rule']}) at step {guard['step']}, not stopped" if flagged else ""
    return f"attempt {guard.get('attempt', 1)} of seed {seed}{note}"
