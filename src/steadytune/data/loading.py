"""The data a run configuration names: GLUE, a custom file, or a hub data set.

:func:`load_split` dispatches on ``cfg.task``; :func:`validate_data` reads both splits
once, as a run will, so a sweep can refuse a bad file before it writes anything.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steadytune.config.run import RunConfig
from steadytune.data.glue import load_glue
from steadytune.data.splits import Split, holdout
from steadytune.data.tasks import SPLITS, DataError
from steadytune.data.userdata import is_single_file, load_custom, load_hub


def load_split(cfg: RunConfig, split: str) -> Split:
    """Load ``split`` of the data set a run configuration names.

    ``cfg.task`` is a GLUE task (read from ``cfg.data_dir``), ``custom`` (read from
    ``cfg.data_file`` with ``cfg.text_columns`` / ``cfg.label_column``) or
    ``hub:<name>[:<config>]`` (needs ``datasets``). No down-sampling is applied here.
    A single custom file is both splits: :func:`single_file_split` carves the dev split out.

    Raises:
        DataError: see :func:`load_glue` and :mod:`steadytune.userdata`.
    """
    if cfg.task == "custom":
        if not cfg.data_file:
            raise DataError("task=custom needs data_file=<directory, file or {split} pattern>")
        if is_single_file(cfg.data_file):
            return single_file_split(cfg, split)
        return load_custom(cfg.data_file, split, cfg.text_columns, cfg.label_column)
    if cfg.task.startswith("hub:"):
        name, _, config = cfg.task[len("hub:"):].partition(":")
        return load_hub(name, split, cfg.text_columns, cfg.label_column, config or None)
    return load_glue(cfg.task, split, cfg.data_dir)


def single_file_split(cfg: RunConfig, split: str) -> Split:
    """``split`` of a single custom file: a seeded, stratified dev split carved out of it.

    ``cfg.dev_fraction`` of the rows (stratified when ``cfg.stratify``) are drawn with
    ``cfg.train_limit_seed`` as the dev split and the rest are the train split
    (:func:`~steadytune.data.splits.holdout`), so the two parts never overlap and every
    run seed sees the same ones. Each part's ``source`` says how it was carved, so the
    result records it (``data.train_source`` / ``data.dev_source``).

    Raises:
        DataError: the file cannot be read, or it has fewer than 2 rows.
    """
    whole = load_custom(cfg.data_file or "", "train", cfg.text_columns, cfg.label_column)
    try:
        train, dev = holdout(whole, cfg.dev_fraction, cfg.train_limit_seed, stratify=cfg.stratify)
    except ValueError as e:
        raise DataError(str(e)) from None
    how = (f"dev_fraction={cfg.dev_fraction:g} of {len(whole)} rows, seed {cfg.train_limit_seed}"
           + (", stratified" if cfg.stratify and not whole.is_regression else ""))
    part = train if split == "train" else dev
    return dataclasses.replace(part, source=f"{whole.source} [{split}: {len(part)} rows; held out {how}]")


def validate_data(cfg: RunConfig) -> None:
    """Read the train and dev splits ``cfg`` names, exactly as each run will, and discard them.

    A sweep calls this once per data set before it writes anything, so a missing or
    non-UTF-8 file, a duplicated or repeated header or a bad row stops the whole sweep with
    one message naming file and line, instead of failing every run. Hub data sets are not
    read here (that needs the network); their runs report their own errors.

    Raises:
        DataError: see :func:`load_split`.
    """
    if cfg.task.startswith("hub:"):
        return
    for split in SPLITS:
        load_split(cfg, split)

