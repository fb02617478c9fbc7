"""The doomed-run guard's tables of docs/reproduction.md (issue 15), for results/reproduce.py.

    vanishing-by-regime   per regime, stuck runs with and without vanishing lower-layer gradients
    triage                the detector replayed over every stored study: train vs held-out
    triage-by-study       the same per held-out study and task
    guard-online          the online validation studies (results/guard-1k-*.db), or their commands

:func:`tables` returns them as ``name -> function`` for ``TABLES``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd

TRAIN = ("regime-gpu", "table1-cola1k-cpu", "ablation-cola1k-cpu")
"""The studies the detector's thresholds were chosen on; every other study is held out."""
STUDIES = ("regime-gpu", "table1-cola1k-cpu", "ablation-cola1k-cpu", "regime-rte-cpu", "stuck-rte-cpu",
           "table1-rte1k-cpu", "table1-mrpc1k-cpu", "table1-gpu")
ONLINE = ("guard-1k-cpu", "guard-1k-gpu")
"""The online validation studies, whichever exist (commands in docs/reproduction.md § 5)."""
COMMANDS = """\
steadytune sweep --tasks cola,rte --recipes devlin2019 --seeds 101-110 --train-limit 1000 \\
  --grid lr=2e-5,2e-4 --grid guard=flag,restart,switch --set guard_switch=correct_bias=true \\
  --set guard_attempts=3 --set evals_per_epoch=1 --workers 2 --store results/guard-1k-cpu.db
steadytune sweep --tasks cola,rte --recipes mosbach2021 --seeds 101-110 --train-limit 1000 \\
  --set evals_per_epoch=1 --workers 2 --store results/guard-1k-cpu.db"""


def tables(markdown: Callable[[pd.DataFrame], str], prior: dict[str, float], results: Path) -> dict[str, Callable[[], str]]:
    """``name -> function`` of this module's tables, rendered with reproduce.py's ``markdown``.

    Args:
        markdown: DataFrame -> markdown table.
        prior: per task, the label-prior entropy of runs recorded before runs stored it.
        results: the ``results/`` folder.
    """
    paths = tuple(results / f"{name}.db" for name in STUDIES)

    @lru_cache(maxsize=None)
    def triaged():
        from steadytune.analyses.triage import triage

        return triage(paths, train=TRAIN, label_entropy=prior)

    def table_vanishing() -> str:
        from steadytune.analyses.triage import load_runs, vanishing_by_regime

        runs = [r for p in paths for r in load_runs(p, prior)]
        t = vanishing_by_regime(runs)
        t = t[t["stuck"] + t["other_vanishing"] > 0]
        out = pd.DataFrame({"regime": t["regime"], "runs": t["runs"], "stuck": t["stuck"],
                            "stuck, vanishing": t["stuck_vanishing"], "stuck, not vanishing": t["stuck_not_vanishing"],
                            "not stuck, vanishing": t["other_vanishing"],
                            "median lowest ratio, stuck": t["median_ratio_stuck"].map(_sci)})
        total = {"regime": "**all**", "runs": len(runs), "stuck": int(t["stuck"].sum()),
                 "stuck, vanishing": int(t["stuck_vanishing"].sum()),
                 "stuck, not vanishing": int(t["stuck_not_vanishing"].sum()),
                 "not stuck, vanishing": int(t["other_vanishing"].sum()), "median lowest ratio, stuck": ""}
        return markdown(pd.concat([out, pd.DataFrame([total])], ignore_index=True))

    def table_triage() -> str:
        result = triaged()
        s = result.scores
        body = markdown(_scores(s, ["split"]))
        th = result.thresholds
        return (body + f"\n\nThresholds fitted on {', '.join(result.train)}: vanishing ratio {th.vanish_ratio:g} at "
                f"{th.vanish_steps} step(s), at the prior = loss ≥ {th.prior_fraction:g} × label entropy, plateau from "
                f"{th.plateau_after:g} of training, collapse steps {th.collapse_steps}.")

    def table_by_study() -> str:
        s = triaged().by_study
        s = s[(s["split"] == "held-out") & s["fraction"].isin([0.25, 1.0])]
        return markdown(_scores(s, ["study", "task"]))

    def table_online() -> str:
        found = [results / f"{name}.db" for name in ONLINE if (results / f"{name}.db").exists()]
        if not found:
            return f"Not run yet. The commands (CPU; `bash bench/gpu.sh guard` on a GPU):\n\n```bash\n{COMMANDS}\n```"
        tables = [_online(p) for p in found]
        if not any((t["recipe"] == "mosbach2021").any() for t in tables):
            # The studies' own mosbach2021 reference runs are not done: the 10 seeds of the same
            # 1,000-example slices in table1-{task}1k-cpu stand in (other seeds, this CPU, fp32).
            refs = [results / f"table1-{task}1k-cpu.db" for task in ("cola", "rte")]
            refs = [_online(p, recipes=("mosbach2021",)) for p in refs if p.exists()]
            ref = pd.concat(refs, ignore_index=True).assign(guard="none (reference)") if refs else pd.DataFrame()
            steps = ref.set_index("task")["steps / seed"].astype(float) if len(ref) else None
            tables = [_online(p, ref_steps=steps) for p in found] + ([ref] if len(ref) else [])
        return markdown(pd.concat(tables, ignore_index=True))

    return {"vanishing-by-regime": table_vanishing, "triage": table_triage, "triage-by-study": table_by_study,
            "guard-online": table_online}


