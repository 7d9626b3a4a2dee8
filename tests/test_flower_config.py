"""Bad input for engine=flower: a missing extra and impossible resources stop the run with a
``ConfigError`` naming the field, before any data is read (the data root here does not exist:
reading it would raise ``DataNotFoundError`` instead)."""

import importlib.util

import pytest
import torch
from compose import compose_cfg

from flip.engines.flower.executor import machine_cpus
from flip.errors import ConfigError
from flip.train import train

NO_DATA = ["data.root=/nonexistent/flip-data", "data.download=false",
           "data.debian_dir=/nonexistent/debian", "logger=none", "progress=false"]


def test_missing_extra_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flwr" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[flower\]'") as err:
        train(compose_cfg([*NO_DATA, "engine=flower"], tmp_path))
    assert err.value.field == "engine"


@pytest.mark.parametrize(("field", "value"), [
    ("num_cpus", machine_cpus() + 1),
    ("num_gpus", torch.cuda.device_count() + 1),
    ("num_cpus", 0.5),
])
def test_resources_larger_than_the_machine_stop_before_round_1(field, value, tmp_path):
    pytest.importorskip("flwr")
    pytest.importorskip("ray")
    cfg = compose_cfg([*NO_DATA, "engine=flower", f"engine.client_resources.{field}={value}"],
                      tmp_path)
    with pytest.raises(ConfigError, match=f"engine.client_resources.{field}") as err:
        train(cfg)
    assert err.value.field == f"engine.client_resources.{field}"
    assert not (tmp_path / "rounds.csv").exists()


def test_unknown_backend_and_resource_keys(tmp_path):
    pytest.importorskip("flwr")
    for override, field in [("engine.backend=spark", "engine.backend"),
                            ("+engine.client_resources.memory=4", "engine.client_resources.memory"),
                            ("engine.num_supernodes=0", "engine.num_supernodes")]:
        with pytest.raises(ConfigError) as err:
            train(compose_cfg([*NO_DATA, "engine=flower", override], tmp_path))
        assert err.value.field == field
