"""Command-line entry points of the paper's analyses (registered in :mod:`steadytune.cli.app`).

Each command parses its options, makes one call (``forgetting_probe``,
``surface_probe`` or ``generalisation_probe`` of :mod:`steadytune.analyses`) and prints
the files it wrote (stdout); progress and messages go to stderr. The probe modules load
torch and transformers, so they are imported when a command runs: ``steadytune --help``
stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from steadytune.cli.common import console, fail, wide_console

ERRORS = (ValueError, OSError)
"""What a probe raises for bad input (DataError, ModelError and ConfigError are ValueErrors)."""

Threads = Annotated[int, typer.Option(help="CPU threads (0 = all).")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Pretrained = Annotated[str, typer.Option(help="The pre-trained model: hub id, path or 'minilm'.")]


def _echo(paths: list[Path]) -> None:
    for path in paths:
        typer.echo(str(path))


@contextmanager
def _progress_bars() -> Iterator[Callable[[str, int, int | None], None]]:
    """A ``progress(stage, done, total)`` callback drawing one transient bar per stage (stderr)."""
    bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(escape(stage), total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def _int_list(text: str | None) -> tuple[int, ...] | None:
    """``"0,2,4"`` or ``"0-6"`` (or a mix) -> tuple of ints; None stays None."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return tuple(out)


def forgetting(
    finetuned: Annotated[list[Path], typer.Option(help="Fine-tuned checkpoint directory (save_pretrained "
                                                   "output, e.g. RUN/final); repeatable.")],
    pretrained: Pretrained = "minilm",
    out: Annotated[Path, typer.Option(help="Output directory for forgetting.csv/.png/.json.")] = Path("runs/forgetting"),
    data_dir: Annotated[Optional[str], typer.Option(help="Folder holding wikitext-2/ (default $STEADYTUNE_DATA "
                                                         "or ../shared/data).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Evaluate only the first N tokens of WikiText-2 test.")] = None,
    seed: Annotated[int, typer.Option(help="Masking seed (also of the fitted head).")] = 0,
    ks: Annotated[Optional[str], typer.Option(help="Layer counts to swap, e.g. 0,2,4 or 0-6 (default all).")] = None,
    head_steps: Annotated[int, typer.Option(help="Steps to fit an MLM head if the checkpoint has none.")] = 300,
    head_tokens: Annotated[int, typer.Option(help="WikiText-2 valid tokens used to fit that head.")] = 100_000,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache of fitted heads (default ~/.cache/steadytune).")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per block, [CLS] and [SEP] included.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Blocks per forward pass.")] = 32,
    swap_embeddings: Annotated[bool, typer.Option(help="Add the row k=L with the embeddings swapped too "
                                                       "(= the pre-trained encoder).")] = True,
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """MLM perplexity on WikiText-2 with the top-k layers reset to pre-trained weights (paper Fig. 2)."""
    # torch and transformers come with the probe: imported when the command runs
    from steadytune.analyses.forgetting import ForgettingSettings, forgetting_probe

    try:
        settings = ForgettingSettings(max_tokens=max_tokens, seed=seed, ks=_int_list(ks), head_steps=head_steps,
                                      head_tokens=head_tokens, seq_len=seq_len, batch_size=batch_size,
                                      swap_embeddings=swap_embeddings)
        with _progress_bars() as progress:
            result = forgetting_probe(finetuned, pretrained, out, settings, data_dir=data_dir, cache_dir=cache_dir,
                                      device=device, threads=threads, progress=progress)
    except ERRORS as exc:
        fail(exc)
        return
    console.print(f"MLM head: {result.settings['mlm_head']} {result.settings['mlm_head_fit'] or ''}")
    _echo(result.files)


def surface(
    failed: Annotated[Path, typer.Option(help="Checkpoint directory of a failed run (RUN/final).")],
    successful: Annotated[Path, typer.Option(help="Checkpoint directory of a successful run.")],
    pretrained: Pretrained = "minilm",
    task: Annotated[str, typer.Option(help="GLUE task whose data gives the loss.")] = "rte",
    split: Annotated[str, typer.Option(help="train or dev.")] = "dev",
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE directory (default $GLUE_DIR, $STEADYTUNE_DATA "
                                                         "or ../shared/data).")] = None,
    alpha_min: Annotated[float, typer.Option(help="Grid start along failed - pre-trained.")] = -0.5,
    alpha_max: Annotated[float, typer.Option(help="Grid end along failed - pre-trained.")] = 1.5,
    beta_min: Annotated[float, typer.Option(help="Grid start along successful - pre-trained.")] = -0.5,
    beta_max: Annotated[float, typer.Option(help="Grid end along successful - pre-trained.")] = 1.5,
    resolution: Annotated[int, typer.Option(help="Points per axis (0 and 1 are always added).")] = 9,
    max_examples: Annotated[int, typer.Option(help="Evaluate a seeded stratified subset of N examples (0 = all).")] = 256,
    sample_seed: Annotated[int, typer.Option(help="Seed of that subset.")] = 0,
    head: Annotated[str, typer.Option(help="Classifier head of the pre-trained point: zero, mean or init.")] = "zero",
    interpolate: Annotated[int, typer.Option(help="Also evaluate N points on the line failed -> successful.")] = 0,
    segment_ids: Annotated[str, typer.Option(help="correct or zeros (as the runs were trained).")] = "correct",
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 64,
    out: Annotated[Path, typer.Option(help="Output directory for surface.csv/.png/.json.")] = Path("runs/surface"),
    threads: Threads = 0,
    device: Device = "auto",
) -> None:
    """Eval-mode loss/accuracy on the plane through pre-trained, failed and successful weights (Fig. 7)."""
    # torch and transformers come with the probe: imported when the command runs
    from steadytune.analyses.surface import SurfaceSettings, surface_probe

    try:
        settings = SurfaceSettings(task=task, split=split, alpha_range=(alpha_min, alpha_max),
                                   beta_range=(beta_min, beta_max), resolution=resolution, max_examples=max_examples,
                                   sample_seed=sample_seed, head=head, interpolate=interpolate,
                                   segment_ids=segment_ids, batch_size=batch_size)
        with _progress_bars() as progress:
            result = surface_probe(failed, successful, pretrained, out, settings, data_dir=data_dir, device=device,
                                   threads=threads, progress=progress)
    except ERRORS as exc:
        fail(exc)
        return
    _echo(result.files)


