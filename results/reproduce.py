"""Regenerate the tables and figures of docs/reproduction.md from the stored studies.

    python results/reproduce.py           # rewrite every table block and figure
    python results/reproduce.py --check   # exit 1 if a table in the document differs

Every table in docs/reproduction.md sits between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->`` and is produced here from a study under ``results/`` (or an
analysis folder under ``results/analysis/``), so the document cannot drift from the data:
``tests/test_reproduction.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from steadytune.analyses.stats import stuck_mask

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
DOC = ROOT / "docs" / "reproduction.md"
FIGDIR = ROOT / "docs" / "img" / "repro"

# arXiv v1 Table 1 (BERT-large, 25 seeds; ../shared/reference/paper-protocol.md §5.1):
# std, mean, median, max (x100). MRPC there is (acc+F1)/2, ours is F1 (the paper's code).
PAPER_TABLE1 = {
    ("rte", "devlin2019"): (7.2, 52.3, 47.3, 71.1), ("rte", "mixout2020"): (7.9, 65.3, 69.1, 74.4),
    ("rte", "mosbach2021"): (2.4, 70.1, 70.0, 75.5), ("mrpc", "devlin2019"): (5.9, 79.0, 74.8, 89.4),
    ("mrpc", "mixout2020"): (3.8, 87.8, 89.5, 91.8), ("mrpc", "mosbach2021"): (0.8, 89.6, 89.5, 91.4),
    ("cola", "devlin2019"): (25.6, 45.6, 59.1, 64.6), ("cola", "mixout2020"): (20.9, 51.9, 60.3, 64.0),
    ("cola", "mosbach2021"): (1.0, 64.6, 64.7, 66.8),
}
TASKS = ["rte", "mrpc", "cola"]
# Entropy (nats) of the training label prior, from the GLUE train.tsv label counts (the
# 256-example slices are stratified, so theirs is the same): RTE 1249/1241, CoLA 6023/2528,
# MRPC 2474/1194. Used for runs recorded before runs stored their own label entropy; "stuck"
# is then steadytune.stats.stuck_mask, as in `steadytune summary`.
PRIOR_ENTROPY = {"rte": 0.6931, "cola": 0.6069, "mrpc": 0.6312}
RECIPES = ["devlin2019", "mixout2020", "mosbach2021"]


@lru_cache(maxsize=None)
def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of ``results/<name>.db``; runs carry ``train_loss`` (last logged)."""
    from steadytune.store.study import Study

    with Study.open(RESULTS / f"{name}.db", readonly=True) as study:
        runs, curves = study.runs_table(), study.curves_table()
    runs["label_entropy"] = runs["label_entropy"].fillna(runs["task"].map(PRIOR_ENTROPY))
    runs["stuck"] = stuck_mask(runs["train_loss"], runs["label_entropy"]) == 1
    grid = runs["grid"].fillna("").map(lambda g: dict(kv.split("=", 1) for kv in g.split(",") if kv))
    for key in ("correct_bias", "epochs", "lr"):
        runs[key] = grid.map(lambda d: d.get(key, ""))
    return runs, curves


def diagnostics(name: str, run_ids: list[str]) -> pd.DataFrame:
    from steadytune.store.study import Study

    with Study.open(RESULTS / f"{name}.db", readonly=True) as study:
        return study.diagnostics_table(run_ids)


