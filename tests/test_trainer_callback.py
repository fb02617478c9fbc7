"""steadytune inside a Hugging Face Trainer: the callback changes nothing, its norms are steadytune's,
and a recipe run through `Trainer` follows steadytune's own loop step for step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from steadytune.analyses.stats import summarize
from steadytune.config.execution import Execution
from steadytune.config.recipes import resolve_config
from steadytune.data.batching import batch_order, collate
from steadytune.integrations.trackers import JsonlLogger
from steadytune.integrations.trainerrun import TrainerRunInfo
from steadytune.integrations.transformers import (
    DiagnosticsCallback,
    add_diagnostics,
    trainer_recipe,
)
from steadytune.store.study import Study
from steadytune.training.diagnostics import layer_of
from steadytune.training.loop import set_up, train_step
from steadytune.training.metrics import accuracy, majority_baseline
from steadytune.training.runner import process_state_kept

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="the 'trainer' extra (accelerate) is not installed")

STEPS = 6


@pytest.fixture
def setup(tiny_bert, tiny_glue):
    """steadytune's set-up of a dropout-free run (so the Trainer's RNG cannot matter) and its batches."""
    cfg = resolve_config(task="rte", recipe="devlin2019", model=str(tiny_bert), overrides={
        "data_dir": str(tiny_glue), "hidden_dropout": 0.0, "attention_dropout": 0.0, "classifier_dropout": 0.0,
        "max_steps": STEPS, "diag_every": 1, "log_every": 1, "precision": "fp32", "evals_per_epoch": 0, "lr": 1e-3, "max_grad_norm": 0.25})
    with process_state_kept():
        run = set_up(cfg, Execution(device="cpu", threads=1))
    batches = [idx for epoch in range(2) for idx in batch_order(run.data.train_enc.lengths, cfg.batch_size,
                                                                run.seeds["data_order"], epoch, cfg.batching)]
    assert all(len(b) == cfg.batch_size for b in batches) and len(batches) >= STEPS
    return cfg, run, batches[:STEPS]


def _trainer(cfg, run, model, batches, tmp_path, callbacks=(), recipe=True, eval_set=None, metrics=None, **args):
    """A Trainer that sees exactly steadytune's batches, in order, padded by steadytune's collate."""
    order = [("train", int(i)) for b in batches for i in b]
    encs, pad = {"train": run.data.train_enc, "dev": run.data.dev_enc}, run.data.pad_id
    collator = lambda features: collate(encs[features[0][0]], np.asarray([i for _, i in features]), pad)  # noqa: E731
    common = dict(train_sampling_strategy="sequential", remove_unused_columns=False, use_cpu=True,
                  dataloader_num_workers=0, **args)
    if recipe:
        r = trainer_recipe(cfg, model, n_train=len(order), output_dir=str(tmp_path / "hf"), **common)
        return transformers.Trainer(model=model, args=r.args, optimizers=r.optimizers, train_dataset=order,
                                    eval_dataset=eval_set, compute_metrics=metrics, data_collator=collator,
                                    callbacks=list(callbacks))
    targs = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=cfg.batch_size,
                                           max_steps=len(batches), logging_steps=1, report_to="none",
                                           save_strategy="no", disable_tqdm=True, **common)
    return transformers.Trainer(model=model, args=targs, train_dataset=order, data_collator=collator,
                                callbacks=list(callbacks))


def test_the_callback_does_not_change_training(setup, tmp_path):
    cfg, run, batches = setup
    trained = []
    for callbacks in ([], [DiagnosticsCallback(every=1)]):
        model = copy.deepcopy(run.model)
        with process_state_kept():
            trainer = _trainer(cfg, run, model, batches, tmp_path, callbacks)
            trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trained.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    (loss_a, weights_a), (loss_b, weights_b) = trained
    assert loss_a == loss_b and len(loss_a) == STEPS
    for name, value in weights_a.items():
        assert torch.equal(value, weights_b[name]), name  # bit for bit


def test_a_recipe_through_trainer_follows_steadytunes_loop_and_records_its_diagnostics(setup, tmp_path):
    cfg, run, batches = setup
    model = copy.deepcopy(run.model)
    callback = DiagnosticsCallback(every=1, out=tmp_path / "tables", logger=JsonlLogger(tmp_path / "m.jsonl", "hf"))
    with process_state_kept():
        trainer = _trainer(cfg, run, model, batches, tmp_path, [callback])
        trainer.train()
        for step, idx in enumerate(batches):  # steadytune's own loop on the same batches
            train_step(run, cfg, idx, step)
    ours = run.diag.frame().set_index(["step", "group", "name"])["value"]
    theirs = callback.diagnostics().set_index(["step", "group", "name"])["value"]
    assert set(theirs.index) == set(ours.index) and len(ours) > 6 * 40
    pd.testing.assert_series_equal(theirs.sort_index(), ours.sort_index(), rtol=1e-4, atol=1e-9)
    step0 = theirs.xs(0)
    assert step0["grad_norm_layer"].index.tolist()[0] == "embeddings" and step0["optim", "lr"] == pytest.approx(cfg.lr)  # no warmup in 6 steps
    # the pre-clip total is the Trainer's own pre-clip grad_norm, and clipping did happen
    logged = {h["step"] - 1: h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h}
    totals = theirs.xs(("optim", "total_grad_norm"), level=("group", "name"))
    assert max(totals) > cfg.max_grad_norm
    for step, value in totals.items():
        assert value == pytest.approx(logged[step], rel=1e-5)
    for name, value in model.state_dict().items():  # same weights after the same updates
        torch.testing.assert_close(value, run.model.state_dict()[name], rtol=1e-4, atol=1e-6)
    assert (tmp_path / "tables" / "diagnostics.csv").exists() and (tmp_path / "tables" / "curves.csv").exists()
    assert len(pd.read_csv(tmp_path / "tables" / "diagnostics.csv")) == len(theirs)
    assert callback.curves().query("split == 'train' and name == 'loss'")["step"].tolist() == list(range(1, 7))


def test_norms_equal_an_independent_per_layer_computation(setup, tmp_path):
    """Without clipping, the gradients the Trainer leaves for the optimiser are the pre-clip ones:
    the callback's per-layer norms equal torch.linalg.vector_norm over each layer's gradients."""
    cfg, run, batches = setup
    model = copy.deepcopy(run.model)
    seen = {}

    class Reference(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            by_layer = {}
            for name, p in model.named_parameters():
                if p.grad is not None:
                    by_layer.setdefault(layer_of(name), []).append(p.grad.double().flatten())
            seen[state.global_step] = {k: float(torch.linalg.vector_norm(torch.cat(v))) for k, v in by_layer.items()}

    callback = DiagnosticsCallback(every=2)
    with process_state_kept():
        _trainer(cfg, run, model, batches, tmp_path, [callback, Reference()], recipe=False, max_grad_norm=0.0).train()
    diag = callback.diagnostics().query("group == 'grad_norm_layer'")
    assert sorted(set(diag["step"])) == [0, 2, 4]
    for step, name, value in diag[["step", "name", "value"]].itertuples(index=False):
        assert value == pytest.approx(seen[step][name], rel=1e-6)


def test_trainers_own_optimiser_gives_bias_correction_rows(setup, tmp_path):
    cfg, run, batches = setup
    model = copy.deepcopy(run.model)
    with process_state_kept():
        trainer = _trainer(cfg, run, model, batches, tmp_path, recipe=False)
        callback = add_diagnostics(trainer, every=3)
        trainer.train()
    optim = callback.diagnostics().query("group == 'optim'").pivot(index="step", columns="name", values="value")
    assert optim.index.tolist() == [0, 3]
    beta1, beta2 = trainer.args.adam_beta1, trainer.args.adam_beta2
    for step, row in optim.iterrows():  # torch AdamW corrects the bias: c_t = sqrt(1-b2^t)/(1-b1^t), t = step+1
        t = step + 1
        assert row["bias_correction_factor"] == pytest.approx(math.sqrt(1 - beta2**t) / (1 - beta1**t))
        assert row["effective_lr"] == pytest.approx(row["lr"] * row["bias_correction_factor"])


def test_a_trainer_run_stored_in_a_study_is_summarised(setup, tmp_path):
    cfg, run, batches = setup
    dev = run.data.dev_enc
    baseline = majority_baseline(run.data.train.labels, dev.labels, "acc")
    info = TrainerRunInfo(cfg, metric="acc", baseline=baseline, label_entropy=0.69)
    model = copy.deepcopy(run.model)

    def metrics(pred):
        return {"acc": accuracy(np.argmax(pred.predictions, -1), pred.label_ids)}

    eval_set = [("dev", i) for i in range(len(dev.labels))]
    callback = DiagnosticsCallback(every=5, study=tmp_path / "s.db", run=info)
    with process_state_kept():
        trainer = _trainer(cfg, run, model, batches, tmp_path, [callback], eval_set=eval_set, metrics=metrics,
                           eval_strategy="steps", eval_steps=3)
        trainer.train()
    with Study.open(tmp_path / "s.db", readonly=True) as study:
        runs = study.runs_table()
        diags = study.diagnostics_table()
    (row,) = runs.to_dict("records")
    assert row["grid"] == "trainer" and row["recipe"] == "devlin2019" and row["run_id"].startswith("trainer-")
    final_acc = callback.evaluations[-1][1]["acc"]
    assert row["final"] == pytest.approx(final_acc) and row["baseline"] == pytest.approx(baseline)
    assert row["failed"] == (final_acc <= baseline + 1e-9)
    assert sorted(set(diags["step"])) == [0, 5]
    table = summarize(runs)
    assert table["n"].tolist() == [1] and table["mean"].iloc[0] == pytest.approx(100 * final_acc)


def test_steadytunes_guard_inside_the_trainer_stops_a_doomed_run(setup, tmp_path):
    """The doomed-run detector fed as steadytune's loop feeds it; thresholds set so that it fires
    at the first diagnostic step that has a logged loss at the label prior (step 1)."""
    from steadytune.store.records import read_result
    from steadytune.training.guard import Guard, Thresholds

    cfg, run, batches = setup
    entropy = math.log(2)
    guard = Guard("stop", STEPS, label_entropy=entropy, baseline=0.5,
                  thresholds=Thresholds(vanish_ratio=1e6, vanish_steps=1))
    info = TrainerRunInfo(cfg, metric="acc", baseline=0.5, label_entropy=entropy)
    callback = DiagnosticsCallback(every=1, guard=guard, study=tmp_path / "s.db", run=info)
    model = copy.deepcopy(run.model)
    with process_state_kept():
        trainer = _trainer(cfg, run, model, batches, tmp_path, [callback])
        trainer.train()
    assert trainer.state.global_step == 2 and callback.stopped  # judged at step 1; that update still happens
    record = callback.guard_record(trainer.state.global_step)
    assert (record["verdict"], record["rule"], record["step"], record["stopped"], record["steps_saved"]) == (
        "doomed", "vanishing", 1, True, STEPS - 2)
    with Study.open(tmp_path / "s.db", readonly=True) as study:
        (run_id,) = study.runs_table()["run_id"]
        stored = read_result(study, run_id)
    assert stored.status == "stopped" and stored.failed and stored.guard["rule"] == "vanishing"
