"""The report's HTML tables: Table 1 per task, the recipe comparison, and every run.

Each function takes a runs table (:mod:`steadytune.analyses.stats` format) and returns
HTML in which every value from the data is escaped.
"""

from __future__ import annotations

import pandas as pd

from steadytune.analyses.attempts import compare_guards
from steadytune.analyses.stats import compare_recipes, failed_mask, summarize
from steadytune.report.markup import esc, frame_html, num, pval
from steadytune.report.plots import SCORED, group_labels

_TABLE1_NOTE = (
    "<p class=note>Standard deviation (ddof=1), mean, median and maximum over seeds, ×100; "
    "diverged runs and runs the guard stopped count as failed and are left out of the statistics "
    "(a restarted seed counts once, by its last attempt). failed = runs at or "
    "below the majority classifier, k/n with the 95% Wilson interval of the rate; stuck = runs whose "
    "last training loss is still ≥ 80% of the entropy of the training label prior (they never left "
    "the majority solution: an optimisation failure, not a generalisation one).</p>")
_COMPARISON_NOTE = (
    "<p class=note>Tests of equal variance (Levene: center=mean; "
    "Brown–Forsythe: center=median) over non-diverged runs; the paper compares its recipe "
    "with the one of second-smallest variance (p &lt; 0.001 on RTE, MRPC, CoLA).</p>")


def table1_html(scored: pd.DataFrame) -> str:
    """Table 1 per task: std/mean/median/max/failed (+ without failed) at final and best.

    Args:
        scored: the finished/diverged runs (``steadytune.report.plots.scored_runs``).

    Returns:
        One ``<h3>`` and table per task, then a note on the columns.

    Raises:
        ValueError: as :func:`steadytune.analyses.stats.summarize` for a malformed table.
    """
    final, best = summarize(scored, "final"), summarize(scored, "best")
    order = scored.drop_duplicates(["task", "model", "recipe", "grid"]).reset_index(drop=True)
    final = order[["task", "model", "recipe", "grid"]].merge(final, how="left")
    best = order[["task", "model", "recipe", "grid"]].merge(best, how="left")
    final["label"] = best["label"] = group_labels(final).to_numpy()
    cols = ["std", "mean", "median", "max", "failed", "mean<br>w/o failed", "std<br>w/o failed"]
    head = ("<thead><tr><th rowspan=2>recipe</th><th colspan=7>final checkpoint</th>"
            "<th colspan=7>best dev checkpoint</th></tr><tr>"
            + "".join(f"<th>{c}</th>" for c in cols * 2) + "</tr></thead>")
    parts = []
    for i, task in enumerate(dict.fromkeys(order["task"])):
        sel = (final["task"] == task).to_numpy()
        body = [_table1_row(f, b) for (_, f), (_, b) in zip(final[sel].iterrows(), best[sel].iterrows())]
        first = final[sel].iloc[0]
        parts.append(f"<h3>{esc(task)} — {esc(first['metric'])} ×100 (majority classifier "
                     f"{num(first['baseline'])})</h3><div class=scroll><table id=\"table1-{i}\">"
                     f"{head}<tbody>{''.join(body)}</tbody></table></div>")
    return "".join(parts) + _TABLE1_NOTE


def _table1_row(final: pd.Series, best: pd.Series) -> str:
    """One group's row of Table 1: its label, then the final and the best-checkpoint cells."""
    cells = []
    for s in (final, best):
        failed = _failed_cell(s)
        if s is final and s["n_stuck"] == s["n_stuck"]:  # known (not NaN): training, not the checkpoint
            failed += f"<br><small>{int(s['n_stuck'])} stuck</small>"
        cells += [num(s["std"]), num(s["mean"]), num(s["median"]), num(s["max"]),
                  failed, num(s["mean_ok"]), num(s["std_ok"])]
    return f'<tr><th scope="row">{esc(final["label"])}</th>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _failed_cell(row: pd.Series) -> str:
    """``k/n (lo–hi%)``: failed runs with the 95% Wilson interval of the rate."""
    lo, hi = row["failed_ci_low"], row["failed_ci_high"]
    return f"{int(row['n_failed'])}/{int(row['n'])} ({num(100 * lo, 0)}–{num(100 * hi, 0)}%)"


def _several(df: pd.DataFrame, col: str) -> bool:
    """Whether ``col`` has more than one distinct non-empty value (else it is not shown)."""
    return col in df.columns and df[col].where(df[col].notna(), "").astype(str).nunique() > 1