def _sci(x: float) -> str:
    return "–" if x != x else f"{x:.0e}".replace("e-0", "e-")


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}%"


def _scores(s: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = s[keys].copy()
    out["by"] = s["fraction"].map(lambda f: "the end" if f == 1.0 else f"{100 * f:.0f}%")
    out["runs"] = s["n"]
    out["failed / stuck"] = s["failed"].astype(str) + " / " + s["stuck"].astype(str)
    out["flagged"] = s["flagged"]
    for col, label in (("precision_failed", "precision (failed)"), ("recall_failed", "recall (failed)"),
                       ("precision_stuck", "precision (stuck)"), ("recall_stuck", "recall (stuck)")):
        out[label] = s[col].map(_pct)
    out["successes flagged"] = s["successes_flagged"]
    out["steps a stop policy saves"] = s["steps_saved"].map(_pct)
    return out


def _online(path: Path, recipes: tuple[str, ...] | None = None, ref_steps: pd.Series | None = None) -> pd.DataFrame:
    """One row per (task, lr, recipe, guard) of an online validation study.

    Args:
        recipes: only these recipes' rows (all when None).
        ref_steps: per task, the reference ``mosbach2021`` steps per seed, when the study has none.
    """
    from steadytune.analyses.attempts import compare_guards
    from steadytune.analyses.stats import summarize
    from steadytune.config.run import format_value
    from steadytune.store.records import read_configs
    from steadytune.store.study import Study

    with Study.open(path, readonly=True) as study:
        runs = study.runs_table()
        configs = read_configs(study)
    keys = ["task", "model", "recipe", "grid"]
    lrs = runs.assign(lr=runs["run_id"].map(lambda r: format_value(configs[r]["lr"]))).groupby(keys)["lr"].first()
    table = compare_guards(summarize(runs), runs).join(lrs, on=keys)
    order = {"flag": 0, "restart": 1, "switch": 2}
    table = table.assign(lr_num=table["lr"].astype(float), policy=table["guard"].map(order).fillna(3),
                         mosbach=table["recipe"] == "mosbach2021")
    table = table.sort_values(["task", "mosbach", "lr_num", "policy"], kind="stable")
    if recipes is not None:
        table = table[table["recipe"].isin(recipes)]
    ref = table[table["mosbach"]].set_index("task")["steps_per_seed"] if ref_steps is None else ref_steps
    rows = []
    for r in table.itertuples():
        rows.append({"study": path.stem, "task": r.task, "lr": r.lr, "recipe": r.recipe, "guard": r.guard,
                     "seeds": r.n, "failed": r.n_failed, "stuck": "–" if r.n_stuck != r.n_stuck else int(r.n_stuck),
                     "stopped": r.n_stopped, "attempts / seed": _num(r.attempts_per_seed),
                     "mean ok": _num(r.mean_ok), "std ok": _num(r.std_ok), "steps / seed": _num(r.steps_per_seed, 0),
                     "vs mosbach2021": _pct(r.steps_per_seed / ref.get(r.task, float("nan"))),
                     "steps / successful seed": _num(r.steps_per_success, 0)})
    return pd.DataFrame(rows)


def _num(x: float, digits: int = 1) -> str:
    return "–" if x != x else f"{x:.{digits}f}"
