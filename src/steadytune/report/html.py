"""A self-contained HTML stability report of a seed sweep (the paper's Figure 1 and Table 1).

:func:`build_report` reads the tidy runs and curves tables (:mod:`steadytune.analyses.stats`,
:mod:`steadytune.training.results`) and writes ``index.html`` plus every figure as PNG
and SVG in ``figures/``. The page needs nothing else: PNGs are embedded as base64 data
URIs, CSS is inline, there is no JavaScript and no external resource. Every string that
comes from the data (task, model, recipe, grid, status, error text) is HTML-escaped.

:func:`write_report` is the same for a stored study (``steadytune report STUDY.db``).
Later analyses add their own sections through ``extra_sections``: a list of
``(title, content)`` where content is a Figure (embedded), a DataFrame (escaped table)
or a string of HTML the caller has already made safe. The building blocks live beside
this module: :mod:`~steadytune.report.markup` (escaping, figures), :mod:`~steadytune.report.tables`
(Table 1, comparison, runs), :mod:`~steadytune.report.sections` (Fig. 2, 7, 8 sections)
and :mod:`~steadytune.report.diagplots` (Fig. 4, 6).
"""

from __future__ import annotations

import datetime as _dt
from importlib import metadata
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from steadytune.report.diagplots import diagnostic_sections
from steadytune.report.markup import Section, esc, figure_html, frame_html
from steadytune.report.plots import (
    SCORED,
    plot_boxplots,
    plot_expected_max,
    plot_learning_curves,
    scored_runs,
)
from steadytune.report.sections import analysis_sections, generalisation_sections
from steadytune.report.seeds import seed_sections
from steadytune.report.tables import (
    comparison_html,
    guards_html,
    runs_html,
    table1_html,
)
from steadytune.store.study import Study
from steadytune.store.tables import CURVE_COLUMNS

__all__ = ["build_report", "write_report"]

STATUSES = ("finished", "diverged", "stopped", "error", "pending", "running")
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


