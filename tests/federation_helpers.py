"""A small real federation for algorithm tests: tiny MNIST files (IDX), TwoCNN, CPU trainer."""

from __future__ import annotations

from pathlib import Path

import torch
from fixtures_data import write_tiny_mnist
from hydra.utils import instantiate

from flip.data import FederatedDataModule
from flip.federation import Federation
from flip.models import TwoCNN, init_weights
from flip.params import ClientParams, FederationParams
from flip.train import quiet_lightning


def tiny_federation(
    tmp_path: Path,
    algorithm,
    *,
    rounds: int = 2,
    momentum: float = 0.0,
    hidden: int = 4,
    participation: float = 0.5,
    seed: int = 0,
) -> Federation:
    """A Federation over 4 clients of a tiny MNIST (10 classes × 20 train images), TwoCNN with
    ``hidden`` channels, Adam clients, server SGD(lr=1, momentum=dampening=``momentum``)."""
    quiet_lightning()
    root = write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)
    dm = FederatedDataModule(
        "mnist", root=str(root), download=False, num_clients=4, partition="iid",
        batch_size=16, seed=seed,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(seed)
    net = init_weights(TwoCNN(1, 10, hidden))
    trainer = instantiate(
        {
            "_target_": "lightning.Trainer",
            "_partial_": True,
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
    )
    server = {"_target_": "torch.optim.SGD", "lr": 1.0, "momentum": momentum,
              "dampening": momentum}
    return Federation(
        net,
        dm,
        algorithm,
        trainer=trainer,
        params=FederationParams(4, participation, rounds, 1, eval_every=rounds,
                                server_optimizer=server),
        client=ClientParams(1e-3, optimizer={"_target_": "torch.optim.Adam"}),
        seed=seed,
        progress=False,
    )
