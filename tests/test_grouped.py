"""Several seeds per process: a run trained in a group equals the same run trained alone.

Tolerances: the group pads its runs' batches to a common shape and computes their matrix
products as one batched product, so the arithmetic is the same up to the order of
floating-point operations. On the tiny models below (8 updates, dropout 0.1 active) the
differences measured 1e-7 (losses, metrics), 1e-6 relative (gradient norms) and 2e-4
absolute (correlations of a tiny model's nearly constant STS-B predictions); the tests
allow 1e-5, 1e-4 relative and 1e-3 absolute, far below what a different dropout mask, data order or head
initialisation moves (the 2nd-3rd digit).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from steadytune.config.execution import Execution
from steadytune.sweeps.driver import run_sweep
from steadytune.sweeps.grouping import auto_group_size, check_group_size, group_tasks
from steadytune.sweeps.spec import SweepSpec
from steadytune.sweeps.worker import Job, execute_run, execute_task
from steadytune.training.evaluation import Tracker
from steadytune.training.grouped import loop as grouped_loop
from steadytune.training.grouped.loop import (
    check_groupable,
    log_member_losses,
    train_group,
)
from steadytune.training.grouped.model import GroupedModel, NotGroupable
from steadytune.training.grouped.modules import (
    GroupedEmbedding,
    GroupLayout,
    member_mask,
)
from steadytune.training.loop import train_and_evaluate
from steadytune.training.models import resolve_for_model
from steadytune.training.runner import process_state_kept

CPU1 = Execution(device="cpu", threads=1)


def _cfg(model, glue, seed, **over):
    base = dict(data_dir=str(glue), max_steps=8, evals_per_epoch=2, diag_every=2, log_every=1, lr=1e-3)
    base.update(over)
    return resolve_for_model(task=base.pop("task", "rte"), recipe="devlin2019", seed=seed, model=str(model),
                             overrides=base)


CORRELATIONS = ("corr", "pearson", "spearmanr")


def _tol(name: str) -> tuple[float, float]:
    """(relative, absolute) tolerance of a metric. A correlation of a tiny model's nearly
    constant predictions moves by up to 2e-4 (absolute) with the last bits of the
    predictions, even before training: 1e-3 absolute, on a scale of [-1, 1]."""
    return (0.0, 1e-3) if name in CORRELATIONS else (1e-5, 1e-6)


def _assert_same_run(alone, grouped):
    assert grouped.status == alone.status and grouped.steps == alone.steps and grouped.seeds == alone.seeds
    assert grouped.best_step == alone.best_step and grouped.failed == alone.failed
    for which in ("final", "best"):
        assert grouped.metrics[which].keys() == alone.metrics[which].keys()
        for name, value in alone.metrics[which].items():
            rel, abs_ = _tol(name)
            assert grouped.metrics[which][name] == pytest.approx(value, rel=rel, abs=abs_), (which, name)
    a, g = alone.curves, grouped.curves
    assert a[["step", "split", "name"]].equals(g[["step", "split", "name"]])
    rel, abs_ = np.array([_tol(name) for name in a["name"]]).T
    assert np.all(np.abs(g["value"].to_numpy() - a["value"].to_numpy()) <= rel * np.abs(a["value"].to_numpy()) + abs_)
    da, dg = alone.diagnostics, grouped.diagnostics
    assert da[["step", "group", "name"]].equals(dg[["step", "group", "name"]])
    assert dg["value"].to_numpy() == pytest.approx(da["value"].to_numpy(), rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_three_runs_in_a_group_equal_the_same_runs_alone(tiny_models, tiny_glue, family):
    model = tiny_models[family]
    seeds = [1, 2, 3]
    with process_state_kept():
        alone = [train_and_evaluate(_cfg(model, tiny_glue, s), execution=CPU1) for s in seeds]
    with process_state_kept():
        grouped = train_group([_cfg(model, tiny_glue, s) for s in seeds], execution=CPU1)
    for a, g in zip(alone, grouped):
        _assert_same_run(a, g)
    assert [g.execution["group"] for g in grouped] == [{"size": 3, "index": i} for i in range(3)]
    # The runs really differ from each other (the comparison above is not trivially true).
    assert grouped[0].curves["value"].tolist() != grouped[1].curves["value"].tolist()


def test_a_run_does_not_depend_on_which_runs_share_its_group(tiny_bert, tiny_glue):
    with process_state_kept():
        one = train_group([_cfg(tiny_bert, tiny_glue, s) for s in (1, 2, 3)], execution=CPU1)[0]
    with process_state_kept():
        other = train_group([_cfg(tiny_bert, tiny_glue, s) for s in (1, 7)], execution=CPU1)[0]
    _assert_same_run(one, other)


def test_runs_differing_in_their_stream_seeds_group_and_equal_the_runs_alone(tiny_bert, tiny_glue):
    cfgs = [_cfg(tiny_bert, tiny_glue, 1, head_seed=h, data_seed=d) for h, d in ((1, 1), (2, 1), (1, 2))]
    with process_state_kept():
        alone = [train_and_evaluate(c, execution=CPU1) for c in cfgs]
    with process_state_kept():
        grouped = train_group(cfgs, execution=CPU1)
    for a, g in zip(alone, grouped):
        _assert_same_run(a, g)
    assert grouped[1].seeds["head_seed"] == 2 and grouped[2].seeds["data_seed"] == 2


def test_regression_and_a_last_smaller_batch_in_a_group(tiny_bert, tiny_glue):
    # STS-B: MSE loss; 60 examples in batches of 16: each epoch ends with a batch of 12,
    # which comes at a different step for each run (its own data order).
    over = dict(task="stsb", max_steps=0, epochs=2, train_limit=60, evals_per_epoch=1)
    with process_state_kept():
        alone = [train_and_evaluate(_cfg(tiny_bert, tiny_glue, s, **over), execution=CPU1) for s in (1, 2)]
    with process_state_kept():
        grouped = train_group([_cfg(tiny_bert, tiny_glue, s, **over) for s in (1, 2)], execution=CPU1)
    for a, g in zip(alone, grouped):
        _assert_same_run(a, g)


def test_only_runs_that_differ_in_their_seed_can_group(tiny_bert, tiny_glue):
    with pytest.raises(NotGroupable, match="differ only in their seeds"):
        check_groupable([_cfg(tiny_bert, tiny_glue, 1), _cfg(tiny_bert, tiny_glue, 2, lr=1e-4)])
    with pytest.raises(NotGroupable, match="Mixout"):
        check_groupable([_cfg(tiny_bert, tiny_glue, s, mixout=0.1) for s in (1, 2)])


def test_a_diverged_run_ends_alone_and_the_others_go_on():
    members = [grouped_loop._Member(cfg=None, seeds={}, solo=None, info={}, tracker=Tracker("acc"))
               for _ in range(3)]
    log_member_losses(members, [0.7, float("nan"), 0.6], step=10, epoch=0.5, lr=1e-5)
    assert [m.status for m in members] == ["finished", "diverged", "finished"]
    assert members[1].steps == 10 and members[1].error == "non-finite training loss (nan) by step 10"
    assert math.isnan(members[1].tracker.final["acc"])
    log_member_losses(members, [0.5, float("nan"), float("inf")], step=20, epoch=1.0, lr=1e-5)
    assert [m.status for m in members] == ["finished", "diverged", "diverged"]
    assert members[1].steps == 10 and members[2].steps == 20  # the first verdict stays
    assert len(members[1].tracker.rows) == 2 and len(members[0].tracker.rows) == 4


def test_diverging_runs_end_at_the_step_they_end_alone(tiny_bert, tiny_glue):
    over = dict(lr=1e30, max_grad_norm=0, adam_eps=1e-30, log_every=2, max_steps=20, diag_every=1)
    with process_state_kept():
        alone = [train_and_evaluate(_cfg(tiny_bert, tiny_glue, s, **over), execution=CPU1) for s in (1, 2)]
    with process_state_kept():
        grouped = train_group([_cfg(tiny_bert, tiny_glue, s, **over) for s in (1, 2)], execution=CPU1)
    for a, g in zip(alone, grouped):
        assert a.status == g.status == "diverged"
        assert (g.steps, g.error) == (a.steps, a.error)
        assert g.diagnostics["step"].max() == a.diagnostics["step"].max()


def test_group_checkpoints_hold_each_runs_own_weights(tiny_bert, tiny_glue, tmp_path):
    from transformers import AutoModelForSequenceClassification

    over = dict(save_checkpoints="both")
    with process_state_kept():
        grouped = train_group([_cfg(tiny_bert, tiny_glue, s, **over) for s in (1, 2)],
                              [str(tmp_path / "a"), str(tmp_path / "b")], execution=CPU1)
    with process_state_kept():
        alone = train_and_evaluate(_cfg(tiny_bert, tiny_glue, 2, **over), tmp_path / "solo", execution=CPU1)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["seed"] == 2
    for which in ("final", "best"):
        mine = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b" / which).state_dict()
        solo = AutoModelForSequenceClassification.from_pretrained(tmp_path / "solo" / which).state_dict()
        assert mine.keys() == solo.keys()
        for name in solo:
            assert torch.allclose(mine[name], solo[name], rtol=1e-4, atol=1e-6), (which, name)
    assert grouped[1].best_step == alone.best_step


def test_grouped_embeddings_leave_the_padding_row_without_gradient():
    tables = [torch.nn.Embedding(5, 3, padding_idx=0) for _ in range(2)]
    layout = GroupLayout(2)
    layout.set([1, 1], [4, 4], [False, False], [None, None])
    grouped = GroupedEmbedding(tables, layout)
    ids = torch.tensor([[0, 1, 2, 0], [3, 0, 4, 1]])
    grouped(ids).sum().backward()
    assert torch.all(grouped.weight.grad[:, 0] == 0)
    expected = torch.stack([torch.nn.functional.embedding(ids[k], tables[k].weight) for k in range(2)])
    assert torch.equal(grouped(ids), expected)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_each_runs_mask_is_the_one_transformers_builds_for_it_alone(implementation):
    from transformers import BertConfig
    from transformers.masking_utils import create_bidirectional_mask

    config = BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8)
    config._attn_implementation = implementation
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    embeds = torch.zeros(3, 4, 8)
    theirs = create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=mask)
    ours = member_mask(mask, implementation, embeds.dtype)
    assert theirs.dtype == ours.dtype and torch.equal(theirs, ours)
    full = torch.ones(3, 4, dtype=torch.long)
    assert create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=full) is None
    assert member_mask(None, implementation, embeds.dtype) is None


def test_a_model_that_cannot_be_stacked_is_refused(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    models = [AutoModelForSequenceClassification.from_pretrained(tiny_bert, attn_implementation="eager")
              for _ in range(2)]
    for m in models:
        m.bert.register_parameter("odd", torch.nn.Parameter(torch.zeros(3)))  # owned by no known layer
    with pytest.raises(NotGroupable, match="cannot stack parameter bert.odd"):
        GroupedModel(models, [1, 2], torch.device("cpu"))


def test_group_tasks_groups_runs_that_differ_only_in_their_seed(tiny_bert, tiny_glue):
    jobs = [Job(f"r{s}-{lr}", _cfg(tiny_bert, tiny_glue, s, lr=lr), execution=CPU1)
            for s in (1, 2, 3) for lr in (1e-3, 1e-4)]
    tasks = group_tasks(jobs, 2)
    assert [[j.run_id for j in t] for t in tasks] == [["r1-0.001", "r2-0.001"], ["r1-0.0001", "r2-0.0001"],
                                                      ["r3-0.001"], ["r3-0.0001"]]
    assert [[j.run_id for j in t] for t in group_tasks(jobs, 1)] == [[j.run_id] for j in jobs]
    mixout = [Job(f"m{s}", _cfg(tiny_bert, tiny_glue, s, mixout=0.1), execution=CPU1) for s in (1, 2)]
    assert [len(t) for t in group_tasks(mixout, 4)] == [1, 1]
    other = Job("x", _cfg(tiny_bert, tiny_glue, 4), execution=Execution(device="cpu", threads=2))
    assert len(group_tasks([jobs[0], other], 4)) == 2  # another execution is another group
    assert auto_group_size([CPU1]) == 1  # no CUDA here: grouping does not pay on a CPU (measured)
    with pytest.raises(Exception, match="group_size must be >= 0"):
        check_group_size(-1)


def test_a_group_that_cannot_form_trains_its_runs_alone(tiny_bert, tiny_glue, monkeypatch):
    def refuse(*args, **kwargs):
        raise NotGroupable("say no")

    monkeypatch.setattr(grouped_loop, "GroupedModel", refuse)
    jobs = [Job(f"r{s}", _cfg(tiny_bert, tiny_glue, s), execution=CPU1) for s in (1, 2)]
    with process_state_kept():
        outcomes = execute_task(jobs)
    with process_state_kept():
        alone = execute_run("r2", jobs[1].cfg, execution=CPU1)
    assert [o.run_id for o in outcomes] == ["r1", "r2"]
    assert outcomes[1].result["metrics"] == alone.result["metrics"]  # trained alone: the same bits


def test_a_grouped_sweep_stores_what_one_at_a_time_stores(tiny_bert, tiny_glue, tmp_path):
    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019", "mosbach2021"), seeds=(1, 2, 3),
                     max_steps=4, data_dir=str(tiny_glue), overrides={"threads": "1", "evals_per_epoch": "1"})
    grouped = run_sweep(spec, tmp_path / "grouped.db", group_size=3)
    alone = run_sweep(spec, tmp_path / "alone.db", group_size=1)
    assert grouped["finished"] == alone["finished"] == 6
    import sqlite3

    def table(path):
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT run_id, final, best, failed, result_json FROM runs ORDER BY run_id").fetchall()
        return pd.DataFrame(rows, columns=["run_id", "final", "best", "failed", "result"])

    g, a = table(tmp_path / "grouped.db"), table(tmp_path / "alone.db")
    assert g["run_id"].tolist() == a["run_id"].tolist() and g["failed"].tolist() == a["failed"].tolist()
    assert np.allclose(g["final"], a["final"], rtol=1e-5) and np.allclose(g["best"], a["best"], rtol=1e-5)
    sizes = {json.loads(r)["execution"].get("group", {}).get("size") for r in g["result"]}
    assert sizes == {3}
    again = run_sweep(spec, tmp_path / "grouped.db", group_size=3)  # resume: nothing left
    assert again["to_run"] == 0 and again["done_before"] == 6
