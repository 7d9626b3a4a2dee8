"""`flip.analysis.report`: table values, written files and errors on two tiny hand-written runs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_runs import FEDAVG
from fixtures_runs import write_run as write_new_run

from flip.analysis.report import report
from flip.analysis.runs import expand_run_dirs
from flip.analysis.tables import fmt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, algorithm: str, acc1: list[float | None], gb0: float, best1: float):
    """A run dir as the federated core wrote it before issue 11: summary.json + rounds.csv,
    no validation split, ``best`` = the test maximum (no ``picked_on``)."""
    run_dir.mkdir(parents=True)
    rounds = len(acc1)
    gb_per_round = 0.002
    bytes_total = int(round((gb0 + rounds * gb_per_round) * 1e9))
    summary = {
        "algorithm": algorithm,
        "experiment": "fmnist_patho",
        "seed": 42,
        "data": {"dataset": "fmnist"},
        "model": "twocnn",
        "rounds_completed": rounds,
        "final": {"global/acc1": acc1[-1], "global/acc5": 0.98, "global/loss": 0.8},
        "best": {"global/acc1": best1, "global/acc5": 0.99},
        "cost": {
            "params": 1663370,
            "nonzero_params": 1164359,
            "density": 0.7,
            "sparsity": 0.3,
            "compression_ratio": 1663370 / 1164359,
            "flops_per_sample_dense": 9527488,
            "flops_per_sample": 6.9e6,
            "train_flops_rounds": 1.2e12,
            "train_flops_exploration": 3e12,
            "train_flops_total": 4.2e12,
            "bytes_rounds": bytes_total - int(gb0 * 1e9),
            "bytes_exploration": int(gb0 * 1e9),
            "bytes_total": bytes_total,
            "gb_total": bytes_total / 1e9,
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with (run_dir / "rounds.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "global/acc1", "global/acc5", "cost/gb_cum", "cost/flops_train_cum"])
        for r, a in enumerate(acc1, start=1):
            cell = "" if a is None else a
            w.writerow([r, cell, "" if a is None else 0.95, gb0 + r * gb_per_round, r * 1e11])
    return summary


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "sweep" / "0", "autoflip", [0.5, None, 0.7312, 0.71], 0.05, 0.7312)
    b = write_run(tmp_path / "sweep" / "1", "fedavg", [0.4, None, 0.62, 0.655], 0.0, 0.655)
    return tmp_path / "sweep", a, b


def test_report_rows_and_files(runs, tmp_path):
    sweep, a, b = runs
    out = tmp_path / "out"
    rows = report([sweep / "0", sweep / "1"], out)
    assert [r["algorithm"] for r in rows] == ["autoflip", "fedavg"]
    assert rows[0]["optimistic_acc1"] == 0.7312 and rows[0]["final_acc1"] == 0.71
    assert rows[0]["best_acc1"] is None and not rows[0]["val_split"]  # an older run: no val
    assert rows[1]["gb_total"] == b["cost"]["gb_total"]
    assert rows[0]["train_flops_total"] == 4.2e12
    assert json.loads((out / "comparison.json").read_text()) == rows

    md = (out / "comparison.md").read_text().splitlines()
    assert len(md) == 2 + 2  # header, rule, one line per run
    autoflip = md[2].split("|")[1:-1]
    assert [c.strip() for c in autoflip] == [
        "autoflip", "no val split", "no val split", "no val split", "71.00%", "98.00%",
        "73.12%", "70.00%", "6.90 M", "4.20 T", fmt(a["cost"]["gb_total"], "gb"), "1.43×",
    ]  # fmt: skip

    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_default_out_is_common_parent_and_multirun_expands(runs):
    sweep, _, _ = runs
    rows = report([sweep])  # a multirun folder: numbered subfolders
    assert [Path(r["run_dir"]).name for r in rows] == ["0", "1"]
    assert (sweep / "comparison.md").is_file() and (sweep / "accuracy.png").is_file()


def test_cli(runs, tmp_path):
    sweep, a, b = runs
    out = tmp_path / "cli_out"
    cmd = [sys.executable, "-m", "flip.analysis.report", str(sweep / "0"), str(sweep / "1")]
    cmd += ["--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "73.12%" in proc.stdout and "65.50%" in proc.stdout
    assert f"{b['cost']['gb_total']:.3f}" in proc.stdout
    assert fmt(a["cost"]["gb_total"], "gb") in proc.stdout
    rows = json.loads((out / "comparison.json").read_text())
    assert rows[1]["optimistic_acc1"] == b["best"]["global/acc1"]
    assert (out / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_missing_summary_names_the_dir(runs, tmp_path):
    sweep, _, _ = runs
    bad = tmp_path / "not_a_run"
    bad.mkdir()
    with pytest.raises(FileNotFoundError, match="not_a_run"):
        report([sweep / "0", bad])
    (sweep / "2").mkdir()  # a multirun job that never finished
    with pytest.raises(FileNotFoundError, match=r"2: no summary\.json"):
        expand_run_dirs([sweep])
    proc = subprocess.run(
        [sys.executable, "-m", "flip.analysis.report", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "not_a_run" in proc.stderr


def test_duplicate_algorithms_get_distinct_labels(tmp_path):
    write_run(tmp_path / "s42", "fedavg", [0.5], 0.0, 0.5)
    write_run(tmp_path / "s43", "fedavg", [0.6], 0.0, 0.6)
    rows = report([tmp_path / "s42", tmp_path / "s43"], tmp_path / "out")
    assert [r["label"] for r in rows] == ["fedavg (s42)", "fedavg (s43)"]


def test_best_is_picked_on_validation(tmp_path):
    """A run with a validation split (issue 11): its best test top-1 is 72% in round 3, its
    best val top-1 is in round 5 (test 66%); the report says 66.00% at round 5 and 72.00%
    only as optimistic. Before, the report's "Best top-1" read the summary's best without a
    picked round and there was no optimistic column."""
    run = tmp_path / "fedavg_2"
    write_new_run(run, "fedavg", 2, *FEDAVG[2])
    (row,) = report([run], tmp_path / "out")
    assert (row["best_round"], row["best_acc1"], row["optimistic_acc1"]) == (5, 0.66, 0.72)
    md = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    header = [c.strip() for c in md[0].split("|")[1:-1]]
    cells = dict(zip(header, (c.strip() for c in md[2].split("|")[1:-1]), strict=True))
    assert cells["Test top-1 @ best val"] == "66.00%" and cells["Best-val round"] == "5"
    assert cells["Best val top-1"] == "71.00%"
    assert cells["Top-1 optimistic (test-picked)"] == "72.00%"
    assert cells["Density (params sent)"] == "100.00%"


def test_fmt():
    assert fmt(9_527_488, "si") == "9.53 M"
    assert fmt(4.2e12, "si") == "4.20 T"
    assert fmt(123.4e9, "si") == "123 G"
    assert fmt(0.000579, "gb") == "0.001"
    assert fmt(0.7312, "pct") == "73.12%"
    assert fmt(None, "pct") == "–"
    assert fmt(90, "time") == "90 s" and fmt(150, "time") == "2.5 min"
    assert fmt(3 * 3600, "time") == "3 h" and fmt(4.5, "count") == "4.5"
