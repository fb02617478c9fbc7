"""Study files: a sweep (or several) described in TOML, with the keys of ``steadytune sweep``'s flags.

``steadytune sweep --config study.toml`` runs the file; :func:`study_file_text` writes one
(``steadytune experiment NAME --export FILE`` writes the paper's experiments), with the
command that reproduces it in its header::

    # steadytune study file. Reproduce with:
    #   steadytune sweep --config table1.toml
    store = "table1.db"

    [[sweep]]
    tasks = ["rte", "mrpc", "cola"]
    recipes = ["devlin2019", "mixout2020", "mosbach2021"]
    seeds = "1-25"
    model = ["minilm"]

    [sweep.set]            # --set key=value
    dev_limit = 128

    [sweep.grid]           # --grid key=v1,v2
    lr = [1e-05, 2e-05]

A file with one sweep may put its keys at the top level instead of a ``[[sweep]]``
table. Keys are the flags' names (``data-dir``, ``train-limit``, ``max-steps``,
``ray-address``, ``keep-checkpoints``; ``_`` for ``-`` works too). Every problem is one
:class:`~steadytune.config.errors.ConfigError` line naming the file, the line and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from steadytune.config.errors import ConfigError
from steadytune.config.run import format_value, parse_assignments
from steadytune.sweeps.spec import SweepSpec, parse_grid, parse_seeds

SPEC_KEYS = ("tasks", "recipes", "seeds", "model", "data-dir", "set", "grid", "train-limit", "max-steps", "repeats")
"""Keys of one sweep (``steadytune sweep`` flags that say what runs)."""
RUN_KEYS = ("store", "executor", "workers", "ray-address", "keep-checkpoints", "group-size", "tracker")
"""Keys of the whole file (flags that say where results go and how runs execute)."""


@dataclass(frozen=True)
class StudyFile:
    """A parsed study file: the sweeps and how to run them (inert data)."""

    specs: tuple[SweepSpec, ...]
    """The sweeps, in file order, to run into one study."""
    store: str | None = None
    """The study file (``--store``); None: the command line must give it."""
    executor: str = "local"
    workers: int = 0
    ray_address: str | None = None
    keep_checkpoints: int = 0
    group_size: int = 0
    trackers: tuple[str, ...] = ()
    """``KIND:ROOT`` trackers (``--tracker``), e.g. ``tensorboard:runs/tb``."""


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_.-]+)\s*=""")


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """``(table..., key) -> line`` (1-based) of every ``key =`` line; ``[[sweep]]`` tables are
    ``("sweep", i)``. Enough of TOML for the files this module reads and writes."""
    lines: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    sweeps = -1
    for n, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            parts = [p.strip().strip("\"'") for p in header[2].split(".")]
            if header[1] == "[[" and parts == ["sweep"]:
                sweeps += 1
                table = ("sweep", sweeps)
            elif parts[0] == "sweep" and sweeps >= 0:
                table = ("sweep", sweeps, *parts[1:])
            else:
                table = tuple(parts)
            lines.setdefault(table, n)
        elif key := _KEY.match(line):
            lines.setdefault((*table, key[1].strip("\"'")), n)
    return lines


class _Where:
    """Turns a problem with a key into one ``FILE, line N: key K: problem`` error."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, _key_lines(text)

    def error(self, where: tuple[Any, ...], message: str) -> ConfigError:
        line = next((self.lines[where[:i]] for i in range(len(where), 0, -1) if where[:i] in self.lines), None)
        name = ".".join(str(p) for p in where if not isinstance(p, int))
        return ConfigError(f"{self.path}" + (f", line {line}" if line else "") + f": key {name!r}: {message}")


def _text_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"expects a list of names or a comma-separated string, got {value!r}")


def _scalar(value: Any) -> str:
    """A TOML value as the ``key=value`` text of a flag (``true``, ``1e-05``, ``3``)."""
    if isinstance(value, (dict, list)):
        raise ConfigError(f"expects one value, got {value!r}")
    return format_value(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return parse_seeds(",".join(str(v) for v in value))
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return parse_seeds(str(value))
    raise ConfigError(f"expects a seed list such as \"1-25\" or [1, 2, 3], got {value!r}")


def _optional_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expects an integer, got {value!r}")
    return value


def _spec(table: dict[str, Any], where: tuple[Any, ...], at: _Where) -> SweepSpec:
    """One sweep's keys -> :class:`SweepSpec` (each key checked as its flag would be)."""
    fields: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        try:
            if name in ("tasks", "recipes"):
                fields[name] = _text_list(value)
            elif name == "model":
                fields["models"] = [value] if isinstance(value, str) else _text_list(value)
            elif name == "seeds":
                fields["seeds"] = _seeds(value)
            elif name == "data-dir":
                fields["data_dir"] = str(value)
            elif name in ("train-limit", "max-steps", "repeats"):
                fields[name.replace("-", "_")] = _optional_int(value)
            elif name == "set":
                fields["overrides"] = _overrides(value, (*where, key), at)
            elif name == "grid":
                fields["grid"] = _grid(value, (*where, key), at)
            else:
                raise ConfigError(f"unknown key; a sweep's keys are {', '.join(SPEC_KEYS)}")
        except ConfigError as e:
            if str(e).startswith(str(at.path)):
                raise
            raise at.error((*where, key), str(e)) from None
    missing = [k for k in ("tasks", "recipes", "seeds") if k not in fields]
    if missing:
        raise at.error(where or ("sweep",), f"a sweep needs {', '.join(missing)}")
    return SweepSpec(**fields)


