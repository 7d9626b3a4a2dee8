"""Every config composes and builds its objects; experiment headers carry their command."""

import pytest
import yaml
from compose import CONFIGS, compose_cfg
from hydra.utils import instantiate

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
GROUPS = {
    g: sorted(p.stem for p in (CONFIGS / g).glob("*.yaml"))
    for g in ("data", "partition", "model", "algorithm", "trainer", "logger", "debug", "devices")
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_states_its_command(name, tmp_path):
    cfg = compose_cfg([f"experiment={name}"], tmp_path)
    assert cfg.experiment_name == name
    instantiate(cfg.algorithm, _convert_="all")
    part = {k: v for k, v in cfg.partition.items() if k != "name"}
    dm = instantiate(cfg.data, num_clients=cfg.federation.num_clients,
                     partition=cfg.partition.name, seed=cfg.seed, _convert_="all", **part)
    net = instantiate(cfg.model.net, **dm.model_kwargs())
    assert net(dm.example_input(2)).shape == (2, dm.num_classes)
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
        assert cfg.federation.participation == 0.05  # released command: one client a round
        assert (cfg.data.resize, cfg.data.hflip, cfg.data.color_jitter) == (24, True, 0.5)
        assert cfg.algorithm.pruning.threshold == 0.3
        assert (cfg.exploration.epochs, cfg.exploration.patience) == (150, 40)
    assert compose_cfg(["experiment=cifar100_twocnn"], tmp_path).model.net.hidden_size == 128


PAPER = {  # experiment: (data, partition, model, C, explorer fraction, exploration epochs)
    "mnist_patho": ("mnist", "patho", "twocnn", 0.25, 1.0, 150),
    "cifar10_patho": ("cifar10", "patho", "twocnn", 0.25, 1.0, 150),
    "femnist": ("femnist", "natural", "femnist_cnn", 0.25, 1.0, 150),
    "shakespeare": ("shakespeare", "natural", "lstm", 0.016, 0.03, 100),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings_of_every_cell(name, tmp_path):
    """The released command's values (commands/command_paper) for the MNIST, CIFAR-10, FEMNIST
    and Shakespeare cells; every cell sweeps the algorithms that exist."""
    data, partition, model, c, explorers, epochs = PAPER[name]
    cfg = compose_cfg([f"experiment={name}", "algorithm=autoflip"], tmp_path)
    assert (cfg.data.name, cfg.partition.name, cfg.model.name) == (data, partition, model)
    fed = cfg.federation
    assert (fed.rounds, fed.local_epochs, fed.participation) == (200, 5, c)
    assert fed.server_optimizer.momentum == 0.9 and cfg.data.batch_size == 350
    assert cfg.client.lr == 3e-4 and cfg.client.lr_decay == 0.99
    assert cfg.algorithm.pruning.threshold == 0.3 and cfg.algorithm.pruning.structured
    ex = cfg.algorithm.exploration
    assert (ex["client_fraction"], ex["epochs"], ex["patience"]) == (explorers, epochs, 40)
    if partition == "patho":
        assert cfg.partition.classes_per_client == 2 and fed.num_clients == 20
        assert cfg.model.net.hidden_size == 32 and cfg.data.resize == 24
    else:
        assert cfg.data.train_fraction == 0.9 and cfg.data.split == "sample"
    sweep = yaml.safe_load((CONFIGS / "experiment" / f"{name}.yaml").read_text())["hydra"]
    assert sweep["sweeper"]["params"]["algorithm"] == "fedavg,autoflip,prunefl,eflprune"
    if name == "femnist":
        assert cfg.data.fraction == 0.0282 and cfg.model.net.hidden_size == 64
