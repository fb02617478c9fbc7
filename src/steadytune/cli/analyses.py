"""Command-line entry points of the paper's analyses (registered in :mod:`steadytune.cli`).

Each function parses its options, loads models and data, calls one library function of
:mod:`steadytune.forgetting`, :mod:`steadytune.surface` or
:mod:`steadytune.generalisation`, writes a CSV, a PNG and a JSON record of the settings,
and prints where they went (stdout); progress and messages go to stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _errors() -> tuple[type[Exception], ...]:
    from steadytune.data.tasks import DataError
    from steadytune.training.models import ModelError

    return (DataError, ModelError, FileNotFoundError, ValueError)


def _default_data() -> str | None:
    """``$STEADYTUNE_DATA``, else ``../shared/data`` if it exists (the GLUE/WikiText folder)."""
    given = os.environ.get("STEADYTUNE_DATA")
    if given:
        return given
    for candidate in (Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"):
        if candidate.is_dir():
            return str(candidate)
    return None


def _setup(threads: int, device: str) -> Any:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _quiet_load(cls: Any, path: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path)`` without the load report; ModelError on failure."""
    from transformers.utils import logging as hf_logging

    from steadytune.training.models import (
        ModelError,
        require_safetensors,
        resolve_model_path,
    )

    resolved = resolve_model_path(path)
    if path.startswith((".", "/", "~")) and not Path(resolved).exists():
        raise ModelError(f"checkpoint {path} does not exist (a run saves one with --set save_checkpoints=final)")
    require_safetensors(resolved)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(resolved, use_safetensors=True, **kwargs).eval()
    except Exception as exc:
        raise ModelError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _run_info(checkpoint: Path) -> dict[str, Any]:
    """Label and failed flag of a checkpoint from the ``result.json`` of its run, if any."""
    for folder in (checkpoint, checkpoint.parent):
        path = folder / "result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            value = (result.get("metrics", {}).get("final") or {}).get(result.get("metric"))
            shown = "nan" if value is None else f"{value:.3f}"
            state = "failed" if result.get("failed") else "successful"
            return {"model": f"{folder.name} ({state}, {result.get('metric')} {shown})",
                    "failed": bool(result.get("failed"))}
    return {"model": str(checkpoint), "failed": None}


