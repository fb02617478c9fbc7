"""A self-contained HTML stability report of a seed sweep (the paper's Figure 1 and Table 1).

:func:`build_report` reads the tidy runs and curves tables (:mod:`steadytune.stats`,
:mod:`steadytune.results`) and writes ``index.html`` plus every figure as PNG and SVG in
``figures/``. The page needs nothing else: PNGs are embedded as base64 data URIs, CSS is
inline, there is no JavaScript and no external resource. Every string that comes from
the data (task, model, recipe, grid, status, error text) is HTML-escaped.

:func:`write_report` is the same for a stored study (``steadytune report STUDY.db``).
Later analyses add their own sections through ``extra_sections``: a list of
``(title, content)`` where content is a Figure (embedded), a DataFrame (escaped table)
or a string of HTML the caller has already made safe.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from importlib import metadata
from pathlib import Path
from typing import Sequence, Union

import pandas as pd
from matplotlib.figure import Figure

from steadytune.analyses.stats import compare_recipes, failed_mask, summarize
from steadytune.report.plots import (
    SCORED,
    group_labels,
    plot_boxplots,
    plot_expected_max,
    plot_learning_curves,
    scored_runs,
)

__all__ = ["Section", "build_report", "write_report", "generalisation_sections"]

Section = tuple[str, Union[str, Figure, pd.DataFrame]]
STATUSES = ("finished", "diverged", "error", "pending", "running")
_VERSIONED = ("steadytune", "torch", "transformers", "numpy", "pandas", "scipy", "matplotlib")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
 max-width:1240px;margin:0 auto;padding:16px 20px 40px;background:#fff}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;
 padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.meta{color:#555;font-size:13px}.counts span{display:inline-block;margin:4px 8px 4px 0;padding:2px 8px;
 border-radius:10px;background:#eef2f7;font-size:13px}.counts .alert{background:#fde8e8}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d6d6d6;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f5f7;font-weight:600;white-space:normal}td.wrap{white-space:normal}th[scope=row],td.text{text-align:left}
thead th{text-align:center}tr.failed td{background:#fff1f1}
figure{margin:8px 0 16px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:12.5px}.scroll{overflow-x:auto}code{font-size:12.5px}
"""


