"""The HTML stability report and its figures, drawn from stored tables (never from models).

* :mod:`~steadytune.report.html`: the page (``build_report``, ``write_report``);
* :mod:`~steadytune.report.tables`: its HTML tables (Table 1, recipe comparison, runs);
* :mod:`~steadytune.report.markup`: escaping, number formats, embedded figures;
* :mod:`~steadytune.report.plots`: box plots, learning curves, expected max (Fig. 1);
* :mod:`~steadytune.report.diagplots`: gradient norms and bias correction (Fig. 4, 6);
* :mod:`~steadytune.report.sections`: sections from later analyses (Fig. 2, 7, 8).
"""
