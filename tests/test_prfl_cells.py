"""What PR-FL's paper cells need (ASYNC.md §4): FEMNIST writers grouped into clients as PR-FL
grouped them, VGG-11 without batch norm, and the experiment files composing."""

import pytest
import torch
from compose import compose_cfg
from fixtures_leaf import write_tiny_femnist

from flip.data import LeafDataModule
from flip.errors import ConfigError
from flip.models import vgg11


def test_writers_grouped_into_clients_as_prfl_did(tmp_path):
    """7 writers into 3 clients: ⌊7/3⌋ = 2 writers each, the last client the other 3 (PR-FL:
    193 writers, 10 clients of 19, the last 22). Each client's data is its writers' data."""
    root = write_tiny_femnist(tmp_path, sizes=(12, 7, 20, 5, 9, 4, 6))
    alone = LeafDataModule("femnist", str(root), batch_size=4, seed=0)
    alone.setup()
    grouped = LeafDataModule("femnist", str(root), batch_size=4, seed=0, user_groups=3)
    grouped.setup()
    users = alone.users
    assert grouped.num_clients == 3
    assert grouped.users == ["+".join(users[0:2]), "+".join(users[2:4]), "+".join(users[4:7])]
    bounds = [(0, 2), (2, 4), (4, 7)]
    for k, (a, b) in enumerate(bounds):
        assert grouped.client_num_train(k) == sum(alone.client_num_train(u) for u in range(a, b))
        assert grouped.client_num_test(k) == sum(alone.client_num_test(u) for u in range(a, b))
        ys = torch.cat([y for _, y in grouped.client_test_dataloader(k)])
        want = torch.cat([y for u in range(a, b) for _, y in alone.client_test_dataloader(u)])
        assert torch.equal(ys, want)
    too_many = LeafDataModule("femnist", str(root), batch_size=4, seed=0, user_groups=8)
    with pytest.raises(ConfigError, match=r"data\.user_groups=8.*1\.\.7"):
        too_many.setup()


def test_vgg11_without_batch_norm():
    """PR-FL's CIFAR-10 VGG-11: 8 convolutions (64, M, 128, M, 256, 256, M, 512, 512, M, 512,
    512, M), no batch norm, classifier 512 → 512 → 512 → 10."""
    net = vgg11(3, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512),
                                                                   (512, 10)]


@pytest.mark.parametrize("cell,data,model,preset", [
    ("prfl_fmnist", "fmnist", "twocnn", "prfl10"),
    ("prfl_femnist", "femnist", "femnist_cnn", "prfl10"),
    ("prfl_cifar10", "cifar10", "vgg11", "prfl10"),
])
def test_experiment_files_compose(cell, data, model, preset):
    for algorithm in ("prfl", "heterofl", "fedasync", "fedbuff", "fedavg"):
        cfg = compose_cfg([f"experiment={cell}", f"algorithm={algorithm}"])
        assert (cfg.data.name, cfg.model.name, cfg.devices.preset) == (data, model, preset)
        assert cfg.federation.num_clients == 10 and cfg["async"].max_time_s > 0