def _int_list(text: str | None) -> list[int] | None:
    """``"0,2,4"`` or ``"0-6"`` (or a mix) -> list of ints; None stays None."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def _write(out: Path, name: str, table: Any, fig: Any, settings: dict[str, Any]) -> list[Path]:
    from steadytune.training.results import versions

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    fig.savefig(out / f"{name}.png", dpi=130)
    (out / f"{name}.json").write_text(json.dumps({**settings, "versions": versions()}, indent=2, default=str))
    return [out / f"{name}.csv", out / f"{name}.png", out / f"{name}.json"]


def _progress(description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def forgetting(
    finetuned: Annotated[list[Path], typer.Option(help="Fine-tuned checkpoint directory (save_pretrained "
                                                   "output, e.g. RUN/final); repeatable.")],
    pretrained: Annotated[str, typer.Option(help="The pre-trained model: hub id, path or 'minilm'.")] = "minilm",
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
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """MLM perplexity on WikiText-2 with the top-k layers reset to pre-trained weights (paper Fig. 2)."""
    import pandas as pd
    from transformers import AutoModel, AutoModelForSequenceClassification

    from steadytune.analyses.forgetting import forgetting_curve, plot_forgetting
    from steadytune.analyses.mlmhead import get_mlm_head
    from steadytune.analyses.mlmtext import load_wikitext
    from steadytune.training.models import load_tokenizer

    try:
        for path in finetuned:  # fail before the slow part
            if not path.is_dir():
                raise FileNotFoundError(f"checkpoint directory {path} does not exist "
                                        "(a run saves one with --set save_checkpoints=final)")
        dev = _setup(threads, device)
        data = data_dir or _default_data()
        texts = load_wikitext("test", data)
        tokenizer = load_tokenizer(pretrained)
        base = _quiet_load(AutoModel, pretrained).to(dev)
        console.print("MLM head: pre-trained if the checkpoint has one, else fitting one on WikiText-2 valid ...")
        head = get_mlm_head(pretrained, base, tokenizer, load_wikitext("valid", data), steps=head_steps, seed=seed,
                            cache_dir=cache_dir, max_tokens=head_tokens, seq_len=seq_len)
        console.print(f"MLM head: {getattr(head, 'source', '?')} {getattr(head, 'fit_stats', '')}")
        tables = []
        with _progress("forgetting") as bar:
            for path in finetuned:
                model = _quiet_load(AutoModelForSequenceClassification, str(path)).to(dev)
                job = bar.add_task(str(path), total=None)
                df = forgetting_curve(model, base, head, tokenizer, texts, _int_list(ks), seed=seed,
                                      seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens,
                                      swap_embeddings=swap_embeddings,
                                      progress=lambda i, n, row, job=job: bar.update(job, completed=i, total=n))
                tables.append(df.assign(checkpoint=str(path), **_run_info(path)))
    except _errors() as exc:
        _fail(exc)
        return
    table = pd.concat(tables, ignore_index=True)
    full = table.loc[table["embeddings"] == "pretrained", "perplexity"]
    fig = plot_forgetting(table, label="model", reference=float(full.iloc[0]) if len(full) else None)
    settings = {"analysis": "forgetting", "finetuned": [str(p) for p in finetuned], "pretrained": pretrained,
                "wikitext": "test", "max_tokens": max_tokens, "seed": seed, "seq_len": seq_len, "mask_prob": 0.15,
                "mlm_head": str(getattr(head, "source", "")), "mlm_head_fit": getattr(head, "fit_stats", None),
                "head_steps": head_steps, "head_tokens": head_tokens}
    for path in _write(out, "forgetting", table, fig, settings):
        typer.echo(str(path))


def surface(
    failed: Annotated[Path, typer.Option(help="Checkpoint directory of a failed run (RUN/final).")],
    successful: Annotated[Path, typer.Option(help="Checkpoint directory of a successful run.")],
    pretrained: Annotated[str, typer.Option(help="The pre-trained model: hub id, path or 'minilm'.")] = "minilm",
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
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Eval-mode loss/accuracy on the plane through pre-trained, failed and successful weights (Fig. 7)."""
    import numpy as np
    from transformers import AutoModel, AutoModelForSequenceClassification

    from steadytune.analyses.surface import (
        interpolate_1d,
        loss_surface,
        plot_interpolation,
        plot_surface,
    )
    from steadytune.data.batching import collate, encode, eval_batches
    from steadytune.data.glue import load_glue
    from steadytune.data.splits import downsample
    from steadytune.training.models import load_tokenizer, uses_token_types

    def axis(lo: float, hi: float) -> list[float]:
        return sorted({round(float(x), 10) for x in np.linspace(lo, hi, max(resolution, 2))} | {0.0, 1.0})

    try:
        dev = _setup(threads, device)
        models = [_quiet_load(AutoModelForSequenceClassification, str(p)).to(dev) for p in (failed, successful)]
        base = _quiet_load(AutoModel, pretrained).to(dev)
        tokenizer = load_tokenizer(pretrained)
        data = load_glue(task, split, data_dir or os.environ.get("GLUE_DIR") or _default_data())
        if max_examples and max_examples < len(data):
            data = downsample(data, max_examples, sample_seed)
        enc = encode(data, tokenizer, segment_ids=segment_ids, use_token_types=uses_token_types(models[0].config))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batches = [collate(enc, idx, pad) for idx in eval_batches(enc.lengths, batch_size)]
        alphas, betas = axis(alpha_min, alpha_max), axis(beta_min, beta_max)
        with _progress("grid") as bar:
            job = bar.add_task("grid", total=len(alphas) * len(betas))
            table = loss_surface(base, *models, batches, alphas=alphas, betas=betas, head=head,
                                 progress=lambda i, n, row: bar.update(job, completed=i))
            line = None
            if interpolate > 1:
                job = bar.add_task("line", total=interpolate)
                line = interpolate_1d(*models, batches, np.linspace(0, 1, interpolate),
                                      progress=lambda i, n, row: bar.update(job, completed=i))
    except _errors() as exc:
        _fail(exc)
        return
    settings = {"analysis": "surface", "pretrained": pretrained, "failed": str(failed), "successful": str(successful),
                "task": task, "split": split, "n_examples": len(data), "sample_seed": sample_seed, "head": head,
                "alphas": alphas, "betas": betas, "segment_ids": segment_ids, "mode": "eval (no dropout)"}
    written = _write(out, "surface", table, plot_surface(table), settings)
    if table["acc"].notna().any():
        plot_surface(table, "acc").savefig(out / "surface_acc.png", dpi=130)
        written.append(out / "surface_acc.png")
    for path in written:
        typer.echo(str(path))
    if line is not None:
        for path in _write(out, "interpolation", line, plot_interpolation(line), settings):
            typer.echo(str(path))


def _tables_from_sources(sources: list[Path]) -> tuple[Any, Any]:
    """Runs and curves tables from study files and/or run directories (result.json + curves.csv)."""
    import pandas as pd

    from steadytune.store.study import Study
    from steadytune.training.results import RunResult

    runs, curves = [], []
    names = [s.name for s in sources]
    for source in sources:
        if source.is_dir():
            result = RunResult.load(source)
            run_id = source.name if names.count(source.name) == 1 else str(source)  # short legend labels
            runs.append(pd.DataFrame([{"run_id": run_id, "task": result.task, "recipe": result.recipe,
                                       "seed": result.seed, "metric": result.metric, "final": result.final,
                                       "failed": result.failed, "status": result.status}]))
            curves.append(result.curves.assign(run_id=run_id))
        else:
            with Study.open(source, readonly=True) as study:
                runs.append(study.runs_table())
                curves.append(study.curves_table())
    return pd.concat(runs, ignore_index=True), pd.concat(curves, ignore_index=True)


def generalisation(
    sources: Annotated[list[Path], typer.Argument(help="Study files and/or run directories (result.json).")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/generalisation"),
    all_runs: Annotated[bool, typer.Option("--all-runs", help="Dev curves of failed runs too.")] = False,
) -> None:
    """Dev metric over training and against final training loss (paper Fig. 8), from stored runs."""
    from steadytune.analyses.generalisation import (
        dev_over_training,
        dev_vs_train_loss,
        plot_dev_over_training,
        plot_dev_vs_train_loss,
    )

    try:
        runs, curves = _tables_from_sources(sources)
        over = dev_over_training(runs, curves, successful_only=not all_runs)
        versus = dev_vs_train_loss(runs, curves)
    except (*_errors(), OSError) as exc:
        _fail(exc)
        return
    settings = {"analysis": "generalisation", "sources": [str(s) for s in sources], "successful_only": not all_runs}
    written = _write(out, "dev_over_training", over, plot_dev_over_training(over), settings)
    written += _write(out, "dev_vs_train_loss", versus, plot_dev_vs_train_loss(versus), settings)
    for path in written:
        typer.echo(str(path))


__all__ = ["forgetting", "surface", "generalisation"]
