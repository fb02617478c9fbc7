"""What the probes load: checkpoints (quietly, safetensors only), the device to run on,
the shared data folder, and the label a checkpoint's run gives it in a table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steadytune.training.models import (
    ModelError,
    model_load_error,
    require_safetensors,
    resolve_model_path,
)

SAVE_HINT = "(a run saves one with --set save_checkpoints=final)"


def shared_data_candidates() -> list[Path]:
    """``../shared/data`` beside the working directory and beside the source checkout."""
    return [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[4] / "shared" / "data"]


def default_data_dir() -> str | None:
    """``$STEADYTUNE_DATA``, else the first of :func:`shared_data_candidates` that exists, else None."""
    given = os.environ.get("STEADYTUNE_DATA")
    if given:
        return given
    return next((str(folder) for folder in shared_data_candidates() if folder.is_dir()), None)


def select_device(device: str | torch.device = "auto", threads: int = 0) -> torch.device:
    """The device to evaluate on: ``"auto"`` is CUDA when available, else the CPU.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ... or a ``torch.device``.
        threads: if > 0, the number of CPU threads torch uses (set process-wide).

    Raises:
        ValueError: ``device`` names no device.
    """
    if threads:
        torch.set_num_threads(threads)
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {str(device)!r}: use auto, cpu or cuda") from None


def from_pretrained_quietly(cls: Any, model: str | Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model, use_safetensors=True, **kwargs)`` without transformers' load report.

    ``model`` is a local folder, a hub id or ``minilm`` (see
    :func:`steadytune.training.models.resolve_model_path`).

    Raises:
        ModelError: the model is not a local folder and not on the Hub, its weights are
            pickles only, or loading fails (the message says which).
    """
    # transformers is heavy: imported when a model is loaded, not with the analyses
    from transformers.utils import logging as hf_logging

    name = str(model)
    resolved = resolve_model_path(name)
    require_safetensors(resolved)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(resolved, use_safetensors=True, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, hub errors ...
        raise model_load_error(name, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_encoder(model: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The pre-trained encoder ``model`` (``AutoModel``) in eval mode on ``device``.

    Raises:
        ModelError: see :func:`from_pretrained_quietly`.
    """
    # transformers is heavy: imported when a model is loaded, not with the analyses
    from transformers import AutoModel

    return from_pretrained_quietly(AutoModel, model).eval().to(device)


def load_classifier(checkpoint: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """A fine-tuned checkpoint (``AutoModelForSequenceClassification``) in eval mode on ``device``.

    Raises:
        ModelError: a checkpoint path that does not exist, or see :func:`from_pretrained_quietly`.
    """
    # transformers is heavy: imported when a model is loaded, not with the analyses
    from transformers import AutoModelForSequenceClassification

    name = str(checkpoint)
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise ModelError(f"checkpoint {name} does not exist {SAVE_HINT}")
    return from_pretrained_quietly(AutoModelForSequenceClassification, name).eval().to(device)


def checkpoint_run_info(checkpoint: str | Path) -> dict[str, Any]:
    """The label and failed flag of a checkpoint, from its run's ``result.json`` if there is one.

    The file is looked for in the checkpoint folder and its parent (``RUN/final`` sits
    inside ``RUN``).

    Returns:
        ``{"model": "RUN (failed, acc 0.500)", "failed": True}``, or the path and None
        when no ``result.json`` is found.
    """
    checkpoint = Path(checkpoint)
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


__all__ = ["checkpoint_run_info", "default_data_dir", "from_pretrained_quietly", "load_classifier", "load_encoder",
           "select_device", "shared_data_candidates", "SAVE_HINT"]
