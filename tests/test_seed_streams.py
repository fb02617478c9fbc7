"""Independent seed streams: head_seed, data_seed and dropout_seed each move only their stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steadytune.config.errors import ConfigError
from steadytune.config.execution import Execution
from steadytune.config.run import RunConfig, config_hash, identity, within_group_label
from steadytune.data.batching import batch_order
from steadytune.training.loop import set_up, train_and_evaluate
from steadytune.training.models import resolve_for_model
from steadytune.training.results import derive_seeds
from steadytune.training.runner import process_state_kept

CPU = Execution(device="cpu", threads=1)


def _cfg(model, glue, **over):
    base = {"data_dir": str(glue), "max_steps": 6, "evals_per_epoch": 1, "precision": "fp32"}  # set_up needs it
    base.update(over)
    return resolve_for_model(task="rte", recipe="devlin2019", seed=base.pop("seed", 1), model=str(model),
                             overrides=base)


def _streams(cfg):
    """What each stream produced at the start of a run: head weights, epoch-0 batch order, dropout RNG."""
    with process_state_kept():
        run = set_up(cfg, CPU)
        head = {k: v.detach().clone() for k, v in run.model.named_parameters() if k.startswith("classifier")}
        order = np.concatenate(batch_order(run.data.train_enc.lengths, cfg.batch_size, run.seeds["data_order"], 0,
                                           cfg.batching))
        dropout = torch.get_rng_state()  # set_up seeds the global generator with the dropout stream last
    return head, order, dropout


def _same_head(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key,moves", [("head_seed", "head"), ("data_seed", "order"), ("dropout_seed", "dropout")])
def test_each_stream_seed_moves_only_its_stream(tiny_bert, tiny_glue, key, moves):
    base = _streams(_cfg(tiny_bert, tiny_glue))
    changed = _streams(_cfg(tiny_bert, tiny_glue, **{key: 2}))
    seed2 = _streams(_cfg(tiny_bert, tiny_glue, seed=2))
    same = {"head": _same_head(base[0], changed[0]), "order": np.array_equal(base[1], changed[1]),
            "dropout": torch.equal(base[2], changed[2])}
    assert same == {name: name != moves for name in same}, f"{key} must move the {moves} stream only"
    # The stream it moved is exactly the one run seed 2 derives.
    index = ["head", "order", "dropout"].index(moves)
    equal = (_same_head, np.array_equal, torch.equal)[index]
    assert equal(changed[index], seed2[index])


def test_a_stream_seed_equal_to_the_derived_one_changes_nothing(tiny_bert, tiny_glue):
    base = _streams(_cfg(tiny_bert, tiny_glue))
    same = _streams(_cfg(tiny_bert, tiny_glue, head_seed=1, data_seed=1, dropout_seed=1))
    assert _same_head(base[0], same[0]) and np.array_equal(base[1], same[1]) and torch.equal(base[2], same[2])


def test_all_three_streams_from_seed_2_reproduce_run_seed_2_and_are_recorded(tiny_bert, tiny_glue):
    with process_state_kept():
        moved = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, head_seed=2, data_seed=2, dropout_seed=2),
                                   execution=CPU)
        seed2 = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, seed=2), execution=CPU)
        head_only = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, head_seed=2), execution=CPU)
    assert moved.metrics == seed2.metrics
    assert moved.curves.equals(seed2.curves)
    assert not head_only.curves.equals(seed2.curves)
    assert head_only.seeds == {**derive_seeds(1), "head_init": derive_seeds(2)["head_init"], "head_seed": 2}
    assert moved.seeds["run"] == 1 and {k: moved.seeds[k] for k in ("head_seed", "data_seed", "dropout_seed")} == \
        {"head_seed": 2, "data_seed": 2, "dropout_seed": 2}
    assert "head_seed" not in seed2.seeds  # unset streams are not recorded as set


def test_stream_keys_enter_the_hash_only_when_set_and_never_the_group():
    cfg = RunConfig()
    assert config_hash(cfg.replace(head_seed=None, repeat=0)) == config_hash(cfg)
    ids = {config_hash(cfg.replace(**{k: 3})) for k in ("head_seed", "data_seed", "dropout_seed", "repeat")}
    assert len(ids) == 4 and config_hash(cfg) not in ids
    assert identity(cfg.replace(head_seed=3, data_seed=4, dropout_seed=5, repeat=2, seed=7).to_dict()) == \
        identity(cfg.to_dict())
    assert within_group_label(cfg.replace(data_seed=4, repeat=2)) == "data_seed=4,repeat=2"
    assert within_group_label(cfg) == ""


@pytest.mark.parametrize("key", ["head_seed", "data_seed", "dropout_seed", "repeat"])
def test_negative_stream_seed_or_repeat_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"^{key} must be >= 0, got -1$"):
        RunConfig().replace(**{key: -1})
    assert RunConfig().replace(**{key: "4"}).to_dict()[key] == 4
