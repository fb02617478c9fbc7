import dataclasses

import pytest

from steadytune.config.recipes import FAMILY_PRESETS, RECIPES, resolve_config
from steadytune.config.run import (
    ConfigError,
    RunConfig,
    config_hash,
    field_docs,
    parse_assignments,
    valid_keys,
)


def test_every_recipe_resolves_for_every_family():
    for recipe in RECIPES:
        for family in ("bert", "roberta", "albert", "electra", None):
            cfg = resolve_config(task="rte", recipe=recipe, model_type=family)
            assert isinstance(cfg, RunConfig)
            assert cfg.recipe == recipe


def test_paper_recipes():
    devlin = resolve_config(recipe="devlin2019", model_type="bert")
    assert (devlin.correct_bias, devlin.epochs, devlin.lr, devlin.warmup_ratio) == (False, 3.0, 2e-5, 0.1)
    assert (devlin.batch_size, devlin.weight_decay, devlin.adam_eps, devlin.max_grad_norm) == (16, 0.01, 1e-6, 1.0)
    assert devlin.hidden_dropout == devlin.attention_dropout == devlin.classifier_dropout == 0.1
    ours = resolve_config(recipe="mosbach2021", model_type="bert")
    assert (ours.correct_bias, ours.epochs) == (True, 20.0)
    mix = resolve_config(recipe="mixout2020", model_type="bert")
    assert mix.mixout == 0.9 and mix.hidden_dropout == 0.0


def test_family_presets_follow_the_paper():
    rob = resolve_config(recipe="devlin2019", model_type="roberta")
    assert (rob.weight_decay, rob.adam_beta2, rob.max_grad_norm) == (0.1, 0.98, 0.0)
    alb = resolve_config(recipe="mosbach2021", model_type="albert")
    assert (alb.hidden_dropout, alb.classifier_dropout, alb.weight_decay) == (0.0, 0.0, 0.0)
    assert set(FAMILY_PRESETS) >= {"roberta", "albert"}


def test_composition_and_overrides_win():
    cfg = resolve_config(recipe="mosbach2021+llrd", model_type="bert", overrides={"lr": "1e-5", "epochs": "10"})
    assert cfg.layer_lr_decay == 0.95 and cfg.lr == 1e-5 and cfg.epochs == 10.0 and cfg.correct_bias


def test_unknown_key_names_valid_ones():
    with pytest.raises(ConfigError, match="valid keys: .*lr"):
        parse_assignments(["learning_rate=1e-5"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; available: devlin2019"):
        resolve_config(recipe="nope", model_type="bert")
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["lr"])


@pytest.mark.parametrize("key,value,match", [
    ("lr", "-1", "lr must be > 0"), ("warmup_ratio", "1.5", "warmup_ratio"), ("batching", "magic", "choose one of"),
    ("correct_bias", "maybe", "expects bool"), ("batch_size", "2.5", "expects int"), ("mixout", "1.0", "mixout"),
    ("layer_lr_decay", "0", "layer_lr_decay"),
])
def test_invalid_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(model_type="bert", overrides={key: value})


def test_execution_keys_are_split_off_validated_and_refused_by_the_run_config():
    from steadytune.config.execution import Execution, split_execution

    run, execution = split_execution({"lr": "1e-5", "threads": "2", "device": "cpu"})
    assert run == {"lr": "1e-5"} and execution == Execution(device="cpu", threads=2)
    for bad, words in (({"device": "tpu"}, "device='tpu' is invalid"), ({"threads": "-1"}, "threads must be >= 0"),
                       ({"threads": "x"}, "expects int")):
        with pytest.raises(ConfigError, match=words):
            split_execution(bad)
    with pytest.raises(ConfigError, match="threads says where a run executes"):
        resolve_config(model_type="bert", overrides={"threads": 1})
    assert "threads" in valid_keys() and "threads" not in RunConfig.__dataclass_fields__


def test_bool_and_none_coercion():
    cfg = resolve_config(model_type="bert", overrides={"correct_bias": "true", "metric": "none", "max_steps": "1e2"})
    assert cfg.correct_bias is True and cfg.metric is None and cfg.max_steps == 100


def test_every_key_is_documented():
    assert set(field_docs()) == set(valid_keys())


def test_hash_ignores_execution_keys_only():
    a = resolve_config(model_type="bert")
    assert config_hash(a) == config_hash(a.replace(data_dir="/elsewhere"))
    assert config_hash(a) != config_hash(a.replace(seed=2))
    assert config_hash(a) != config_hash(a.replace(lr=1e-5))



def test_keys_added_later_enter_the_hash_only_away_from_their_default():
    from steadytune.config.run import HASH_EXCLUDED, HASHED_KEYS_V1, later_keys

    names = [f.name for f in dataclasses.fields(RunConfig)]
    # Every field is one of the first hashed keys, excluded, or a later key: a new field is
    # a later key by construction, and a V1 key can never be dropped unnoticed.
    assert set(HASHED_KEYS_V1) <= set(names)
    assert set(names) == set(HASHED_KEYS_V1) | set(HASH_EXCLUDED) | set(later_keys())
    a = resolve_config(model_type="bert")
    for key in later_keys():
        default = getattr(RunConfig(), key)
        assert config_hash(a.replace(**{key: default})) == config_hash(a)


def test_every_stored_run_id_is_still_the_hash_of_its_config():
    """device and threads left RunConfig for Execution: stored ids (hashed without them) hold."""
    import glob
    import json
    import sqlite3
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results"
    checked = 0
    for db in sorted(glob.glob(str(root / "*.db"))):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for run_id, config in conn.execute("SELECT run_id, config_json FROM runs"):
            stored = {k: v for k, v in json.loads(config).items() if k not in ("device", "threads")}
            assert config_hash(RunConfig(**stored)) == run_id, db
            checked += 1
        conn.close()
    assert checked >= 500
