"""Post-hoc analysis of finished runs; nothing here is imported by training.

Reads what a run leaves behind (``config.yaml``, ``summary.json``, ``rounds.csv``, or a W&B
offline run folder) and writes tables, plots and a dashboard. Every figure that picks a round
("best", "to target") picks it on the validation split and reports the test accuracy there
(ALGORITHMS.md §5; :mod:`flip.analysis.picks`). Entry points:
``python -m flip.analysis.report`` (table and accuracy plot of any runs),
``python -m flip.analysis.compare`` (checked multi-seed comparison and interactive HTML
dashboard) and ``python -m flip.analysis.ablation`` (accuracy, density and costs against one
swept config value, mean ± std over seeds).

Modules: ``runs`` (find and load run files), ``picks`` (validation picks), ``rows`` (a run's
table row, curve and label), ``stats`` (mean ± std over seeds), ``tables`` (cell formats and
tables), ``algorithm_table`` (the comparison's tables), ``curves``, ``plots`` (PNGs),
``figures`` (plotly) and ``dashboard`` (``index.html``), ``wandb_offline`` (W&B logs).
"""