def _f(x: float, digits: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    """A p-value: 3 decimals, or 2 significant digits in scientific notation below 0.001."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---:" if df[c].map(lambda v: bool(re.fullmatch(r"[-–0-9./ ]+", str(v)))).all()
                          else "---" for c in df.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _groups(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """n, failed, mean/std/max of the final metric (x100) and the mean final train loss per group."""
    from steadytune.analyses.stats import summarize

    rows = []
    for values, part in runs.groupby(keys, sort=False):
        s = summarize(part).iloc[0]
        rows.append({**dict(zip(keys, values if isinstance(values, tuple) else (values,))),
                     "n": int(s["n"]), "failed": int(s["n_failed"]), "mean": _f(s["mean"]), "std": _f(s["std"]),
                     "median": _f(s["median"]), "max": _f(s["max"]),
                     "train loss": _f(part["train_loss"].mean(), 3),
                     "stuck": int(part["stuck"].sum()),
                     "failed 95% CI": f"{100 * s['failed_ci_low']:.0f}–{100 * s['failed_ci_high']:.0f}%"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ tables


def table_table1(name: str = "table1-gpu", tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    runs, _ = load(name)
    out = []
    for task in tasks:
        for recipe in RECIPES:
            part = runs[(runs["task"] == task) & (runs["recipe"] == recipe)]
            paper = PAPER_TABLE1[(task, recipe)]
            if len(part):
                g = _groups(part, ["task", "recipe"]).iloc[0]
                ours = [g["n"], g["failed"], g["stuck"], g["std"], g["mean"], g["median"], g["max"], g["train loss"]]
            else:
                ours = [0, "–", "–", "–", "–", "–", "–", "–"]
            out.append([task.upper() if task != "cola" else "CoLA", recipe, *ours,
                        " / ".join(_f(v) for v in paper)])
    cols = ["task", "recipe", "n", "failed", "stuck", "std", "mean", "median", "max", "train loss",
            "paper std / mean / median / max"]
    return markdown(pd.DataFrame(out, columns=cols))


def table_levene(name: str = "table1-gpu", pairs: tuple[tuple[str, str], ...] = ()) -> str:
    """The study's variance tests (all recipes with >= 3 runs), plus the named recipe pairs."""
    from steadytune.analyses.stats import compare_recipes, variance_tests

    runs, _ = load(name)
    cmp = compare_recipes(runs)
    rows = [[r["task"], r["recipes"], _p(r["levene_p"]), _p(r["bf_p"]), r["lowest_std_recipe"]]
            for r in cmp.to_dict("records")]
    for task in dict.fromkeys(runs["task"]):
        for a, b in pairs:
            part = runs[runs["task"] == task]
            groups = {r: 100 * part.loc[part["recipe"] == r, "final"].to_numpy() for r in (a, b)}
            test = variance_tests(groups)
            lowest = min(groups, key=lambda r: groups[r].std(ddof=1))
            rows.append([task, f"{a},{b}", _p(test["levene_p"]), _p(test["bf_p"]), lowest])
    return markdown(pd.DataFrame(rows, columns=["task", "recipes with ≥ 3 runs", "Levene p", "Brown–Forsythe p",
                                                "lowest std"]))


def table_mrpc_metrics(name: str) -> str:
    """MRPC failures under each of its metrics: F1 (ours, the ICLR text), accuracy (Dodge et al.'s
    definition) and (acc+F1)/2 (the paper's v1 Table 1), each against its majority baseline."""
    from steadytune.training.metrics import is_failed, majority_baseline

    # The majority classifier from the GLUE label counts (train 2474 paraphrases / 1194 not,
    # dev 279 / 129), scored by steadytune's own metrics: acc 68.4, F1 81.2, (acc+F1)/2 74.8.
    train = np.array([1] * 2474 + [0] * 1194)
    dev = np.array([1] * 279 + [0] * 129)
    metrics = {"f1": "F1", "acc": "accuracy", "acc_and_f1": "(acc+F1)/2"}
    base = {m: majority_baseline(train, dev, m) for m in metrics}
    runs, curves = load(name)
    dev_curves = curves[(curves["split"] == "dev") & curves["name"].isin(list(metrics))].sort_values("step")
    final = dev_curves.groupby(["run_id", "name"])["value"].last().unstack()
    runs = runs.join(final, on="run_id")
    rows = []
    for recipe in RECIPES:
        part = runs[runs["recipe"] == recipe]
        if not len(part):
            continue
        row = {"recipe": recipe, "n": len(part)}
        for m, label in metrics.items():
            failed = sum(is_failed(v, base[m]) for v in part[m])
            row[f"failed: {label} ≤ {100 * base[m]:.1f}"] = failed
        row["mean acc"] = _f(100 * part["acc"].mean())
        row["mean F1"] = _f(100 * part["f1"].mean())
        rows.append(row)
    return markdown(pd.DataFrame(rows))


def table_regime(name: str) -> str:
    runs, _ = load(name)
    runs = runs.assign(lr_num=runs["lr"].astype(float), ep=runs["epochs"].replace("", "3").astype(int))
    runs = runs.sort_values(["task", "ep", "lr_num", "correct_bias"], ascending=[False, True, True, False])
    g = _groups(runs, ["task", "ep", "lr", "correct_bias"])
    g = g.rename(columns={"ep": "epochs", "correct_bias": "bias correction"})
    g["task"] = g["task"].map({"rte": "RTE", "cola": "CoLA"})
    g["bias correction"] = g["bias correction"].map({"true": "yes", "false": "no"})
    return markdown(g[["task", "epochs", "lr", "bias correction", "n", "failed", "stuck", "mean", "std", "max",
                       "train loss"]])


def table_downsampling() -> str:
    full, _ = load("table1-gpu")
    small, _ = load("regime-gpu")
    rows = []
    for task in ("rte", "cola"):
        f = full[(full["task"] == task) & (full["recipe"] == "devlin2019")]
        steps = {"rte": 468, "cola": 1605}[task]
        for label, part in (
            (f"full training set, 3 epochs ({steps} steps)", f),
            ("256 examples, 3 epochs (48 steps)", small[(small["task"] == task) & (small["epochs"] == "3")]),
            ("256 examples, 20 epochs (320 steps)", small[(small["task"] == task) & (small["epochs"] == "20")]),
        ):
            part = part[(part["lr"].isin(["", "2e-05"])) & (part["correct_bias"].isin(["", "false"]))]
            g = _groups(part.assign(setting=label), ["setting"]).iloc[0]
            rows.append([task.upper() if task == "rte" else "CoLA", label, g["n"], g["failed"], g["stuck"], g["mean"],
                         g["max"], g["train loss"]])
    return markdown(pd.DataFrame(rows, columns=["task", "training", "n", "failed", "stuck", "mean", "max",
                                                "train loss"]))


def table_ablation_cola1k() -> str:
    """Bias correction x training length on the 1,000-example CoLA slice, 10 seeds per cell.

    The two corners are the Table 1 study's devlin2019 and mosbach2021 runs; the other two
    cells come from ``results/ablation-cola1k-cpu.db`` (devlin2019+bc, devlin2019 at 20 epochs).
    """
    main, _ = load("table1-cola1k-cpu")
    ablation, _ = load("ablation-cola1k-cpu")
    cells = (
        ("no", "3 (189)", main[main["recipe"] == "devlin2019"]),
        ("yes", "3 (189)", ablation[ablation["recipe"] == "devlin2019+bc"]),
        ("no", "20 (1260)", ablation[ablation["grid"] == "epochs=20"]),
        ("yes", "20 (1260)", main[main["recipe"] == "mosbach2021"]),
    )
    rows = []
    for bc, epochs, part in cells:
        g = _groups(part.assign(cell=bc + epochs), ["cell"]).iloc[0]
        rows.append([bc, epochs, str(part["recipe"].iloc[0]) + (" epochs=20" if bc == "no" and epochs[:2] == "20" else ""),
                     g["n"], g["failed"], g["failed 95% CI"], g["stuck"], g["mean"], g["std"], g["median"], g["max"], g["train loss"]])
    return markdown(pd.DataFrame(rows, columns=["bias correction", "epochs (steps)", "recipe", "n", "failed",
                                                "failed 95% CI", "stuck", "mean", "std", "median", "max",
                                                "train loss"]))


def table_forgetting(folder: str = "forgetting-rte") -> str:
    """Masked-LM perplexity on WikiText-2 test against k top blocks reset (Fig. 2)."""
    df = pd.read_csv(RESULTS / "analysis" / folder / "forgetting.csv")
    tuned = df[df["embeddings"] == "finetuned"]
    order = list(dict.fromkeys(tuned["model"]))
    wide = tuned.pivot_table(index="model", columns="k", values="perplexity").loc[order]
    rows = [[model, *(_f(v, 0) for v in series.to_numpy())] for model, series in wide.iterrows()]
    pre = df[df["embeddings"] == "pretrained"].groupby("model")["perplexity"].first().iloc[0]
    table = pd.DataFrame(rows, columns=["run (checkpoint, verdict, final dev acc)", *[f"k={k}" for k in wide.columns]])
    return markdown(table) + f"\n\nWhole pre-trained encoder (k = 6 and pre-trained embeddings): perplexity {pre:.0f}."


def table_surface(name: str = "surface-rte") -> str:
    """Dev loss and accuracy at the three points of the plane and the largest loss on the line (Fig. 7)."""
    folder = RESULTS / "analysis" / name
    grid = pd.read_csv(folder / "surface.csv")
    line = pd.read_csv(folder / "interpolation.csv")
    rows = []
    for label, a, b in (("pre-trained (0, 0)", 0.0, 0.0), ("failed (1, 0)", 1.0, 0.0), ("successful (0, 1)", 0.0, 1.0)):
        point = grid[(grid["alpha"] == a) & (grid["beta"] == b)].iloc[0]
        rows.append([label, _f(point["loss"], 4), _f(100 * point["acc"], 1)])
    rows.append(["grid minimum", _f(grid["loss"].min(), 4), _f(100 * grid.loc[grid["loss"].idxmin(), "acc"], 1)])
    peak = line.loc[line["loss"].idxmax()]
    rows.append([f"failed → successful line, highest (t = {peak['t']:.2f})", _f(peak["loss"], 4),
                 _f(100 * peak["acc"], 1)])
    split = json.loads((folder / "surface.json").read_text())["split"]
    return markdown(pd.DataFrame(rows, columns=["point", f"{split} loss", f"{split} acc"]))


def table_stuck_runs() -> str:
    """Every run of the CPU study at lr 2e-4 without bias correction, 20 epochs (stuck or not)."""
    runs = load("stuck-rte-cpu")[0].sort_values("seed", ignore_index=True)
    rows = [[int(r.seed), str(r.run_id), _f(100 * r.final), "yes" if r.failed else "no", _f(r.train_loss, 4),
             _f(r.label_entropy, 4), "yes" if r.stuck else "no"]
            for r in runs.itertuples()]
    return markdown(pd.DataFrame(rows, columns=["seed", "run", "dev acc", "failed", "train loss", "label entropy",
                                                "stuck"]))


# ------------------------------------------------------------------ seed-study statistics

PLAN_PAIR = ["devlin2019", "mosbach2021"]


def table_plan(name: str = "table1-cola1k-cpu") -> str:
    """`steadytune plan results/<name>.db --recipes devlin2019,mosbach2021`: one line per quantity."""
    from steadytune.analyses.planning import plan_lines, plan_seeds

    runs, _ = load(name)
    return "\n".join(f"* {line}" for line in plan_lines(plan_seeds(runs, recipes=PLAN_PAIR)))


def table_precision(name: str = "table1-cola1k-cpu", ns: tuple[int, ...] = (5, 10, 20, 50)) -> str:
    """`steadytune plan results/<name>.db --precision`, the two recipes at a few numbers of seeds."""
    from steadytune.analyses.planning import precision_table

    runs, _ = load(name)
    table = precision_table(runs[runs["recipe"].isin(PLAN_PAIR)])
    rows = [[r.recipe, str(r.n_seeds) + (" (as run)" if r.n_seeds == r.n_pilot else ""),
             f"± {_f(r.mean_ci_half_width, 2)}", f"{100 * r.failed_rate:.0f}%", _f(100 * r.failed_ci_width, 0),
             _f(r.expected_max, 2), f"{_f(r.max_p05, 2)}–{_f(r.max_p95, 2)}"]
            for r in table.itertuples() if r.n_seeds in ns]
    return markdown(pd.DataFrame(rows, columns=["recipe", "seeds", "95% CI of the mean", "failure rate (pilot)",
                                                "expected width of its 95% CI (points)", "expected best",
                                                "best: 5–95%"]))


FACTORIAL = ("factorial-cola1k-gpu", "factorial-cola1k-cpu")
"""The factorial seed studies this page reports, when they are in results/ (GPU first)."""


def table_factorial() -> str:
    """Variance components per recipe of each factorial study present (§ 5)."""
    present = [name for name in FACTORIAL if (RESULTS / f"{name}.db").exists()]
    if not present:
        return ("Not run yet: neither `results/factorial-cola1k-gpu.db` nor `results/factorial-cola1k-cpu.db` "
                "is in this checkout (commands above).")
    return "\n\n".join(_factorial_study(name) for name in present)


def _factorial_study(name: str) -> str:
    from steadytune.analyses.stats import summarize
    from steadytune.analyses.variance import variance_components

    runs, _ = load(name)
    parts = []
    for recipe, part in runs.groupby("recipe", sort=True):
        s = summarize(part).iloc[0]
        floor = ("no repeats" if not s["n_repeated"] else
                 f"spread among repeats of one seed (std) {_f(s['repeat_std'], 3)}, largest difference "
                 f"{_f(s['repeat_max_diff'], 3)}")
        head = (f"`{name}`, **{recipe}**: {int(s['n'])} seed combinations ({int(s['n_runs'])} runs), "
                f"{int(s['n_failed'])} failed, mean {_f(s['mean'])}, std {_f(s['std'])}; {floor}.")
        try:
            table = variance_components(part)
        except ValueError as exc:
            parts.append(f"{head} No decomposition: {exc}.")
            continue
        rows = [[r.component, _f(r.variance, 2), _f(r.std, 2), f"{100 * r.share:.0f}%" if np.isfinite(r.share) else "–",
                 f"{100 * r.share_ci_low:.0f}–{100 * r.share_ci_high:.0f}%" if np.isfinite(r.share_ci_low) else "–"]
                for r in table.itertuples()]
        parts.append(f"{head} Design: {table['design'].iloc[0]}.\n\n" + markdown(pd.DataFrame(
            rows, columns=["component", "variance (×100²)", "std (×100)", "share", "share 95% CI"])))
    return "\n\n".join(parts)
def _guard_tables() -> dict:
    """The doomed-run guard's tables (results/reproduce_guard.py, issue 15)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_guard", RESULTS / "reproduce_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tables(markdown, PRIOR_ENTROPY, RESULTS)


def _precision_tables() -> dict:
    """precision=auto against fp32 (results/reproduce_precision.py, issue 14)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_precision", RESULTS / "reproduce_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tables(load, markdown, _f, _p, RESULTS, PRIOR_ENTROPY)


TABLES = {
    "table1": table_table1,
    "levene": table_levene,
    "table1-cola1k": lambda: table_table1("table1-cola1k-cpu", ("cola",)),
    "levene-cola1k": lambda: table_levene("table1-cola1k-cpu", (("devlin2019", "mosbach2021"),)),
    "ablation-cola1k": table_ablation_cola1k,
    "table1-rte1k": lambda: table_table1("table1-rte1k-cpu", ("rte",)),
    "levene-rte1k": lambda: table_levene("table1-rte1k-cpu", (("devlin2019", "mosbach2021"),)),
    "table1-mrpc1k": lambda: table_table1("table1-mrpc1k-cpu", ("mrpc",)),
    "levene-mrpc1k": lambda: table_levene("table1-mrpc1k-cpu", (("devlin2019", "mosbach2021"),)),
    "metrics-mrpc1k": lambda: table_mrpc_metrics("table1-mrpc1k-cpu"),
    "regime-gpu": lambda: table_regime("regime-gpu"),
    "regime-rte-cpu": lambda: table_regime("regime-rte-cpu"),
    "downsampling": table_downsampling,
    "forgetting": table_forgetting,
    "surface": table_surface,
    "stuck-rte-cpu": table_stuck_runs,
    "forgetting-stuck": lambda: table_forgetting("forgetting-rte-stuck"),
    "surface-stuck": lambda: table_surface("surface-rte-stuck"),
    "surface-stuck-train": lambda: table_surface("surface-rte-stuck-train"),
    "plan-cola1k": table_plan,
    "precision-cola1k": table_precision,
    "factorial-cola1k": table_factorial,
    **_guard_tables(),
    **_precision_tables(),
}


# ----------------------------------------------------------------------------- figures


def figures() -> list[Path]:
    from steadytune.analyses.generalisation import (
        dev_vs_train_loss,
        plot_dev_vs_train_loss,
    )
    from steadytune.report.diagplots import (
        pick_failed_and_successful,
        plot_bias_correction,
        plot_layer_grad_norms,
    )
    from steadytune.report.plots import plot_boxplots

    FIGDIR.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        path = FIGDIR / name
        fig.savefig(path, dpi=110)
        written.append(path)

    runs, _ = load("table1-gpu")
    save(plot_boxplots(runs), "fig1-table1-gpu.png")
    cola1k, cola1k_curves = load("table1-cola1k-cpu")
    save(plot_boxplots(cola1k), "fig1-table1-cola1k-cpu.png")
    for name in ("table1-rte1k-cpu", "table1-mrpc1k-cpu"):
        save(plot_boxplots(load(name)[0]), f"fig1-{name}.png")
    ablation, ablation_curves = load("ablation-cola1k-cpu")
    both = pd.concat([cola1k[cola1k["recipe"] != "mixout2020"], ablation], ignore_index=True)
    save(plot_boxplots(both), "fig5-ablation-cola1k-cpu.png")
    save(plot_dev_vs_train_loss(dev_vs_train_loss(both, pd.concat([cola1k_curves, ablation_curves]))),
         "fig8-dev-vs-train-loss-cola1k.png")
    small, curves = load("regime-gpu")
    for task, grid in (("rte", "correct_bias=false,epochs=3,lr=2e-05"), ("cola", "correct_bias=true,epochs=20,lr=0.0001")):
        part = small[(small["task"] == task) & (small["grid"] == grid)]
        picks = pick_failed_and_successful(part)
        if picks:
            ids = next(iter(picks.values()))
            diag = diagnostics("regime-gpu", [ids["failed"], ids["successful"]])
            save(plot_layer_grad_norms(diag, ids["failed"], ids["successful"],
                                       title=f"{task.upper()} 256 examples, devlin2019, {grid}"),
                 f"fig4-grad-norms-{task}.png")
    # The paper's contrast proper: same setting, one run stuck at the prior, one that fit the data.
    part = small[(small["task"] == "rte") & (small["grid"] == "correct_bias=false,epochs=20,lr=0.0002")]
    stuck, fit = part.sort_values("train_loss").iloc[-1], part.sort_values("train_loss").iloc[0]
    diag = diagnostics("regime-gpu", [stuck["run_id"], fit["run_id"]])
    save(plot_layer_grad_norms(diag, stuck["run_id"], fit["run_id"],
                               title="RTE 256 examples, devlin2019, lr 2e-4, no bias correction, 20 epochs",
                               labels=(f"seed {stuck['seed']}: train loss stuck at {stuck['train_loss']:.3f}",
                                       f"seed {fit['seed']}: train loss {fit['train_loss']:.1e}")),
         "fig4-grad-norms-rte-stuck.png")
    save(_plot_failed_by_lr(), "fig5-bias-correction.png")
    pair = small[(small["task"] == "rte") & (small["epochs"] == "20") & (small["lr"] == "0.0002")]
    pair = pair.sort_values("seed").drop_duplicates("grid")
    save(plot_bias_correction(pair, diagnostics("regime-gpu", list(pair["run_id"]))), "fig6-bias-correction-factor.png")
    for task in ("rte", "cola"):
        part = small[small["task"] == task]
        save(plot_dev_vs_train_loss(dev_vs_train_loss(part, curves[curves["run_id"].isin(part["run_id"])])),
             f"fig8-dev-vs-train-loss-{task}.png")
    return written


def _plot_failed_by_lr():
    """Fig. 5 analogue: fraction of failed runs (dev) and of runs whose training loss never
    left the label prior, against lr, with and without bias correction; one panel per
    task x epochs of the GPU regime study (n per point in the legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, _ = load("regime-gpu")
    fig = Figure(figsize=(10, 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    for row, task in enumerate(("rte", "cola")):
        for col, epochs in enumerate(("3", "20")):
            ax = axes[row][col]
            for bc, colour, label in (("true", "C0", "BC"), ("false", "C3", "no BC")):
                part = runs[(runs["task"] == task) & (runs["epochs"] == epochs) & (runs["correct_bias"] == bc)]
                by_lr = part.groupby(part["lr"].astype(float))
                rate = by_lr["failed"].agg(["mean", "size"])
                ax.plot(rate.index, rate["mean"], marker="o", color=colour,
                        label=f"{label}: failed on dev (n = {'/'.join(map(str, rate['size']))})")
                ax.plot(rate.index, by_lr["stuck"].mean(), marker="x", ls="--", color=colour,
                        label=f"{label}: train loss stuck at the prior")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks([2e-5, 1e-4, 2e-4], ["2e-5", "1e-4", "2e-4"])
            ax.set_title(f"{task.upper() if task == 'rte' else 'CoLA'}, 256 examples, {epochs} epochs", fontsize=10)
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, frameon=False)
            if row == 1:
                ax.set_xlabel("learning rate")
            if col == 0:
                ax.set_ylabel("fraction of runs")
    return fig


# ------------------------------------------------------------------------ the document

BLOCK = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n(?:(?P<body>.*?)\n)?<!-- /table:(?P=name) -->", re.S)


def render(text: str) -> str:
    """``text`` with every table block regenerated."""
    return BLOCK.sub(lambda m: f"<!-- table:{m['name']} -->\n{TABLES[m['name']]()}\n<!-- /table:{m['name']} -->", text)


def check(text: str) -> list[str]:
    """Names of the table blocks of ``text`` that differ from their regenerated form."""
    return [m["name"] for m in BLOCK.finditer(text) if TABLES[m["name"]]() != (m["body"] or "")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    if args.check:
        bad = check(text)
        print("tables match the stored studies" if not bad else f"differs: {', '.join(bad)}")
        return 1 if bad else 0
    DOC.write_text(render(text))
    if not args.no_figures:
        for path in figures():
            print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
