"""Several seeds per process: K runs that differ only in their seed trained as one grouped model.

:mod:`.modules` (the stacked layers, per-run dropout streams and attention), :mod:`.model`
(:class:`~steadytune.training.grouped.model.GroupedModel`), :mod:`.diagnostics` (per-run
diagnostics) and :mod:`.loop` (:func:`~steadytune.training.grouped.loop.train_group`).
"""
