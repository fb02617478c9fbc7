"""precision=auto against fp32 (issue 14): the tables of docs/reproduction.md § 7, for results/reproduce.py.

On the CPU of these studies (an Intel Xeon with AMX) ``precision=auto`` chooses bf16
autocast. Before it became the default, the same cells were run again in bf16 and compared
with the stored fp32 studies:

    precision-check    CoLA and MRPC 1k slices (devlin2019 and mosbach2021) and an SST-2 1k slice
                       (devlin2019), seeds 1-10:
                       failed, stuck, mean and std per precision, and tests that would
                       separate them (Fisher's exact test on the failure counts, Welch's t on
                       the means, Brown-Forsythe on the spreads)
    precision-regime   RTE 256 at lr 2e-4 without bias correction (the failing regime), 3 and
                       20 epochs: stuck runs, and how many of them show vanishing lower-layer
                       gradients (embeddings' gradient norm below 1e-2 of the classifier's)

:func:`tables` returns them as ``name -> function`` for ``TABLES``. A bf16 study not in ``results/``
yet is named under its table, with its command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

CELLS = (("cola", "table1-cola1k-cpu", "precision-cola1k-cpu", ("devlin2019", "mosbach2021")),
         ("sst2", "precision-sst21k-fp32-cpu", "precision-sst21k-bf16-cpu", ("devlin2019",)),
         ("mrpc", "table1-mrpc1k-cpu", "precision-mrpc1k-cpu", ("devlin2019", "mosbach2021")))
"""(task, fp32 study, bf16 study, recipes). SST-2 is the task MiniLM learns in 3 epochs of 1,000
examples (dev accuracy ~0.78, docs/performance.md); no fp32 study of it existed, so it has its own."""
REGIME = (("fp32", "regime-rte-cpu", "3"), ("fp32", "stuck-rte-cpu", "20"), ("bf16", "precision-regime-rte-cpu", "3"),
          ("bf16", "precision-regime-rte-cpu", "20"))
"""(precision, study, epochs) of the failing-regime runs (lr 2e-4, no bias correction, RTE 256)."""
COMMANDS = {
    "precision-cola1k-cpu": "steadytune sweep --tasks cola --recipes devlin2019,mosbach2021 --seeds 1-10 "
                            "--train-limit 1000 --set evals_per_epoch=1 --set diag_every=50 --set precision=bf16 "
                            "--store results/precision-cola1k-cpu.db",
    "precision-sst21k-fp32-cpu": "steadytune sweep --tasks sst2 --recipes devlin2019 --seeds 1-10 "
                                 "--train-limit 1000 --set evals_per_epoch=1 --set diag_every=50 --set precision=fp32 "
                                 "--store results/precision-sst21k-fp32-cpu.db",
    "precision-sst21k-bf16-cpu": "steadytune sweep --tasks sst2 --recipes devlin2019 --seeds 1-10 "
                                 "--train-limit 1000 --set evals_per_epoch=1 --set diag_every=50 --set precision=bf16 "
                                 "--store results/precision-sst21k-bf16-cpu.db",
    "precision-mrpc1k-cpu": "steadytune sweep --tasks mrpc --recipes devlin2019,mosbach2021 --seeds 1-10 "
                            "--train-limit 1000 --set evals_per_epoch=1 --set diag_every=50 --set precision=bf16 "
                            "--store results/precision-mrpc1k-cpu.db",
    "precision-regime-rte-cpu": "steadytune sweep --tasks rte --recipes devlin2019 --seeds 1-5 --set lr=2e-4 "
                                "--set correct_bias=false --grid epochs=3,20 --train-limit 256 "
                                "--set evals_per_epoch=1 --set precision=bf16 "
                                "--store results/precision-regime-rte-cpu.db",
}
VANISHING = 1e-2


def tables(load: Callable, markdown: Callable[[pd.DataFrame], str], fmt: Callable, pfmt: Callable,
           results: Path, prior: dict[str, float]) -> dict[str, Callable[[], str]]:
    """``name -> function`` of this module's tables.

    Args:
        load: reproduce.py's ``load(name) -> (runs, curves)`` (runs carry ``stuck``).
        markdown: DataFrame -> markdown table.
        fmt, pfmt: number and p-value formatting.
        results: the ``results/`` folder.
        prior: per task, the label-prior entropy of runs recorded before runs stored it.
    """

    def missing(names: tuple[str, ...]) -> str | None:
        absent = [n for n in names if not (results / f"{n}.db").exists()]
        if not absent:
            return None
        commands = "\n".join(COMMANDS[n] for n in absent)
        return f"Not run yet: {', '.join(absent)}. Commands:\n\n```bash\n{commands}\n```"

    def check() -> str:
        present = [cell for cell in CELLS if all((results / f"{name}.db").exists() for name in cell[1:3])]
        note = missing(tuple(name for cell in CELLS for name in cell[1:3]))
        if not present:
            return note
        rows, unfinished = [], []
        for task, fp32_name, bf16_name, recipes in present:
            fp32, bf16 = load(fp32_name)[0], load(bf16_name)[0]
            for recipe in recipes:
                a = fp32[(fp32["recipe"] == recipe) & (fp32["seed"] <= 10)]
                b = bf16[bf16["recipe"] == recipe]
                if len(b) < 2:  # a study resumed recipe by recipe: too few runs to compare yet
                    unfinished.append(f"{task} {recipe} ({len(b)} bf16 run{'s' if len(b) != 1 else ''} in {bf16_name})")
                    continue
                rows.append(_compare(task, recipe, a, b, fmt, pfmt))
        table = markdown(pd.DataFrame(rows))
        if unfinished:
            table += f"\n\nNot finished yet: {', '.join(unfinished)}; its study's command resumes it."
        return f"{table}\n\n{note}" if note else table

    def regime() -> str:
        note = missing(("precision-regime-rte-cpu",))
        if note:
            return note
        from steadytune.analyses.triage import load_runs

        rows = []
        for precision, name, epochs in REGIME:
            runs = [r for r in load_runs(results / f"{name}.db", prior)
                    if r.regime == f"lr 0.0002, no BC, {epochs} ep, 256 ex"]
            stuck = [r for r in runs if r.stuck]
            ratios = [r.min_ratio for r in stuck if r.min_ratio == r.min_ratio]
            rows.append({"precision": precision, "epochs": epochs, "study": name, "runs": len(runs),
                         "failed": sum(bool(r.failed) for r in runs), "stuck": len(stuck),
                         "stuck, vanishing": sum(r.min_ratio < VANISHING for r in stuck),
                         "median lowest ratio (stuck)": f"{np.median(ratios):.1e}" if ratios else "–"})
        return markdown(pd.DataFrame(rows))

    return {"precision-check": check, "precision-regime": regime}


def _compare(task: str, recipe: str, a: pd.DataFrame, b: pd.DataFrame, fmt: Callable, pfmt: Callable) -> dict:
    """One row: the two precisions side by side, and the p-values of the tests that would separate them."""
    va, vb = 100 * a["final"].to_numpy(float), 100 * b["final"].to_numpy(float)
    fa, fb = int(a["failed"].sum()), int(b["failed"].sum())
    fisher = stats.fisher_exact([[fa, len(a) - fa], [fb, len(b) - fb]]).pvalue
    welch = stats.ttest_ind(va, vb, equal_var=False).pvalue
    spread = stats.levene(va, vb, center="median").pvalue
    return {"task": task, "recipe": recipe, "n fp32 / bf16": f"{len(a)} / {len(b)}",
            "failed": f"{fa} / {fb}", "stuck": f"{int(a['stuck'].sum())} / {int(b['stuck'].sum())}",
            "mean": f"{fmt(va.mean())} / {fmt(vb.mean())}",
            "std": f"{fmt(va.std(ddof=1))} / {fmt(vb.std(ddof=1))}",
            "Fisher p (failed)": pfmt(fisher), "Welch p (mean)": pfmt(welch), "BF p (std)": pfmt(spread)}


__all__ = ["CELLS", "COMMANDS", "REGIME", "tables"]
