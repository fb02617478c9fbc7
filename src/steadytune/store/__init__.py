"""The study store: one SQLite file per study (seed sweeps), safe against ``kill -9``.

Each module one responsibility (import from the module; this package re-exports nothing):

* :mod:`~steadytune.store.study`: :class:`~steadytune.store.study.Study`, the open file and
  the run lifecycle (plan, claim, record, the runs/curves/diagnostics tables);
* :mod:`~steadytune.store.file`: the file format (schema, version, refusing foreign files);
* :mod:`~steadytune.store.leases`: run leases (two drivers never train one run);
* :mod:`~steadytune.store.tables`: the runs/curves/diagnostics queries;
* :mod:`~steadytune.store.rows`: how a result, curves and diagnostics become rows;
* :mod:`~steadytune.store.records`: one run's stored result and logs;
* :mod:`~steadytune.store.export`: export to Parquet/CSV;
* :mod:`~steadytune.store.checkpoints`: the model checkpoints a sweep kept.
"""
