"""The ``steadytune`` command line: a literal table from command name to function.

Every command parses its options, makes one public library call and prints where the
results went (see docs/architecture.md); the functions live in :mod:`.runs` (one run,
settings), :mod:`.sweeps` (sweeps and the paper's experiments), :mod:`.studies` (reading
a study) and :mod:`.analyses` (the paper's analyses).
"""

from __future__ import annotations

import sys
from typing import Callable

import typer

from steadytune.cli import analyses, runs, statistics, studies, sweeps

COMMANDS: dict[str, Callable[..., None]] = {
    "run": runs.run,
    "recipes": runs.recipes,
    "keys": runs.keys,
    "sweep": sweeps.sweep,
    "experiments": sweeps.experiments,
    "experiment": sweeps.experiment,
    "summary": studies.summary,
    "export": studies.export,
    "report": studies.report,
    "forgetting": analyses.forgetting,
    "surface": analyses.surface,
    "generalisation": analyses.generalisation,
    "plan": statistics.plan,
    "triage": analyses.triage,
}
"""Command name -> the function that parses its options, calls the library and prints."""

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Stable, diagnosable fine-tuning of BERT-family encoders.")
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
