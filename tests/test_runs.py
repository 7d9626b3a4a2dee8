"""Real runs: Debian's Fashion-MNIST through `python -m flip`, Tp = 0 ≡ FedAvg, CIFAR-100 smoke."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compose import compose_cfg
from fixtures_data import write_tiny_cifar100

from flip.train import train

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist"
)


def read_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "rounds.csv").open() as f:
        return list(csv.DictReader(f))


@needs_fmnist
def test_autoflip_cli_on_fashion_mnist(tmp_path):
    """`python -m flip` runs AutoFLIP on real Fashion-MNIST and writes every artifact."""
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flip",
            "debug=smoke",
            "algorithm=autoflip",
            f"data.root={tmp_path}",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for name in (
        "config.yaml",
        "partition.json",
        "class_histogram.csv",
        "class_histogram.png",
        "rounds.csv",
        "summary.json",
        "guidance.pt",
        "mask.pt",
        "model.pt",
    ):
        assert (run / name).is_file(), name
    rows = read_rows(run)
    assert [r["round"] for r in rows] == ["1", "2"]
    summary = json.loads((run / "summary.json").read_text())
    cost = summary["cost"]
    assert summary["algorithm"] == "autoflip" and summary["rounds_completed"] == 2
    assert 0.1 < summary["final"]["global/acc1"] <= 1.0
    assert cost["density"] < 0.7  # Tp = 0.3 of the weights at least, plus removed units
    assert cost["flops_per_sample"] < cost["flops_per_sample_dense"] == 9527488
    assert cost["train_flops_total"] == cost["train_flops_rounds"] + cost["train_flops_exploration"]
    assert cost["bytes_exploration"] == 4 * 2 * 4 * 1663370  # 4 explorers, model down + D_k up
    assert float(rows[-1]["cost/gb_cum"]) == pytest.approx(cost["gb_total"])
    mask = torch.load(run / "mask.pt")
    guidance = torch.load(run / "guidance.pt")
    assert set(mask["masks"]) == set(guidance) and 0.0 < mask["tau"] < 1.0
    assert all(0.0 <= float(g.min()) and float(g.max()) <= 1.0 for g in guidance.values())
    model = torch.load(run / "model.pt")  # masked entries are exactly zero after the rounds
    for name, m in mask["masks"].items():
        assert not model[name][~m].any(), name
        if name.endswith("weight"):  # kept weights live (biases start at 0 and may stay so)
            assert model[name][m].count_nonzero() > 0.99 * int(m.sum()), name


METRIC_COLUMNS = (
    "train/loss",
    "global/acc1",
    "global/loss",
    "local/acc1_weighted",
    "local/loss_weighted",
    "cost/flops_train_round",
    "cost/bytes_up_round",
    "model/nonzero_params",
)


@needs_fmnist
def test_tp_zero_autoflip_rounds_equal_fedavg(tmp_path):
    """ALGORITHMS.md §2.3: with Tp = 0 AutoFLIP prunes nothing and its rounds are FedAvg's,
    number for number, although its exploration trained clients first."""
    common = [
        "debug=smoke",
        f"data.root={tmp_path}",
        "federation.rounds=3",
        "federation.participation=0.75",
    ]
    fedavg = train(compose_cfg([*common, "algorithm=fedavg"], tmp_path / "fedavg"))
    autoflip = train(compose_cfg([*common, "algorithm=autoflip", "pruning.threshold=0.0"],
                                 tmp_path / "autoflip"))
    assert autoflip["cost"]["train_flops_exploration"] > 0 and autoflip["cost"]["density"] == 1.0
    a, b = read_rows(tmp_path / "fedavg"), read_rows(tmp_path / "autoflip")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for col in METRIC_COLUMNS:
            assert ra[col] == rb[col], (ra["round"], col)
    metrics = [k for k in fedavg["final"] if k.startswith(("global/", "local/"))]
    assert len(metrics) >= 10
    assert {k: fedavg["final"][k] for k in metrics} == {k: autoflip["final"][k] for k in metrics}


@needs_fmnist
def test_tp_positive_differs_from_fedavg(tmp_path):
    """The golden equality above is not vacuous: Tp = 0.3 changes the rounds."""
    common = ["debug=smoke", f"data.root={tmp_path}", "federation.rounds=1"]
    fedavg = train(compose_cfg([*common, "algorithm=fedavg"], tmp_path / "fedavg"))
    autoflip = train(compose_cfg([*common, "algorithm=autoflip"], tmp_path / "autoflip"))
    assert fedavg["final"]["global/loss"] != autoflip["final"]["global/loss"]
    assert autoflip["cost"]["bytes_rounds"] < fedavg["cost"]["bytes_rounds"]


@pytest.mark.parametrize("experiment", ["cifar100_twocnn", "cifar100_resnet18"])
def test_reproduce_cifar100_smoke(experiment, tmp_path):
    """`make reproduce-cifar100`: both experiments, 1 round on tiny CIFAR-100 pickles (with
    the client sampling of the paper's C = 0.05: one client a round)."""
    root = write_tiny_cifar100(tmp_path / "data", per_class_train=6, per_class_test=1)
    algorithms = [["algorithm=fedavg"], ["algorithm=autoflip"]]
    if experiment == "cifar100_twocnn":  # the baselines of `make reproduce-cifar100` too
        algorithms += [
            ["algorithm=prunefl", "prunefl.initial.passes=10", "prunefl.initial.interval=5"],
            ["algorithm=eflprune"],
            ["algorithm=random", "random_pruning.density=0.5"],
        ]
    for algorithm in algorithms:
        cfg = compose_cfg(
            [
                f"experiment={experiment}",
                *algorithm,
                "logger=none",
                "progress=false",
                f"data.root={root}",
                "data.download=false",
                "data.batch_size=32",
                "federation.rounds=1",
                "federation.local_epochs=1",
                "federation.num_clients=4",
                "partition.min_samples=5",
                "exploration.epochs=1",
                "exploration.client_fraction=0.5",
            ],
            tmp_path / algorithm[0].split("=")[1],
        )
        summary = train(cfg)
        assert summary["rounds_completed"] == 1 and summary["data"]["dataset"] == "cifar100"
        assert 0.0 <= summary["final"]["global/acc1"] <= 1.0
    assert (tmp_path / "autoflip" / "mask.pt").is_file()
