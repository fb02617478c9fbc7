"""HTML building blocks of the report: escaping, number formats, embedded figures, tables.

Every string that comes from the data goes through :func:`esc`; figures are written as
PNG and SVG and embedded as base64 PNG data URIs, so a page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Union

import pandas as pd
from matplotlib.figure import Figure

Section = tuple[str, Union[str, Figure, pd.DataFrame]]
"""A report section ``(title, content)``: a Figure (embedded), a DataFrame (escaped table)
or a string of HTML the caller has already made safe."""


def esc(value: object) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def num(x: object, digits: int = 1) -> str:
    """A number with ``digits`` decimals; an em dash for NaN/None or a non-number."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


def pval(p: object) -> str:
    """A p-value to 2 significant digits (``&lt;0.001`` below that; an em dash for NaN/None)."""
    v = float(p) if p is not None else math.nan
    return "—" if math.isnan(v) else ("&lt;0.001" if v < 1e-3 else f"{v:.2g}")


def figure_html(fig: Figure, figdir: Path, name: str, caption: str) -> str:
    """Save ``fig`` as ``name``.png/.svg in ``figdir`` and return it as an embedded ``<figure>``.

    Args:
        fig: the figure; it is closed afterwards if pyplot made it.
        figdir: an existing folder.
        name: the file stem (escaped in the page).
        caption: HTML of the caption (already safe); a link to the SVG follows it.

    Returns:
        The ``<figure>`` element with the PNG as a base64 data URI.
    """
    data = base64.b64encode(_save(fig, figdir, name)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(name)}">'
            f'<figcaption>{caption} <a href="figures/{esc(name)}.svg">SVG</a></figcaption></figure>')


def frame_html(df: pd.DataFrame) -> str:
    """A DataFrame as an escaped, horizontally scrollable HTML table (NaN as an em dash)."""
    return '<div class="scroll">' + df.to_html(index=False, escape=True, na_rep="—", border=0) + "</div>"


def _save(fig: Figure, figdir: Path, name: str) -> bytes:
    """Write ``name``.png/.svg into ``figdir``; return the PNG bytes; drop the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    png = buf.getvalue()
    (figdir / f"{name}.png").write_bytes(png)
    fig.set_layout_engine("none")  # keep the layout just computed: the SVG pass skips it
    fig.savefig(figdir / f"{name}.svg", format="svg")
    if fig.canvas.manager is not None:  # made by pyplot (an extra section): free it there
        # pyplot only for figures pyplot made: importing it picks a GUI backend, which the
        # report's own (Agg-canvas) figures never need
        import matplotlib.pyplot as plt

        plt.close(fig)
    return png


__all__ = ["Section", "esc", "figure_html", "frame_html", "num", "pval"]