def _e(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _num(x: object, digits: int = 1) -> str:
    """A number with ``digits`` decimals; an em dash for NaN/None."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


def _pval(p: object) -> str:
    """A p-value to 2 significant digits ("<0.001" below that)."""
    v = float(p) if p is not None else math.nan
    return "—" if math.isnan(v) else ("&lt;0.001" if v < 1e-3 else f"{v:.2g}")


def _failed_cell(row: pd.Series) -> str:
    """``k/n (lo–hi%)``: failed runs with the 95% Wilson interval of the rate."""
    lo, hi = row["failed_ci_low"], row["failed_ci_high"]
    return f"{int(row['n_failed'])}/{int(row['n'])} ({_num(100 * lo, 0)}–{_num(100 * hi, 0)}%)"


def _versions() -> str:
    """Installed versions of the libraries the report depends on (no imports)."""
    found = []
    for name in _VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _save(fig: Figure, figdir: Path, name: str) -> bytes:
    """Write ``name``.png/.svg into ``figdir``; return the PNG bytes; drop the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    png = buf.getvalue()
    (figdir / f"{name}.png").write_bytes(png)
    fig.set_layout_engine("none")  # keep the layout just computed: the SVG pass skips it
    fig.savefig(figdir / f"{name}.svg", format="svg")
    if fig.canvas.manager is not None:  # made by pyplot (an extra section): free it there
        import matplotlib.pyplot as plt

        plt.close(fig)
    return png


def _figure_html(fig: Figure, figdir: Path, name: str, caption: str) -> str:
    """An embedded PNG ``<figure>`` with a caption and a relative link to the SVG."""
    data = base64.b64encode(_save(fig, figdir, name)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
            f'<figcaption>{caption} <a href="figures/{_e(name)}.svg">SVG</a></figcaption></figure>')


def _frame_html(df: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table."""
    return '<div class="scroll">' + df.to_html(index=False, escape=True, na_rep="—", border=0) + "</div>"


def _header(runs: pd.DataFrame, title: str, study_name: str | None) -> str:
    """Title, study, run counts by status, models, generation time, versions."""
    counts = runs["status"].value_counts() if "status" in runs.columns else pd.Series(dtype=int)
    shown = [s for s in STATUSES if s in counts.index or s in STATUSES[:4]]
    shown += sorted(str(s) for s in counts.index if s not in STATUSES)
    alert = {"diverged", "error"}
    badges = "".join(f'<span class="{"alert" if s in alert and counts.get(s, 0) else ""}">'
                     f"{_e(s)}: {int(counts.get(s, 0))}</span>" for s in shown)
    models = ", ".join(f"<code>{_e(m)}</code>" for m in dict.fromkeys(runs.get("model", []))) or "—"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    study = f"<div class=meta>study: <code>{_e(study_name)}</code></div>" if study_name else ""
    return (f"<h1>{_e(title)}</h1>{study}<div class=counts>{len(runs)} runs: {badges}</div>"
            f"<div class=meta>models: {models}</div>"
            f"<div class=meta>generated {when}; {_e(_versions())}</div>")


def _table1(scored: pd.DataFrame) -> str:
    """Table 1 per task: std/mean/median/max/failed (+ without failed) at final and best."""
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
        body = []
        for (_, f), (_, b) in zip(final[sel].iterrows(), best[sel].iterrows()):
            cells = []
            for s in (f, b):
                failed = _failed_cell(s)
                if s is f and s["n_stuck"] == s["n_stuck"]:  # known (not NaN): training, not the checkpoint
                    failed += f"<br><small>{int(s['n_stuck'])} stuck</small>"
                cells += [_num(s["std"]), _num(s["mean"]), _num(s["median"]), _num(s["max"]),
                          failed, _num(s["mean_ok"]), _num(s["std_ok"])]
            body.append(f'<tr><th scope="row">{_e(f["label"])}</th>'
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        first = final[sel].iloc[0]
        parts.append(f"<h3>{_e(task)} — {_e(first['metric'])} ×100 (majority classifier "
                     f"{_num(first['baseline'])})</h3><div class=scroll><table id=\"table1-{i}\">"
                     f"{head}<tbody>{''.join(body)}</tbody></table></div>")
    note = ("<p class=note>Standard deviation (ddof=1), mean, median and maximum over seeds, ×100; "
            "diverged runs count as failed and are left out of the statistics. failed = runs at or "
            "below the majority classifier, k/n with the 95% Wilson interval of the rate; stuck = runs whose "
            "last training loss is still ≥ 80% of the entropy of the training label prior (they never left "
            "the majority solution: an optimisation failure, not a generalisation one).</p>")
    return "".join(parts) + note


def _several(df: pd.DataFrame, col: str) -> bool:
    """Whether ``col`` has more than one distinct non-empty value (else it is not shown)."""
    return col in df.columns and df[col].where(df[col].notna(), "").astype(str).nunique() > 1


def _comparison(scored: pd.DataFrame) -> str:
    """Levene / Brown–Forsythe tests across recipes and between the two lowest-std recipes."""
    rank = {t: i for i, t in enumerate(dict.fromkeys(scored["task"]))}
    tests = pd.concat([compare_recipes(scored, w).assign(checkpoint=w) for w in ("final", "best")])
    tests = tests.sort_values("task", key=lambda t: t.map(rank), kind="stable")
    keys = ["task", *[c for c in ("model", "grid") if _several(scored, c)], "checkpoint"]
    rows = []
    for _, c in tests.iterrows():
        low = c["lowest_std_recipe"]
        pair = f"{_e(low)} vs {_e(c['runner_up_recipe'])}" if isinstance(low, str) else "—"
        cells = [f"<td class=text>{_e(c[k])}</td>" for k in keys]
        cells.append(f"<td class='text wrap'>{_e(c['recipes'].replace(',', ', '))}</td>")
        cells += [f"<td>{_pval(c['levene_p'])}</td>", f"<td>{_pval(c['bf_p'])}</td>",
                  f"<td class='text wrap'>{pair}</td>", f"<td>{_pval(c['pair_levene_p'])}</td>",
                  f"<td>{_pval(c['pair_bf_p'])}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ("<tr>" + "".join(f"<th rowspan=2>{k}</th>" for k in keys)
            + "<th colspan=3>all recipes</th><th colspan=3>lowest std vs runner-up</th></tr>"
            "<tr><th>recipes</th><th>Levene p</th><th>Brown–Forsythe p</th><th>pair</th>"
            "<th>Levene p</th><th>Brown–Forsythe p</th></tr>")
    return (f"<div class=scroll><table id='comparison'><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table></div><p class=note>Tests of equal variance (Levene: center=mean; "
            "Brown–Forsythe: center=median) over non-diverged runs; the paper compares its recipe "
            "with the one of second-smallest variance (p &lt; 0.001 on RTE, MRPC, CoLA).</p>")


def _runs_table(runs: pd.DataFrame) -> str:
    """One row per run (all statuses), in report order, failed rows tinted; values ×100."""
    df = runs.copy()
    finished = (df["status"] == "finished").to_numpy()
    final = pd.to_numeric(df["final"], errors="coerce").to_numpy(float)
    base = pd.to_numeric(df["baseline"], errors="coerce").to_numpy(float)
    df["is_failed"] = failed_mask(final, base) | ~finished
    for col in ("task", "recipe"):
        rank = {v: i for i, v in enumerate(dict.fromkeys(df[col]))}
        df[f"_{col}"] = df[col].map(rank)
    df = df.sort_values(["_task", "_recipe", "seed"], kind="stable")
    text = ["task", *[c for c in ("model", "grid") if _several(df, c)], "recipe"]
    extra = [c for c in ("wall_seconds", "error") if c in df.columns]
    rows = []
    for _, r in df.iterrows():
        scored = r["status"] in SCORED
        cells = [f"<td class=text>{_e(r[c]) if pd.notna(r[c]) else ''}</td>" for c in text]
        cells += [f"<td>{_e(r['seed'])}</td>", f"<td class=text>{_e(r['status'])}</td>"]
        cells += [f"<td>{_num(100 * pd.to_numeric(r[c], errors='coerce'), 2)}</td>"
                  for c in ("final", "best", "baseline")]
        cells.append(f"<td class=text>{('yes' if r['is_failed'] else 'no') if scored else '—'}</td>")
        if "wall_seconds" in extra:
            cells.append(f"<td>{_num(r['wall_seconds'], 0)}</td>")
        if "error" in extra:
            msg = "" if pd.isna(r["error"]) else str(r["error"])
            cells.append(f"<td class='text wrap'>{_e(msg[:300])}</td>")
        tint = ' class="failed"' if scored and r["is_failed"] else ""
        rows.append(f"<tr{tint}>{''.join(cells)}</tr>")
    names = [*text, "seed", "status", "final", "best", "baseline", "failed", *extra]
    head = "".join(f"<th>{c}</th>" for c in names)
    return (f"<div class=scroll><table id='runs'><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table></div>")


def _extra(sections: Sequence[Section], figdir: Path) -> list[tuple[str, str]]:
    """Render caller sections: Figure -> embedded PNG, DataFrame -> table, str -> as given."""
    out = []
    for i, (title, content) in enumerate(sections):
        if isinstance(content, Figure):
            body = _figure_html(content, figdir, f"extra-{i + 1}", _e(title))
        elif isinstance(content, pd.DataFrame):
            body = _frame_html(content)
        elif isinstance(content, str):
            body = content
        else:
            raise TypeError(f"extra section {title!r}: content must be str, Figure or DataFrame, "
                            f"got {type(content).__name__}")
        out.append((str(title), body))
    return out


def build_report(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path,
                 title: str = "steadytune stability report",
                 extra_sections: Sequence[Section] | None = None, *,
                 study_name: str | None = None) -> Path:
    """Write a self-contained HTML stability report and its figures.

    Sections: header (run counts by status, models, time, versions); Table 1 per task
    (final and best-dev checkpoint); recipe comparison (Levene, Brown–Forsythe); box
    plots (final, best); learning curves; expected max vs seeds; the caller's extra
    sections; every run. With no finished run, the page says so and lists the runs.

    Args:
        runs: the runs table (:mod:`steadytune.stats`; statuses other than
            finished/diverged are counted and listed but not in the statistics).
        curves: ``run_id, step, epoch, split, name, value``; may be empty.
        out_dir: created if needed; gets ``index.html`` and ``figures/*.png|svg``.
        title: page title (escaped).
        extra_sections: ``(title, content)`` pairs appended before the run list.
            Content is a Figure (saved and embedded), a DataFrame (escaped table) or a
            string of HTML **inserted as is**: escape data in it with ``html.escape``.
        study_name: shown in the header (escaped).

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: as :func:`steadytune.stats.summarize` for a malformed runs table.
        TypeError: for extra-section content of another type.
    """
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    scored = scored_runs(runs).drop(columns="order") if len(runs) else runs
    sections: list[tuple[str, str]] = []
    if len(runs) == 0 or not (runs["status"] == "finished").any():
        sections.append(("No results yet", "<p>This study has no finished runs yet: nothing to "
                                           "summarise. The runs so far are listed below.</p>"))
    else:
        sections.append(("Table 1: spread over seeds", _table1(scored)))
        sections.append(("Recipe comparison: equality of variances", _comparison(scored)))
        box = "".join(_figure_html(plot_boxplots(scored, w), figdir, f"boxplots_{w}",
                                   f"Figure 1 style, {w} checkpoint.") for w in ("final", "best"))
        sections.append(("Box plots", box))
        lc = plot_learning_curves(scored, curves) if "run_id" in scored.columns else None
        sections.append(("Learning curves", _figure_html(lc, figdir, "learning_curves",
                         "Dev metric and train loss over steps; failed (final) vs successful runs.")
                         if lc is not None else "<p>No run_id column: curves cannot be matched.</p>"))
        sections.append(("Expected maximum vs number of seeds", _figure_html(
            plot_expected_max(scored), figdir, "expected_max",
            "Expected best dev value of n seeds drawn from these runs (Dodge et al., 2019).")))
    sections += _extra(extra_sections or [], figdir)
    if len(runs):
        sections.append((f"All runs ({len(runs)})", _runs_table(runs)))
    body = "".join(f"<section><h2>{_e(t)}</h2>{b}</section>" for t, b in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{_header(runs, title, study_name)}{body}</body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def analysis_sections(folders: Sequence[str | Path]) -> list[Section]:
    """Sections for stored forgetting-probe and loss-surface tables (Fig. 2 and Fig. 7).

    Raises:
        FileNotFoundError: a folder holds neither ``forgetting.csv`` nor ``surface.csv``.
    """
    sections: list[Section] = []
    for folder in map(Path, folders):
        found = False
        if (folder / "forgetting.csv").exists():
            from steadytune.analyses.forgetting import plot_forgetting

            table = pd.read_csv(folder / "forgetting.csv")
            full = table.loc[table["embeddings"] == "pretrained", "perplexity"]
            fig = plot_forgetting(table, label="model" if "model" in table.columns else "checkpoint",
                                  reference=float(full.iloc[0]) if len(full) else None)
            sections.append((f"Forgetting probe: MLM perplexity vs layers reset ({folder.name})", fig))
            found = True
        if (folder / "surface.csv").exists():
            from steadytune.analyses.surface import plot_surface

            sections.append((f"Loss surface through pre-trained, failed and successful ({folder.name})",
                             plot_surface(pd.read_csv(folder / "surface.csv"))))
            found = True
        if not found:
            raise FileNotFoundError(f"{folder} holds neither forgetting.csv nor surface.csv")
    return sections


def write_report(study_path: str | Path, out_dir: str | Path, title: str | None = None,
                 analyses: Sequence[str | Path] = ()) -> Path:
    """Write the stability report of a stored study (``steadytune report STUDY.db --out DIR``).

    Args:
        study_path: the SQLite study file (:class:`steadytune.store.Study`).
        out_dir: where ``index.html`` and ``figures/`` go.
        title: page title; default "steadytune stability report".
        analyses: output folders of ``steadytune forgetting`` / ``steadytune surface``
            whose tables (``forgetting.csv``, ``surface.csv``) get a section each.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: if ``study_path`` does not exist.
        ValueError: as :func:`build_report`.
    """
    from steadytune.store.study import Study

    path = Path(study_path)
    if not path.exists():
        raise FileNotFoundError(f"no study at {path}")
    study = Study.open(path, create=False, readonly=True)
    try:
        runs = study.runs_table(all_statuses=True)
        ids = runs.loc[runs["status"].isin(SCORED), "run_id"].tolist() if len(runs) else []
        curves = study.curves_table(run_ids=ids) if ids else pd.DataFrame(
            columns=["run_id", "step", "epoch", "split", "name", "value"])
        diagnostics = study.diagnostics_table(run_ids=ids) if ids else pd.DataFrame()
    finally:
        close = getattr(study, "close", None)  # the store may or may not hold a connection
        if callable(close):
            close()
    from steadytune.report.diagplots import diagnostic_sections

    extra = [*diagnostic_sections(runs, diagnostics), *generalisation_sections(runs, curves),
             *analysis_sections(analyses)]
    return build_report(runs, curves, out_dir, title=title or "steadytune stability report",
                        extra_sections=extra, study_name=path.name)


def generalisation_sections(runs: pd.DataFrame, curves: pd.DataFrame, max_runs: int = 10) -> list[Section]:
    """Report sections for the paper's Fig. 8, per task, from stored runs and curves.

    * Fig. 8a: the dev metric over training of up to ``max_runs`` successful runs (lowest
      seeds) of the task's longest-trained setting (model, recipe, grid point), as the
      paper shows 10 successful runs of its 20-epoch recipe.
    * Fig. 8b: final dev metric against final training loss of every finished or
      diverged run of the task (diverged runs have no dev value and are not drawn).

    Args:
        runs: the runs table (any statuses; only finished/diverged runs are used). A
            missing ``failed`` column is derived (final <= majority baseline, or not finished).
        curves: ``run_id, step, epoch, split, name, value``.
        max_runs: the most runs drawn in Fig. 8a.

    Returns:
        ``(title, Figure)`` pairs; empty without finished runs that have curves.
    """
    from steadytune.analyses.generalisation import (
        dev_over_training,
        dev_vs_train_loss,
        plot_dev_over_training,
        plot_dev_vs_train_loss,
    )

    if runs.empty or curves.empty or not (runs["status"] == "finished").any():
        return []
    done = runs[runs["status"].isin(SCORED)].copy()
    if "failed" not in done.columns:
        done["failed"] = failed_mask(pd.to_numeric(done["final"], errors="coerce").to_numpy(float),
                                     pd.to_numeric(done["baseline"], errors="coerce").to_numpy(float))
    done["failed"] = done["failed"].fillna(True).astype(bool) | (done["status"] != "finished")
    for col in ("model", "grid"):
        done[col] = done[col].fillna("") if col in done.columns else ""
    sections: list[Section] = []
    for task in dict.fromkeys(done["task"]):
        mine = done[done["task"] == task]
        over = dev_over_training(mine, curves).merge(mine[["run_id", "model", "grid"]], on="run_id")
        if len(over):
            longest = over.groupby(["model", "recipe", "grid"], sort=False)["step"].max().idxmax()
            model, recipe, grid = longest
            pick = over[(over["model"] == model) & (over["recipe"] == recipe) & (over["grid"] == grid)]
            seeds = sorted(pick["seed"].unique())[:max_runs]
            pick = pick[pick["seed"].isin(seeds)].assign(run_id=lambda d: "seed " + d["seed"].astype(str))
            setting = " ".join(str(x) for x in (Path(model).name, recipe, grid) if x)
            sections.append((f"Generalisation (Fig. 8a): {task}, dev {pick['metric'].iloc[0]} over training of "
                             f"{len(seeds)} successful runs ({setting})", plot_dev_over_training(pick)))
        versus = dev_vs_train_loss(mine, curves)
        if versus["train_loss"].notna().any():
            sections.append((f"Generalisation (Fig. 8b): {task}, final dev metric vs final training loss "
                             f"({len(versus)} runs)", plot_dev_vs_train_loss(versus)))
    return sections