def build_report(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path,
                 title: str = "steadytune stability report",
                 extra_sections: Sequence[Section] | None = None, *,
                 study_name: str | None = None) -> Path:
    """Write a self-contained HTML stability report and its figures.

    Sections: header (run counts by status, models, time, versions); Table 1 per task
    (final and best-dev checkpoint); recipe comparison (Levene, Brown–Forsythe); guarded
    vs unguarded groups (when the doomed-run guard stopped or restarted runs); box
    plots (final, best); learning curves; expected max vs seeds; what more seeds would
    buy and how many to run; robust aggregates; the variance components of a factorial
    study (:mod:`steadytune.report.seeds`); the caller's extra sections; every run. With
    no finished run, the page says so and lists the runs.

    Args:
        runs: the runs table (:mod:`steadytune.analyses.stats`; statuses other than
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
        ValueError: as :func:`steadytune.analyses.stats.summarize` for a malformed runs table.
        TypeError: for extra-section content of another type.
    """
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    if len(runs) == 0 or not (runs["status"] == "finished").any():
        sections = [("No results yet", "<p>This study has no finished runs yet: nothing to "
                                       "summarise. The runs so far are listed below.</p>")]
    else:
        sections = _stability_sections(scored_runs(runs).drop(columns="order"), curves, figdir)
    sections += _extra(extra_sections or [], figdir)
    if len(runs):
        sections.append((f"All runs ({len(runs)})", runs_html(runs)))
    body = "".join(f"<section><h2>{esc(t)}</h2>{b}</section>" for t, b in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>{_header(runs, title, study_name)}{body}</body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_report(study_path: str | Path, out_dir: str | Path, title: str | None = None,
                 analyses: Sequence[str | Path] = ()) -> Path:
    """Write the stability report of a stored study (``steadytune report STUDY.db --out DIR``).

    Besides :func:`build_report`'s sections: the diagnostics figures (Fig. 4, 6), the
    generalisation figures (Fig. 8) and one section per analysis table.

    Args:
        study_path: the SQLite study file (:class:`steadytune.store.study.Study`), opened read-only.
        out_dir: where ``index.html`` and ``figures/`` go.
        title: page title; default "steadytune stability report".
        analyses: output folders of ``steadytune forgetting`` / ``steadytune surface``
            whose tables (``forgetting.csv``, ``surface.csv``) get a section each.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: if ``study_path`` does not exist, or an analysis folder holds
            neither table.
        StoreError: the file is not a steadytune study.
        ValueError: as :func:`build_report`.
    """
    path = Path(study_path)
    if not path.exists():
        raise FileNotFoundError(f"no study at {path}")
    study = Study.open(path, create=False, readonly=True)
    try:
        runs = study.runs_table(all_statuses=True)
        ids = runs.loc[runs["status"].isin(SCORED), "run_id"].tolist() if len(runs) else []
        curves = study.curves_table(run_ids=ids) if ids else pd.DataFrame(columns=CURVE_COLUMNS)
        diagnostics = study.diagnostics_table(run_ids=ids) if ids else pd.DataFrame()
    finally:
        study.close()
    extra = [*diagnostic_sections(runs, diagnostics), *generalisation_sections(runs, curves),
             *analysis_sections(analyses)]
    return build_report(runs, curves, out_dir, title=title or "steadytune stability report",
                        extra_sections=extra, study_name=path.name)


def _stability_sections(scored: pd.DataFrame, curves: pd.DataFrame, figdir: Path) -> list[tuple[str, str]]:
    """Table 1, the recipe comparison, box plots, learning curves and expected max, as HTML."""
    table1, comparison, guards = table1_html(scored), comparison_html(scored), guards_html(scored)
    box = "".join(figure_html(plot_boxplots(scored, w), figdir, f"boxplots_{w}",
                              f"Figure 1 style, {w} checkpoint.") for w in ("final", "best"))
    if "run_id" in scored.columns:
        curves_body = figure_html(plot_learning_curves(scored, curves), figdir, "learning_curves",
                                  "Dev metric and train loss over steps; failed (final) vs successful runs.")
    else:
        curves_body = "<p>No run_id column: curves cannot be matched.</p>"
    expected = figure_html(plot_expected_max(scored), figdir, "expected_max",
                           "Expected best dev value of n seeds drawn from these runs (Dodge et al., 2019).")
    sections = [("Table 1: spread over seeds", table1), ("Recipe comparison: equality of variances", comparison)]
    if guards is not None:
        sections.append(("Guarded vs unguarded: attempts and compute per successful seed", guards))
    return sections + [("Box plots", box), ("Learning curves", curves_body),
                       ("Expected maximum vs number of seeds", expected), *seed_sections(scored, figdir)]


def _header(runs: pd.DataFrame, title: str, study_name: str | None) -> str:
    """Title, study, run counts by status, models, generation time, versions."""
    counts = runs["status"].value_counts() if "status" in runs.columns else pd.Series(dtype=int)
    shown = [s for s in STATUSES if s in counts.index or s in ("finished", "diverged", "error", "pending")]
    shown += sorted(str(s) for s in counts.index if s not in STATUSES)
    alert = {"diverged", "stopped", "error"}
    badges = "".join(f'<span class="{"alert" if s in alert and counts.get(s, 0) else ""}">'
                     f"{esc(s)}: {int(counts.get(s, 0))}</span>" for s in shown)
    models = ", ".join(f"<code>{esc(m)}</code>" for m in dict.fromkeys(runs.get("model", []))) or "—"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    study = f"<div class=meta>study: <code>{esc(study_name)}</code></div>" if study_name else ""
    return (f"<h1>{esc(title)}</h1>{study}<div class=counts>{len(runs)} runs: {badges}</div>"
            f"<div class=meta>models: {models}</div>"
            f"<div class=meta>generated {when}; {esc(_versions())}</div>")


def _versions() -> str:
    """Installed versions of the libraries the report depends on (no imports)."""
    found = []
    for name in _VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _extra(sections: Sequence[Section], figdir: Path) -> list[tuple[str, str]]:
    """Render caller sections: Figure -> embedded PNG, DataFrame -> table, str -> as given."""
    out = []
    for i, (title, content) in enumerate(sections):
        if isinstance(content, Figure):
            body = figure_html(content, figdir, f"extra-{i + 1}", esc(title))
        elif isinstance(content, pd.DataFrame):
            body = frame_html(content)
        elif isinstance(content, str):
            body = content
        else:
            raise TypeError(f"extra section {title!r}: content must be str, Figure or DataFrame, "
                            f"got {type(content).__name__}")
        out.append((str(title), body))
    return out
