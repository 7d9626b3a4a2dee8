"""Where a run's results go as they come: ``rounds.csv``, ``timings.csv``, ``summary.json``, W&B."""

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

ROUND_COLUMNS = [
    "round",
    "clients/sampled",
    "clients/failed",
    "round/retries",
    "lr/client",
    "train/loss",
    "val/loss",
    "val/acc1",
    "val/acc5",
    "val/f1",
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
    "cost/bytes_extra_up_round",
    "cost/bytes_cum",
    "cost/gb_cum",
    # the simulated clock (ASYNC.md §1): every run
    "sim/time_s",
    # the asynchronous engine (ASYNC.md §2): one row per aggregation
    "clients/arrived",
    "staleness/mean",
    "staleness/max",
    # PR-FL (ASYNC.md §3.8): the buffer average on the test split, the densities
    "buffer/loss",
    "buffer/acc1",
    "buffer/acc5",
    "prfl/density_min",
    "prfl/density_mean",
]
TIMING_COLUMNS = ["round", "time/round_s"]
"""Wall-clock columns: in ``timings.csv`` and W&B, not in ``rounds.csv``, which is therefore
byte-identical for the same config and seed on CPU."""


def _rounds_in(path: Path) -> set[int]:
    """Round numbers of the complete rows of a ``rounds.csv`` (none if it does not exist)."""
    if not path.is_file():
        return set()
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {int(r[0]) for r in rows if len(r) == len(ROUND_COLUMNS) and r[0].isdigit()}


class RunRecorder:
    """Appends one row per round to ``out_dir/rounds.csv`` and its wall-clock time to
    ``out_dir/timings.csv`` (flushed at once, so a crash never loses a finished round), forwards
    the row with its time to the loggers (``log_metrics(dict, step=round)``, e.g. Lightning's
    ``WandbLogger``) and writes ``summary.json``.

    Columns are :data:`ROUND_COLUMNS` and :data:`TIMING_COLUMNS`; rounds without evaluation leave
    the metric cells empty. Cumulative costs (``cost/*_cum``) include the exploration, which
    precedes round 1.

    ``resume_rows``: a resumed run's rows so far (its checkpoint's). Both CSV files are then
    rewritten to hold exactly those rows, so rows the interrupted process wrote after its last
    checkpoint are neither duplicated nor lost: the resumed run recomputes them (identically,
    the streams being stateless). The loggers already received those rows from the interrupted
    process; they are not sent a second time.
    """

    def __init__(
        self, out_dir: str | Path, loggers: Iterable = (), resume_rows: list[Mapping] | None = None
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "rounds.csv"
        self.timings_path = self.out_dir / "timings.csv"
        self.loggers = list(loggers)
        self._sent: set[int] = set()  # rounds the loggers got before a resume
        if resume_rows is None:
            for path, columns in ((self.path, ROUND_COLUMNS), (self.timings_path, TIMING_COLUMNS)):
                with path.open("w", newline="") as f:
                    csv.writer(f).writerow(columns)
        else:
            self._resume(resume_rows)

    def _resume(self, rows: list[Mapping]) -> None:
        written = _rounds_in(self.path)
        for path, columns in ((self.path, ROUND_COLUMNS), (self.timings_path, TIMING_COLUMNS)):
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", newline="") as f:
                csv.writer(f).writerow(columns)
                writer = csv.DictWriter(f, columns, restval="", extrasaction="ignore")
                writer.writerows(rows)
            tmp.replace(path)
        for row in rows:  # rows checkpointed but never written (rounds.csv deleted, say)
            if row["round"] not in written:
                self._send(row)
        self._sent = written - {row["round"] for row in rows}

    def _send(self, row: Mapping) -> None:
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in row.items() if k != "round"}, step=row["round"])

    def log_round(self, row: Mapping) -> None:
        unknown = set(row) - set(ROUND_COLUMNS) - set(TIMING_COLUMNS)
        if unknown:
            raise KeyError(f"unknown rounds.csv columns: {sorted(unknown)}")
        for path, columns in ((self.path, ROUND_COLUMNS), (self.timings_path, TIMING_COLUMNS)):
            with path.open("a", newline="") as f:
                csv.DictWriter(f, columns, restval="", extrasaction="ignore").writerow(row)
        if row["round"] not in self._sent:
            self._send(row)

    def replace_last(self, row: Mapping) -> None:
        """Rewrite the last row of ``rounds.csv`` with ``row`` (the same round, more columns:
        the asynchronous engine's evaluation at the end of the simulated-time budget) and send
        the loggers its new values."""
        lines = self.path.read_text().splitlines(keepends=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            f.writelines(lines[:-1])
            csv.DictWriter(f, ROUND_COLUMNS, restval="", extrasaction="ignore").writerow(row)
        tmp.replace(self.path)
        self._send(row)

    def write_summary(self, summary: Mapping) -> Path:
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(path)
        return path
