"""`flip.analysis.compare` on runs of both engines (ASYNC.md §1, §4): simulated seconds to a
target read on the validation split, updates per client, and accuracy against simulated time
for asynchronous seeds that evaluated different aggregations."""

import csv
import json
from pathlib import Path

import pytest
from compose import compose_cfg
from fixtures_data import write_tiny_mnist

from flip.analysis.compare import compare
from flip.analysis.curves import band
from flip.analysis.rows import Run
from flip.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("async_runs")
    data = write_tiny_mnist(root / "data", per_class_train=12, per_class_test=2)
    common = ["debug=smoke", "data=mnist", f"data.root={data}", "data.download=false",
              "data.train_subset=1.0", "data.val_fraction=0.2", "data.batch_size=8",
              "federation.local_steps=2", "federation.rounds=1000", "federation.eval_every=1000",
              "federation.participation=1.0", "devices=prfl10", "federation.eval_every_s=2",
              "federation.max_time_s=${async.max_time_s}", "async.max_time_s=12"]
    out = []
    for algo in ("fedasync", "fedavg"):
        for seed in (1, 2):
            run = root / f"{algo}_{seed}"
            train(compose_cfg([*common, f"algorithm={algo}", f"seed={seed}"], run))
            out.append(run)
    return out


def rows(run):
    with (run / "rounds.csv").open() as f:
        return list(csv.DictReader(f))


def test_time_to_target_is_read_on_validation_and_participation_counted(runs, tmp_path):
    target = 0.15
    got = {r["label"]: r for r in compare(runs, tmp_path, target=target)}
    for label, group in (("fedasync", runs[:2]), ("fedavg", runs[2:])):
        times = []
        for run in group:
            hit = next((r for r in rows(run) if r["val/acc1"] and float(r["val/acc1"]) >= target),
                       None)
            times.append(float(hit["sim/time_s"]) if hit else None)
        reached = [t for t in times if t is not None]
        assert got[label]["time_to_target_n"] == len(reached)
        if reached:
            assert got[label]["time_to_target"] == pytest.approx(sum(reached) / len(reached))
        part = [json.loads((run / "summary.json").read_text())["participation"] for run in group]
        assert got[label]["updates_min"] == pytest.approx(sum(min(p) for p in part) / 2)
        assert got[label]["updates_max"] == pytest.approx(sum(max(p) for p in part) / 2)
    assert got["fedasync"]["updates_max"] > got["fedasync"]["updates_min"]  # fast clients more
    assert got["fedavg"]["updates_max"] == got["fedavg"]["updates_min"]  # every client, each round
    table = (tmp_path / "comparison.md").read_text()
    assert "Sim. time to 15% val top-1" in table and "Updates per client, most" in table
    assert (tmp_path / "accuracy_time.png").read_bytes().startswith(b"\x89PNG")


def test_asynchronous_seeds_are_averaged_by_evaluation():
    """Two asynchronous seeds evaluated different aggregations (5, 9, 14 and 6, 10, 13) at
    about the same simulated times: their curves are averaged evaluation by evaluation (the
    k-th of each, up to the shortest run), not dropped for want of a common round."""
    def run(seed, points):
        curve = [{"round": r, "sim_time": t, "acc1": a} for r, t, a in points]
        return Run(Path(f"r{seed}"), "fedasync", seed, None, {}, curve, label="fedasync")

    a = run(1, [(5, 20.1, 0.5), (9, 40.2, 0.6), (14, 60.0, 0.7), (18, 80.3, 0.8)])
    b = run(2, [(6, 20.3, 0.3), (10, 40.0, 0.4), (13, 60.4, 0.5)])
    b_ab = band([a, b], "sim_time", "acc1")
    x, y, std = b_ab.x, b_ab.y, b_ab.std
    assert x.tolist() == pytest.approx([20.2, 40.1, 60.2])
    assert y.tolist() == pytest.approx([40.0, 50.0, 60.0])
    assert std.tolist() == pytest.approx([100 * 0.2 / 2 ** 0.5] * 3)
    same = run(3, [(5, 20.0, 0.1), (9, 40.0, 0.2)])  # common rounds: aligned by round
    b_same = band([a, same], "round", "acc1")
    x, y = b_same.x, b_same.y
    assert x.tolist() == [5, 9] and y.tolist() == pytest.approx([30.0, 40.0])