def generalisation(
    sources: Annotated[list[Path], typer.Argument(help="Study files and/or run directories (result.json).")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/generalisation"),
    all_runs: Annotated[bool, typer.Option("--all-runs", help="Dev curves of failed runs too.")] = False,
) -> None:
    """Dev metric over training and against final training loss (paper Fig. 8), from stored runs."""
    # pandas, matplotlib and the store come with the probe: imported when the command runs
    from steadytune.analyses.generalisation import generalisation_probe
    from steadytune.store.file import StoreError  # with the probe, for the same reason

    try:
        result = generalisation_probe(sources, out, successful_only=not all_runs)
    except (*ERRORS, StoreError) as exc:
        fail(exc)
        return
    _echo(result.files)


def _assignments(items: list[str] | None, what: str) -> dict[str, float]:
    """``["rte=0.6931"]`` -> ``{"rte": 0.6931}``; ValueError naming the option otherwise."""
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r} is not TASK=NUMBER, e.g. rte=0.6931")
    return out


def triage(
    studies: Annotated[list[Path], typer.Argument(help="Study files to replay the detector over.")],
    train: Annotated[Optional[list[str]], typer.Option(help="A study (file name without .db) to choose the "
                                                            "thresholds on; repeatable; the others are held out. "
                                                            "None: score the detector's defaults.")] = None,
    fractions: Annotated[str, typer.Option(help="Points of training to score, e.g. 0.1,0.25,0.5,1.")] = "0.1,0.25,0.5,1",
    label_entropy: Annotated[Optional[list[str]], typer.Option(
        help="TASK=NATS: label-prior entropy of runs recorded before runs stored it; repeatable.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json (per study, task and regime).")] = "table",
) -> None:
    """Replay the doomed-run detector over stored runs: precision, recall and compute saved (issue 15)."""
    import json  # stdlib; only this command needs it

    from steadytune.analyses.triage import (
        triage as run_triage,  # pandas and the store: imported when the command runs
    )
    from steadytune.store.file import (
        StoreError,  # with the analysis, for the same reason
    )

    try:
        if fmt not in ("table", "csv", "json"):
            raise ValueError(f"--format must be table, csv or json, not {fmt!r}")
        points = tuple(float(f) for f in fractions.split(","))
        result = run_triage(studies, train=train or (), fractions=points,
                            label_entropy=_assignments(label_entropy, "--label-entropy"))
    except (*ERRORS, StoreError) as exc:
        fail(exc)
        return
    if fmt == "csv":
        typer.echo(result.by_regime.to_csv(index=False), nl=False)
    elif fmt == "json":
        table = result.by_regime.astype(object).where(result.by_regime.notna(), None)
        typer.echo(json.dumps({"thresholds": dataclass_dict(result.thresholds), "train": list(result.train),
                               "by_regime": table.to_dict("records")}, indent=2))
    else:
        _triage_tables(result)


def dataclass_dict(obj: object) -> dict:
    import dataclasses  # stdlib; only this command needs it

    return {k: (None if v == float("inf") else v) for k, v in dataclasses.asdict(obj).items()}  # type: ignore[arg-type]


def _triage_tables(result: object) -> None:
    from rich.table import Table  # rich only when something is printed

    out = wide_console()
    fitted = f"fitted on {', '.join(result.train)}" if result.train else "the detector's defaults"  # type: ignore[attr-defined]
    out.print(f"thresholds ({fitted}): {dataclass_dict(result.thresholds)}")  # type: ignore[attr-defined]
    for title, frame, keys in (("by split", result.scores, ["split"]),  # type: ignore[attr-defined]
                               ("by study and task", result.by_study, ["split", "study", "task"])):  # type: ignore[attr-defined]
        table = Table(title=f"doomed-run detector vs final labels, {title}")
        cols = [*keys, "by", "n", "failed", "stuck", "flagged", "P failed", "R failed", "P stuck", "R stuck",
                "saved"]
        for col in cols:
            table.add_column(col, justify="left" if col in keys else "right")
        for r in frame.to_dict("records"):
            table.add_row(*(str(r[k]) for k in keys), f"{r['fraction']:.0%}", str(r["n"]), str(r["failed"]),
                          str(r["stuck"]), str(r["flagged"]),
                          *(_pct(r[c]) for c in ("precision_failed", "recall_failed", "precision_stuck",
                                                 "recall_stuck", "steps_saved")))
        out.print(table)
    out.print("P/R = precision/recall of the verdicts reached by that point of training against the final labels "
              "(failed: dev at or below the majority; stuck: final training loss >= 80% of the label-prior "
              "entropy); saved = share of all steps a stop policy would have saved", style="dim")


def _pct(value: float) -> str:
    return "–" if value != value else f"{value:.0%}"


__all__ = ["forgetting", "surface", "generalisation", "triage"]
