"""What a probe returns and writes: per table a CSV, its PNG figure and a JSON record of
the settings and package versions, all named after the table (``surface.csv`` ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from steadytune.training.results import versions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 130
"""Resolution of every figure a probe writes."""

StageProgress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``, called as a probe's stages advance (``total`` None while unknown)."""


@dataclass(frozen=True)
class ProbeResult:
    """The tables a probe computed and the files it wrote."""

    tables: dict[str, pd.DataFrame]
    """Each table under the name of its files (``"surface"``: surface.csv, .png, .json)."""
    files: list[Path]
    """Every file written, in the order written."""
    settings: dict[str, Any]
    """The settings recorded in the JSON files (without the package versions)."""

    @property
    def table(self) -> pd.DataFrame:
        """The main table: the first of :attr:`tables`."""
        return next(iter(self.tables.values()))


def write_outputs(out: str | Path, name: str, table: pd.DataFrame, fig: Figure, settings: dict[str, Any]) -> list[Path]:
    """Write ``out/name.csv`` (the table), ``name.png`` (the figure) and ``name.json``.

    The JSON file holds ``settings`` plus ``versions`` (:func:`steadytune.training.results.versions`).
    ``out`` is created if needed.

    Returns:
        The three paths, in that order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    fig.savefig(out / f"{name}.png", dpi=DPI)
    (out / f"{name}.json").write_text(json.dumps({**settings, "versions": versions()}, indent=2, default=str))
    return [out / f"{name}.csv", out / f"{name}.png", out / f"{name}.json"]


def stage(progress: StageProgress | None, name: str) -> Callable[[int, int, dict[str, Any]], None] | None:
    """An analysis' ``progress(i, n, row)`` callback that reports to ``progress`` as stage ``name``."""
    if progress is None:
        return None
    return lambda done, total, row: progress(name, done, total)


__all__ = ["DPI", "ProbeResult", "StageProgress", "stage", "write_outputs"]
