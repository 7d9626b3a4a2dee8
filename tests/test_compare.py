"""`flip.analysis.compare` on real tiny runs (debug=smoke on Debian's Fashion-MNIST): the cuts
against FedAvg, mean ± std over seeds, refusal of incomparable runs and W&B offline runs. The
honest picks, PruneFL's and AutoFLIP's columns and the dashboard in a headless Chromium are
tested on hand-written runs (test_honest_compare.py, test_dashboard.py)."""

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from compose import compose_cfg

from flip.analysis.compare import IncomparableRunsError, compare
from flip.analysis.wandb_offline import read_offline_run
from flip.metrics.costs import effective_flops, profile_flops
from flip.models import TwoCNN
from flip.train import train

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")
SMALL = ["debug=smoke", "model.net.hidden_size=8"]  # TwoCNN h8: 1.0 M FLOPs a sample, h32: 9.5 M


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """FedAvg and random pruning (density 0.5) with seeds 42 and 7, the random runs also
    logged to W&B offline, and one run of another model (incomparable)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo, seed in (("fedavg", 42), ("random", 42), ("fedavg", 7), ("random", 7)):
        extra = ["random_pruning.density=0.5"] if algo == "random" else []
        if algo == "random":
            extra.append("logger=wandb")  # offline (configs/logger/wandb.yaml)
        cfg = compose_cfg(
            [*SMALL, f"algorithm={algo}", f"seed={seed}", *extra], root / f"{algo}_{seed}"
        )
        train(cfg)
        out[algo, seed] = root / f"{algo}_{seed}"
    odd = ["debug=smoke", "model.net.hidden_size=16", "federation.rounds=1"]
    train(compose_cfg(odd, root / "odd"))
    out["odd"] = root / "odd"
    return out


def summary(run):
    return json.loads((run / "summary.json").read_text())


def test_cuts_against_fedavg_are_the_hand_computed_ones(runs, tmp_path):
    dirs = [runs["fedavg", 42], runs["random", 42], runs["fedavg", 7], runs["random", 7]]
    rows = {r["label"]: r for r in compare(dirs, tmp_path, target=0.2)}
    fedavg, rnd = rows["fedavg"], rows["random"]
    assert fedavg["runs"] == rnd["runs"] == 2 and rnd["seeds"] == ["42", "7"]

    net = TwoCNN(1, 10, 8)
    params = dict(net.named_parameters())
    n = sum(p.numel() for p in params.values())
    profile = profile_flops(net, (1, 28, 28))
    gb_ratio, flops_num, flops_den = [], 0.0, 0.0
    for seed in (42, 7):
        masks = torch.load(runs["random", seed] / "mask.pt")["masks"]
        nnz = sum(int(masks[k].sum()) if k in masks else p.numel() for k, p in params.items())
        bits = sum(math.ceil(params[k].numel() / 8) for k in masks)
        gb_ratio.append((4 * nnz + bits + 4 * nnz) / (8 * n))  # masked down + up vs dense
        samples = summary(runs["fedavg", seed])["cost"]["train_flops_total"] / (3 * profile.total)
        flops_num += effective_flops(profile, masks, net) * samples
        flops_den += profile.total * samples
    # same clients and rounds per seed, so bytes scale by the per-round ratio
    gb = [summary(runs[a, s])["cost"]["gb_total"] for a in ("random", "fedavg") for s in (42, 7)]
    assert [gb[0] / gb[2], gb[1] / gb[3]] == pytest.approx(gb_ratio)
    assert rnd["gb_cut"] == pytest.approx(1 - (gb[0] + gb[1]) / (gb[2] + gb[3]), abs=1e-12)
    assert 0.45 < rnd["gb_cut"] < 0.5  # half the values, plus the bitmask
    assert rnd["flops_cut"] == pytest.approx(1 - flops_num / flops_den, rel=1e-9)
    assert fedavg["gb_cut"] == fedavg["flops_cut"] == 0.0

    acc = [summary(runs["random", s])["final"]["global/acc1"] for s in (42, 7)]
    assert rnd["final_acc1"] == pytest.approx(np.mean(acc))
    assert rnd["final_acc1_std"] == pytest.approx(np.std(acc, ddof=1))
    md = (tmp_path / "comparison.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| random "))
    assert f"{100 * np.mean(acc):.2f}% ± {100 * np.std(acc, ddof=1):.2f}%" in line
    assert f"+{100 * rnd['gb_cut']:.1f}%" in line
    density = [summary(runs["random", s])["cost"]["density"] for s in (42, 7)]
    assert rnd["density"] == pytest.approx(np.mean(density)) and fedavg["density"] == 1.0
    for name in ("accuracy_round", "accuracy_gb", "accuracy_flops", "density_round"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_incomparable_runs_are_refused_with_the_difference(runs, tmp_path):
    dirs = [runs["fedavg", 42], runs["random", 42], runs["odd"]]
    with pytest.raises(IncomparableRunsError) as err:
        compare(dirs, tmp_path)
    msg = str(err.value)
    assert "model differs" in msg and "hidden_size=8" in msg and "hidden_size=16" in msg
    assert "rounds R differs" in msg and str(runs["odd"]) in msg
    with pytest.raises(IncomparableRunsError, match="seeds differ between algorithms"):
        compare([runs["fedavg", 42], runs["random", 7]], tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "flip.analysis.compare", *map(str, dirs), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "not comparable" in proc.stderr
    assert not (tmp_path / "index.html").exists()


def test_wandb_offline_run_gives_the_same_table(runs, tmp_path):
    """The random seed-42 run logged to W&B offline: with its summary.json and rounds.csv
    gone, flip.analysis.compare reads the .wandb log and writes the same numbers."""
    wandb_dir = runs["random", 42] / "wandb"
    assert len(list(wandb_dir.glob("offline-run-*/run-*.wandb"))) == 1
    copy = tmp_path / "random_42_wandb_only"
    shutil.copytree(runs["random", 42], copy)
    (copy / "summary.json").unlink()
    (copy / "rounds.csv").unlink()
    (copy / "config.yaml").unlink()
    base = [runs["fedavg", 42], runs["fedavg", 7], runs["random", 7]]
    from_files = compare([*base, runs["random", 42]], tmp_path / "a", target=0.2)
    from_wandb = compare([*base, copy], tmp_path / "b", target=0.2)
    assert from_files == from_wandb
    assert (tmp_path / "a" / "comparison.md").read_text() == (
        tmp_path / "b" / "comparison.md"
    ).read_text()
    assert "wandb" in (tmp_path / "b" / "index.html").read_text()


def test_each_run_logs_its_own_wandb_run(runs):
    """Two runs in one process (as a Hydra multirun's jobs): each gets its own W&B run with
    group = experiment and job_type = algorithm, holding its own rounds."""
    for seed in (42, 7):
        (file,) = (runs["random", seed] / "wandb").glob("offline-run-*/run-*.wandb")
        run = read_offline_run(file)
        assert (run["group"], run["job_type"]) == ("default", "random")
        assert run["config"]["seed"] == seed and run["summary"]["seed"] == seed
        assert [r["round"] for r in run["history"]] == [1, 2]
        with (runs["random", seed] / "rounds.csv").open() as f:
            acc = [float(r["global/acc1"]) for r in csv.DictReader(f)]
        assert [r["global/acc1"] for r in run["history"]] == acc
