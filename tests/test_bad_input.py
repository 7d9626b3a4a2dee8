"""Bad input gets a clear error naming the field and the accepted values, before training."""

import subprocess
import sys

import pytest
from compose import compose_cfg

from flip.errors import ConfigError, DataNotFoundError
from flip.train import train

SMALL = ["debug=smoke"]


@pytest.mark.parametrize(
    "override,field",
    [
        ("pruning.threshold=1.0", "pruning.threshold"),
        ("pruning.threshold=-0.1", "pruning.threshold"),
        ("partition=dirichlet partition.alpha=0", "partition.alpha"),
        ("partition=dirichlet partition.alpha=-1", "partition.alpha"),
        ("partition.classes_per_client=11", "partition.classes_per_client"),
        ("federation.num_clients=100000", "federation.num_clients"),
        ("data.name=svhn", "data.name"),
        ("federation.participation=0", "federation.participation"),
        ("client.lr_decay=1.5", "client.lr_decay"),
        ("exploration.epochs=0", "exploration.epochs"),
        ("pruning.compact=sometimes", "pruning.compact"),
        ("pruning.structured=1", "pruning.structured"),
    ],
)
def test_bad_value_names_field_and_nothing_trains(override, field, tmp_path):
    cfg = compose_cfg([*SMALL, "algorithm=autoflip", *override.split()], tmp_path)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        train(cfg)
    assert "accepted" in str(err.value)
    assert not (tmp_path / "rounds.csv").exists()


def test_missing_data_says_where_to_put_it(tmp_path):
    cfg = compose_cfg(
        [*SMALL, "data=cifar100", "data.download=false", f"data.root={tmp_path / 'nowhere'}"],
        tmp_path / "run",
    )
    with pytest.raises(DataNotFoundError, match="nowhere"):
        train(cfg)
    assert not (tmp_path / "run" / "rounds.csv").exists()


@pytest.mark.parametrize("group", ["model=vgg99", "data=svhn"])
def test_unknown_group_option_lists_the_available_ones(group, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flip", *SMALL, group, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    name = group.split("=")[0]
    assert f"Could not find '{name}/" in out.stderr and "Available options" in out.stderr
    assert not (tmp_path / "rounds.csv").exists()