def comparison_html(scored: pd.DataFrame) -> str:
    """Levene / Brown–Forsythe tests across recipes and between the two lowest-std recipes.

    Args:
        scored: the finished/diverged runs.

    Returns:
        One table (a row per task × model/grid where these vary × checkpoint) and a note.
    """
    rank = {t: i for i, t in enumerate(dict.fromkeys(scored["task"]))}
    tests = pd.concat([compare_recipes(scored, w).assign(checkpoint=w) for w in ("final", "best")])
    tests = tests.sort_values("task", key=lambda t: t.map(rank), kind="stable")
    keys = ["task", *[c for c in ("model", "grid") if _several(scored, c)], "checkpoint"]
    rows = []
    for _, c in tests.iterrows():
        low = c["lowest_std_recipe"]
        pair = f"{esc(low)} vs {esc(c['runner_up_recipe'])}" if isinstance(low, str) else "—"
        cells = [f"<td class=text>{esc(c[k])}</td>" for k in keys]
        cells.append(f"<td class='text wrap'>{esc(c['recipes'].replace(',', ', '))}</td>")
        cells += [f"<td>{pval(c['levene_p'])}</td>", f"<td>{pval(c['bf_p'])}</td>",
                  f"<td class='text wrap'>{pair}</td>", f"<td>{pval(c['pair_levene_p'])}</td>",
                  f"<td>{pval(c['pair_bf_p'])}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ("<tr>" + "".join(f"<th rowspan=2>{k}</th>" for k in keys)
            + "<th colspan=3>all recipes</th><th colspan=3>lowest std vs runner-up</th></tr>"
            "<tr><th>recipes</th><th>Levene p</th><th>Brown–Forsythe p</th><th>pair</th>"
            "<th>Levene p</th><th>Brown–Forsythe p</th></tr>")
    return (f"<div class=scroll><table id='comparison'><thead>{head}</thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>{_COMPARISON_NOTE}")


def runs_html(runs: pd.DataFrame) -> str:
    """One row per run (all statuses), in report order, failed rows tinted; values ×100.

    Args:
        runs: the runs table (any statuses; ``wall_seconds`` and ``error`` shown if present).

    Returns:
        The table, sorted by task and recipe (first appearance), then seed.
    """
    df = runs.copy()
    finished = (df["status"] == "finished").to_numpy()
    final = pd.to_numeric(df["final"], errors="coerce").to_numpy(float)
    base = pd.to_numeric(df["baseline"], errors="coerce").to_numpy(float)
    df["is_failed"] = failed_mask(final, base) | ~finished
    for col in ("task", "recipe"):
        rank = {v: i for i, v in enumerate(dict.fromkeys(df[col]))}
        df[f"_{col}"] = df[col].map(rank)
    df = df.sort_values(["_task", "_recipe", "seed", *(["attempt"] if "attempt" in df else [])], kind="stable")
    text = ["task", *[c for c in ("model", "grid") if _several(df, c)], "recipe"]
    extra = [c for c in ("attempt", "wall_seconds", "error") if c in df.columns]
    if "attempt" in extra and not (df["attempt"] > 1).any():
        extra.remove("attempt")
    rows = [_run_row(r, text, extra) for _, r in df.iterrows()]
    names = [*text, "seed", "status", "final", "best", "baseline", "failed", *extra]
    head = "".join(f"<th>{c}</th>" for c in names)
    return (f"<div class=scroll><table id='runs'><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table></div>")


def _run_row(r: pd.Series, text: list[str], extra: list[str]) -> str:
    """One run's ``<tr>``: the ``text`` columns, seed, status, values, verdict, ``extra``."""
    scored = r["status"] in SCORED
    cells = [f"<td class=text>{esc(r[c]) if pd.notna(r[c]) else ''}</td>" for c in text]
    cells += [f"<td>{esc(r['seed'])}</td>", f"<td class=text>{esc(r['status'])}</td>"]
    cells += [f"<td>{num(100 * pd.to_numeric(r[c], errors='coerce'), 2)}</td>"
              for c in ("final", "best", "baseline")]
    cells.append(f"<td class=text>{('yes' if r['is_failed'] else 'no') if scored else '—'}</td>")
    if "attempt" in extra:
        cells.append(f"<td>{esc(r['attempt'])}</td>")
    if "wall_seconds" in extra:
        cells.append(f"<td>{num(r['wall_seconds'], 0)}</td>")
    if "error" in extra:
        msg = "" if pd.isna(r["error"]) else str(r["error"])
        cells.append(f"<td class='text wrap'>{esc(msg[:300])}</td>")
    tint = ' class="failed"' if scored and r["is_failed"] else ""
    return f"<tr{tint}>{''.join(cells)}</tr>"


def guards_html(scored: pd.DataFrame) -> str | None:
    """Guarded vs unguarded groups: failures, kept runs and compute per successful seed.

    Args:
        scored: the finished/diverged/stopped runs, one per seed (``scored_runs``).

    Returns:
        The table and a note, or None when no run was guarded (no stop, no restart).
    """
    table = compare_guards(summarize(scored), scored)
    if not ((table["guard"] != "flag").any() or (table["n_stopped"] > 0).any()):
        return None
    shown = table.assign(model=table["model"].map(lambda m: str(m).rsplit("/", 1)[-1]))
    for col in ("mean_ok", "std_ok", "mean", "std", "attempts_per_seed"):
        shown[col] = shown[col].map(lambda v: num(v))
    for col in ("steps_per_seed", "steps_per_success", "wall_per_success"):
        shown[col] = shown[col].map(lambda v: num(v, 0))
    return frame_html(shown) + _GUARDS_NOTE


_GUARDS_NOTE = (
    "<p class=note>n counts seeds, each by its last attempt (a seed the guard restarted has several "
    "runs, all listed below). failed and stuck include the seeds whose last attempt the guard stopped "
    "(stopped); mean/std ×100 over the kept runs (ok: those that did not fail); steps and seconds per "
    "successful seed charge every attempt of every seed of the group to the seeds that did not fail "
    "(inf: none did).</p>")

__all__ = ["comparison_html", "guards_html", "runs_html", "table1_html"]
