"""Recipes and model-family presets as plain data, and how a run's configuration is resolved.

A run's configuration is resolved in four layers, each overriding the one before:

1. the defaults of :class:`~steadytune.config.run.RunConfig` (the Devlin et al. 2019
   fine-tuning setup of the paper's code),
2. the model family's preset (``FAMILY_PRESETS``: RoBERTa and ALBERT differ, paper §3.2),
3. the recipe(s) (``RECIPES``; ``a+b`` applies ``a`` then ``b``),
4. the user's ``key=value`` overrides.

A new recipe is one more entry of ``RECIPES``.
"""

from __future__ import annotations

from typing import Any, Mapping

from steadytune.config.run import DEFAULT_MODEL, ConfigError, RunConfig, apply_overrides

# Recipes: only the keys that differ from the defaults above. Plain data, no magic.
RECIPES: dict[str, dict[str, Any]] = {
    # Devlin et al. (2019) as run by the paper: BERTAdam (no bias correction), 3 epochs.
    "devlin2019": {"correct_bias": False, "epochs": 3.0, "lr": 2e-5},
    # Mosbach et al. (2021): bias-corrected Adam, 20 epochs, everything else unchanged.
    "mosbach2021": {"correct_bias": True, "epochs": 20.0, "lr": 2e-5},
    # Lee et al. (2020): Mixout(p=0.9) towards the pre-trained weights on every linear
    # layer with dropout off, as in the official mixout example (p from the Mixout paper;
    # the Mosbach appendix values were not available to us, see docs/recipes.md).
    "mixout2020": {
        "mixout": 0.9,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "classifier_dropout": 0.0,
        "correct_bias": False,
        "epochs": 3.0,
    },
    # Zhang et al. (2021): bias correction, re-initialised pooler and top layers.
    "zhang2021": {"correct_bias": True, "reinit_pooler": True, "reinit_layers": 2},
    # Composable modifiers, e.g. ``mosbach2021+llrd``.
    "reinit": {"reinit_pooler": True, "reinit_layers": 2},
    "llrd": {"layer_lr_decay": 0.95},
    "bc": {"correct_bias": True},
}


# Per model family (``config.model_type``), from the paper's official configs (§3.2).
FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "roberta": {"weight_decay": 0.1, "adam_beta2": 0.98, "max_grad_norm": 0.0},
    "xlm-roberta": {"weight_decay": 0.1, "adam_beta2": 0.98, "max_grad_norm": 0.0},
    "albert": {
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "classifier_dropout": 0.0,
        "weight_decay": 0.0,
    },
}


def recipe_overrides(recipe: str) -> dict[str, Any]:
    """The merged overrides of a ``+``-joined recipe string such as ``mosbach2021+llrd``."""
    merged: dict[str, Any] = {}
    for name in recipe.split("+"):
        name = name.strip()
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
        merged.update(RECIPES[name])
    return merged


def resolve_config(
    task: str = "rte",
    recipe: str = "devlin2019",
    seed: int = 1,
    model: str = DEFAULT_MODEL,
    model_type: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve defaults -> family preset -> recipe(s) -> overrides into a :class:`RunConfig`.

    Args:
        task: task name.
        recipe: recipe name(s), ``+``-joined.
        seed: run seed.
        model: model id, path or ``minilm``.
        model_type: the model's ``config.model_type`` (selects the family preset); None
            applies no family preset. The configuration layer reads no checkpoint:
            :func:`steadytune.training.models.resolve_for_model` looks the type up.
        overrides: user ``key=value`` overrides (strings are coerced).

    Raises:
        ConfigError: unknown recipe or key, or an invalid value.
    """
    overrides = dict(overrides or {})
    rec = recipe_overrides(recipe)
    base = RunConfig(task=task, recipe=recipe, seed=seed, model=model)
    family = FAMILY_PRESETS.get(model_type or "", {})
    cfg = apply_overrides(base, family)
    cfg = apply_overrides(cfg, rec)
    return apply_overrides(cfg, overrides)

