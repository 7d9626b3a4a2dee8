"""Every config composes and builds its objects; experiment headers carry their command."""

import pytest
from compose import CONFIGS, compose_cfg
from hydra.utils import instantiate

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
GROUPS = {
    g: sorted(p.stem for p in (CONFIGS / g).glob("*.yaml"))
    for g in ("data", "partition", "model", "algorithm", "trainer", "logger", "debug")
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_states_its_command(name, tmp_path):
    cfg = compose_cfg([f"experiment={name}"], tmp_path)
    assert cfg.experiment_name == name
    instantiate(cfg.algorithm, _convert_="all")
    instantiate(cfg.model.net, in_channels=3, num_classes=10)
    header = (CONFIGS / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
    assert f"experiment={name}" in header


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}"], tmp_path)
    assert cfg.output_dir == str(tmp_path)


def test_paper_settings_of_cifar100_experiments(tmp_path):
    for name, model in (("cifar100_twocnn", "twocnn"), ("cifar100_resnet18", "resnet18")):
        cfg = compose_cfg([f"experiment={name}", "algorithm=autoflip"], tmp_path)
        assert cfg.model.name == model and cfg.data.name == "cifar100"
        assert (cfg.federation.num_clients, cfg.federation.rounds, cfg.federation.local_epochs) == (
            20,
            200,
            5,
        )
        assert cfg.data.batch_size == 350 and cfg.client.lr == 3e-4 and cfg.client.lr_decay == 0.99
        assert cfg.federation.server_optimizer.momentum == 0.9
        assert cfg.partition.name == "dirichlet" and cfg.partition.alpha == 1.0
        assert cfg.algorithm.threshold == 0.3
        assert (cfg.exploration.epochs, cfg.exploration.patience) == (150, 40)
    assert compose_cfg(["experiment=cifar100_twocnn"], tmp_path).model.net.hidden_size == 128
