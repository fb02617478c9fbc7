"""The classifier a run trains: the checkpoint with a new head, initialised as the paper does.

:func:`load_model` reads ``cfg.model`` with the run's dropouts (safetensors only, fp32),
initialises the new head N(0, ``head_init_std``) from the run's ``head_init`` seed (as the
paper's code, after Dodge et al. 2020), re-initialises the top blocks and the pooler if
asked (Zhang et al. 2021) and applies Mixout (Lee et al. 2020).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from steadytune.config.run import RunConfig
from steadytune.training.mixout import apply_mixout
from steadytune.training.models import (
    ModelError,
    encoder_layers,
    load_config,
    model_load_error,
    require_safetensors,
    resolve_model_path,
)

DROPOUT_ATTRS: dict[str, tuple[str, ...]] = {
    "hidden_dropout": ("hidden_dropout_prob", "hidden_dropout", "dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier_dropout": ("classifier_dropout", "classifier_dropout_prob", "seq_classif_dropout",
                           "cls_dropout", "pooler_dropout"),
}
"""Config attribute names of the three dropouts across BERT-family configurations; every
one a config has is set to the run's value."""


@torch.no_grad()
def init_module(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """Initialise ``module``'s own parameters (not its children's) in place.

    Linear and embedding weights (and any other non-bias parameter) are drawn N(0, std)
    from ``generator``; biases and an embedding's padding row become 0; LayerNorms get
    weight 1 and bias 0.

    Args:
        module: the module.
        std: standard deviation of the normal draws.
        generator: the random stream (CPU); draws follow ``named_parameters`` order.
    """
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


def _dropout_kwargs(model_config: Any, hidden: float, attention: float, classifier: float) -> dict[str, float]:
    values = {"hidden_dropout": hidden, "attention_dropout": attention, "classifier_dropout": classifier}
    kwargs: dict[str, float] = {}
    for key, attrs in DROPOUT_ATTRS.items():
        for attr in attrs:
            if hasattr(model_config, attr):
                kwargs[attr] = values[key]
    return kwargs


def classification_config(cfg: RunConfig, num_labels: int) -> tuple[Any, dict[str, float]]:
    """``cfg.model``'s config for a ``num_labels`` head, with ``cfg``'s three dropouts.

    Args:
        cfg: gives ``model``, ``hidden_dropout``, ``attention_dropout``, ``classifier_dropout``.
        num_labels: output size of the head (1: regression).

    Returns:
        The config (``problem_type="regression"`` when ``num_labels == 1``) and the
        dropout attributes set on it (their names differ between families).

    Raises:
        ModelError: the config cannot be loaded.
    """
    overrides = _dropout_kwargs(load_config(cfg.model), cfg.hidden_dropout, cfg.attention_dropout,
                                cfg.classifier_dropout)
    model_config = load_config(cfg.model, num_labels=num_labels, **overrides)
    if num_labels == 1:
        model_config.problem_type = "regression"
    return model_config, overrides


def _from_pretrained(model: str, model_config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier and transformers' loading info, from safetensors, in fp32, without load chatter."""
    from transformers import (
        AutoModelForSequenceClassification,  # heavy: imported when a model is read
    )
    from transformers.utils import logging as hf_logging  # the same package

    path = resolve_model_path(model)
    require_safetensors(path)
    verbosity = hf_logging.get_verbosity()
    # The load report and its progress bar list the new head, which we record ourselves.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # fp32 master weights whatever the checkpoint's dtype (an fp16 copy trains in fp32).
        return AutoModelForSequenceClassification.from_pretrained(
            path, config=model_config, output_loading_info=True, dtype=torch.float32, use_safetensors=True)
    except Exception as exc:
        raise model_load_error(model, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def init_new_parameters(model: nn.Module, names: list[str], std: float, generator: torch.Generator) -> None:
    """Initialise (:func:`init_module`) every module owning one of the parameters ``names``,
    each once, in the order of ``names``.

    Args:
        model: the model (changed in place).
        names: parameter names, e.g. transformers' ``missing_keys``.
        std: standard deviation of the normal draws.
        generator: the random stream.
    """
    owners: dict[str, nn.Module] = {}
    for name in names:
        owners.setdefault(name.rsplit(".", 1)[0], _owner(model, name))
    for module in owners.values():
        init_module(module, std, generator)


def reinitialise(model: nn.Module, top_layers: int, pooler: bool, generator: torch.Generator) -> list[str]:
    """Re-initialise the top ``top_layers`` encoder blocks, then the pooler if asked
    (N(0, ``initializer_range``), Zhang et al. 2021), from ``generator``.

    Args:
        model: the classifier (changed in place).
        top_layers: how many of the top encoder blocks (0: none).
        pooler: re-initialise the pooler too.
        generator: the random stream (after the head's draws).

    Returns:
        What was re-initialised: ``layer.<i>`` names, then ``pooler``.

    Raises:
        ModelError: more layers than the model has, no per-layer blocks (ALBERT), or no pooler.
    """
    done: list[str] = []
    std = float(getattr(model.config, "initializer_range", 0.02))
    if top_layers:
        layers = encoder_layers(model)
        if top_layers > len(layers):
            raise ModelError(f"reinit_layers={top_layers} exceeds the model's {len(layers)} layers")
        for index in range(len(layers) - top_layers, len(layers)):
            for module in layers[index].modules():
                init_module(module, std, generator)
            done.append(f"layer.{index}")
    if pooler:
        found = getattr(model.base_model, "pooler", None)
        if found is None:
            raise ModelError(f"{type(model).__name__} has no pooler to re-initialise")
        for module in found.modules():
            init_module(module, std, generator)
        done.append("pooler")
    return done


def load_model(cfg: RunConfig, num_labels: int, head_seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``cfg.model`` for sequence classification and prepare it as ``cfg`` says.

    Newly created parameters (the classifier head; any weight the checkpoint lacks) are
    initialised N(0, ``cfg.head_init_std``) with zero biases from a generator seeded
    with ``head_seed``, as the paper's code does (after Dodge et al. 2020). Then the
    top ``cfg.reinit_layers`` blocks and the pooler are re-initialised if asked
    (N(0, initializer_range), Zhang et al. 2021) from the same generator, and Mixout
    is applied if ``cfg.mixout`` > 0.

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
    model_config, dropouts = classification_config(cfg, num_labels)
    model, info = _from_pretrained(cfg.model, model_config)
    generator = torch.Generator().manual_seed(int(head_seed))
    new_params = sorted(info.get("missing_keys", []))
    init_new_parameters(model, new_params, cfg.head_init_std, generator)
    reinitialised = reinitialise(model, cfg.reinit_layers, cfg.reinit_pooler, generator)
    mixout_layers = apply_mixout(model, cfg.mixout) if cfg.mixout > 0 else []
    return model, {
        "model_path": resolve_model_path(cfg.model),
        "model_type": getattr(model.config, "model_type", None),
        "model_class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "new_parameters": new_params,
        "reinitialised": reinitialised,
        "mixout_layers": len(mixout_layers),
        "dropout_config": dropouts,
    }


__all__ = ["DROPOUT_ATTRS", "classification_config", "init_module", "init_new_parameters", "load_model",
           "reinitialise"]
