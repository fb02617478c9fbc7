"""What every command shares: the stderr console, the one-line error exit, common options.

A command reports a user error (bad config, data, model, study) as one ``error:`` line on
stderr and exit status 2; :func:`user_errors` and :func:`study_errors` name the exception
types that count as such.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable).")]


def fail(exc: BaseException) -> None:
    """Print ``error: <message>`` on one line (stderr) and exit with status 2."""
    from rich.markup import escape  # rich only when something is printed

    # escape: a message such as "pip install 'steadytune[ray]'" is text, not Rich markup
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types of bad configuration, data or model input."""
    from steadytune.config.run import (
        ConfigError,  # lazy: `steadytune --help` stays fast
    )
    from steadytune.data.tasks import DataError  # lazy: `steadytune --help` stays fast
    from steadytune.training.models import (
        ModelError,  # lazy: `steadytune --help` stays fast
    )

    return (ConfigError, DataError, ModelError, FileNotFoundError)


def study_errors() -> tuple[type[Exception], ...]:
    """:func:`user_errors` plus a bad study file, executor or database error."""
    import sqlite3  # only needed here

    from steadytune.store.file import StoreError  # lazy: `steadytune --help` stays fast
    from steadytune.sweeps.executors import (
        ExecutorError,  # lazy: `steadytune --help` stays fast
    )

    return (*user_errors(), StoreError, ExecutorError, sqlite3.DatabaseError)


def split_list(text: str) -> list[str]:
    """``"rte, mrpc,"`` -> ``["rte", "mrpc"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def wide_console() -> Console:
    """Stdout console; when piped (no terminal width) wide enough not to cut names."""
    out = Console()
    if not out.is_terminal:
        out.width = 200
    return out