def _overrides(value: Any, where: tuple[Any, ...], at: _Where) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError("expects a table of key = value (as --set key=value)")
    out = {}
    for key, item in value.items():
        try:
            out.update(parse_assignments([f"{key}={_scalar(item)}"]))
        except ConfigError as e:
            raise at.error((*where, key), str(e)) from None
    return out


def _grid(value: Any, where: tuple[Any, ...], at: _Where) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ConfigError("expects a table of key = [values] (as --grid key=v1,v2)")
    out: dict[str, list[str]] = {}
    for key, items in value.items():
        try:
            values = items if isinstance(items, list) else [items]
            out.update(parse_grid([f"{key}={','.join(_scalar(v) for v in values)}"]))
        except ConfigError as e:
            raise at.error((*where, key), str(e)) from None
    return out


def load_study_file(path: str | Path) -> StudyFile:
    """Read a study file (see the module docstring).

    Raises:
        ConfigError: unreadable file, invalid TOML (with its line), an unknown key, a value
            of the wrong type or out of range, or a sweep without tasks/recipes/seeds; one
            line naming the file, the line and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read study file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    at = _Where(path, text)
    runs = {k: data.pop(k) for k in list(data) if k.replace("_", "-") in RUN_KEYS}
    sweeps = data.pop("sweep", None)
    if sweeps is not None and data:
        raise at.error((next(iter(data)),), "put a sweep's keys in its [[sweep]] table (or use no [[sweep]])")
    if sweeps is not None and not (isinstance(sweeps, list) and sweeps):
        raise at.error(("sweep",), "expects [[sweep]] tables")
    tables = [(t, ("sweep", i)) for i, t in enumerate(sweeps)] if sweeps is not None else [(data, ())]
    specs = tuple(_spec(table, where, at) for table, where in tables)
    return StudyFile(specs, **_run_options(runs, at))


def _run_options(runs: dict[str, Any], at: _Where) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs.items():
        name = key.replace("-", "_")
        if name == "tracker":
            items = [value] if isinstance(value, str) else value
            if not (isinstance(items, list) and all(isinstance(v, str) for v in items)):
                raise at.error((key,), f"expects KIND:ROOT or a list of them, got {value!r}")
            out["trackers"] = tuple(items)
        elif name in ("workers", "keep_checkpoints", "group_size"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise at.error((key,), f"expects an integer >= 0, got {value!r}")
            out[name] = value
        elif not isinstance(value, str):
            raise at.error((key,), f"expects a string, got {value!r}")
        else:
            out[name] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _typed(text: str) -> Any:
    """``"3"`` -> 3, ``"1e-05"`` -> 1e-05, ``"true"`` -> True; other text stays text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def _seed_text(seeds: tuple[int, ...]) -> str:
    """``(1, 2, 3, 5)`` -> ``"1-3,5"``."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def study_file_text(specs: list[SweepSpec] | tuple[SweepSpec, ...], file_name: str, *, store: str | None = None,
                    title: str | None = None) -> str:
    """The TOML text of a study file that :func:`load_study_file` reads back as ``specs``.

    Args:
        specs: the sweeps.
        file_name: the file's name as the reproducing command in the header should show it.
        store: the study file it runs into (None: left to ``--store``).
        title: a line describing the study (e.g. an experiment's description).
    """
    out = ["# steadytune study file" + (f": {title}" if title else "") + ". Reproduce with:",
           f"#   steadytune sweep --config {file_name}" + ("" if store else " --store STUDY.db")]
    if store:
        out.append(f"store = {_toml_value(store)}")
    for spec in specs:
        out += ["", "[[sweep]]", f"tasks = {_toml_value(spec.tasks)}", f"recipes = {_toml_value(spec.recipes)}",
                f"seeds = {_toml_value(_seed_text(spec.seeds))}", f"model = {_toml_value(spec.models)}"]
        for key, value in (("data-dir", spec.data_dir), ("train-limit", spec.train_limit),
                           ("max-steps", spec.max_steps), ("repeats", None if spec.repeats == 1 else spec.repeats)):
            if value is not None:
                out.append(f"{key} = {_toml_value(value)}")
        for name, table in (("set", spec.overrides), ("grid", spec.grid)):
            if table:
                out += ["", f"[sweep.{name}]"]
                out += [f"{k} = {_toml_value([_typed(x) for x in v] if name == 'grid' else _typed(v))}"
                        for k, v in table.items()]
    return "\n".join(out) + "\n"


__all__ = ["RUN_KEYS", "SPEC_KEYS", "StudyFile", "load_study_file", "study_file_text"]
