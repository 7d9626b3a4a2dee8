"""Whole runs on LEAF data (tiny files in LEAF's format): the femnist and shakespeare
experiments, natural partitions with K replaced by the number of users."""

import json

import pytest
import torch
import yaml
from compose import compose_cfg
from fixtures_leaf import write_tiny_femnist, write_tiny_shakespeare

from flip.errors import ConfigError, DataNotFoundError
from flip.train import train

FAST = ["logger=none", "progress=false", "federation.rounds=1", "federation.local_epochs=1",
        "exploration.epochs=1", "federation.eval_every=1"]


@pytest.mark.parametrize("algorithm", ["fedavg", "autoflip"])
def test_shakespeare_experiment_runs(algorithm, tmp_path):
    root = write_tiny_shakespeare(tmp_path / "leaf")
    out = tmp_path / algorithm
    cfg = compose_cfg(
        ["experiment=shakespeare", f"algorithm={algorithm}", *FAST, f"data.root={root}",
         "model.net.hidden_size=16", "federation.participation=0.5",
         "exploration.client_fraction=0.5"],
        out,
    )
    summary = train(cfg)
    assert summary["data"] == {"dataset": "shakespeare", "partition": "natural",
                               "num_clients": 2}  # HORATIO is too short for a test window
    assert yaml.safe_load((out / "config.yaml").read_text())["federation"]["num_clients"] == 2
    # hidden 16: 80 steps · (4·16·(8 + 16) + 4·16·(16 + 16)) + 16·80 for the output layer
    assert summary["cost"]["flops_per_sample_dense"] == 80 * (4 * 16 * 24 + 4 * 16 * 32) + 1280
    assert 0.0 <= summary["final"]["global/acc1"] <= 1.0
    partition = json.loads((out / "partition.json").read_text())
    assert [c["user"] for c in partition["clients"]] == ["HAMLET_HAMLET", "MACBETH_MACBETH"]
    if algorithm == "autoflip":
        assert summary["cost"]["exploration_clients"] == 1  # max(1, round(0.5 · 2))
        assert summary["cost"]["density"] < 0.75
        assert summary["cost"]["flops_per_sample"] < summary["cost"]["flops_per_sample_dense"]
        masks = torch.load(out / "mask.pt")["masks"]
        # unstructured pruning reaches the LSTM; no output unit is removed (its bias is kept)
        assert not masks["lstm.weight_hh_l0"].all() and masks["fc.bias"].all()


def test_femnist_experiment_runs(tmp_path):
    root = write_tiny_femnist(tmp_path / "leaf", sizes=(12, 7, 20, 9))
    cfg = compose_cfg(
        ["experiment=femnist", "algorithm=autoflip", *FAST, f"data.root={root}",
         "data.fraction=1.0", "model.net.hidden_size=4", "data.batch_size=8"],
        tmp_path / "run",
    )
    summary = train(cfg)
    assert summary["data"]["num_clients"] == 4 and summary["model"] == "femnist_cnn"
    assert summary["cost"]["density"] < 0.75
    assert (tmp_path / "run" / "class_histogram.png").is_file()


def test_corrupt_leaf_file_stops_before_training(tmp_path):
    root = write_tiny_shakespeare(tmp_path / "leaf")
    path = root / "all_data" / "all_data.json"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    cfg = compose_cfg(["experiment=shakespeare", *FAST, f"data.root={root}"], tmp_path / "run")
    with pytest.raises(DataNotFoundError, match=r"all_data\.json: not valid JSON"):
        train(cfg)
    assert not (tmp_path / "run" / "rounds.csv").exists()


def test_leaf_data_needs_the_natural_partition(tmp_path):
    fast = [o for o in FAST if not o.startswith("exploration.")]  # fedavg has no exploration
    cfg = compose_cfg(["data=femnist", *fast], tmp_path)  # train.yaml's partition is patho
    with pytest.raises(ConfigError, match=r"partition\.name='patho'.*natural"):
        train(cfg)
