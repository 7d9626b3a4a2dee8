"""Where a run's results go as they come: ``rounds.csv``, ``summary.json``, W&B."""

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

ROUND_COLUMNS = [
    "round",
    "clients/sampled",
    "lr/client",
    "train/loss",
    "global/loss",
    "global/acc1",
    "global/acc5",
    "global/f1",
    "global/precision",
    "global/recall",
    "local/acc1_weighted",
    "local/acc1_mean",
    "local/acc1_std",
    "local/f1_weighted",
    "local/f1_mean",
    "local/f1_std",
    "local/loss_weighted",
    "model/nonzero_params",
    "model/density",
    "cost/flops_train_round",
    "cost/flops_train_cum",
    "cost/bytes_down_round",
    "cost/bytes_up_round",
    "cost/bytes_cum",
    "cost/gb_cum",
    "time/round_s",
]


class RunRecorder:
    """Appends one row per round to ``out_dir/rounds.csv`` (flushed at once, so a crash never
    loses a finished round), forwards it to the loggers (``log_metrics(dict, step)``, e.g.
    Lightning's ``WandbLogger``) and writes ``summary.json``.

    Columns are :data:`ROUND_COLUMNS`; rounds without evaluation leave the metric cells empty.
    Cumulative costs (``cost/*_cum``) include the exploration, which precedes round 1.
    """

    def __init__(self, out_dir: str | Path, loggers: Iterable = ()):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "rounds.csv"
        self.loggers = list(loggers)
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerow(ROUND_COLUMNS)

    def log_round(self, row: Mapping) -> None:
        unknown = set(row) - set(ROUND_COLUMNS)
        if unknown:
            raise KeyError(f"unknown rounds.csv columns: {sorted(unknown)}")
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, ROUND_COLUMNS, restval="").writerow(row)
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in row.items() if k != "round"}, step=row["round"])

    def write_summary(self, summary: Mapping) -> Path:
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(path)
        return path
