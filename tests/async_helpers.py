"""Small real federations on the simulated clock (tiny MNIST, TwoCNN, CPU trainer): the
synchronous :class:`Federation` or, for an asynchronous algorithm, the asynchronous engine."""

from __future__ import annotations

from pathlib import Path

import torch
from fixtures_data import write_tiny_mnist
from hydra.utils import instantiate

from flip.data import FederatedDataModule
from flip.devices import build_devices
from flip.federation import Federation
from flip.federation.async_engine import AsyncFederation
from flip.models import TwoCNN, init_weights
from flip.params import AsyncParams, ClientParams, FederationParams
from flip.train import quiet_lightning

TRAINER = {
    "_target_": "lightning.Trainer", "_partial_": True, "accelerator": "cpu", "devices": 1,
    "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
    "enable_model_summary": False,
}


def tiny_run(
    tmp_path: Path,
    algorithm,
    *,
    num_clients: int = 4,
    participation: float = 1.0,
    rounds: int = 3,
    local_steps: int | None = 2,
    devices: dict | None = None,
    asynchronous: AsyncParams | None = None,
    val_fraction: float = 0.0,
    eval_every: int = 1000,
    seed: int = 0,
    hidden: int = 4,
    partition: str = "iid",
    checkpointer=None,
    recorder=None,
):
    """A federation over ``num_clients`` clients of a tiny MNIST (10 classes × 20 train and 4
    test images; IID: equal n_k), TwoCNN with ``hidden`` channels, Adam clients (lr 1e-3),
    server SGD(lr=1), batches of 16, ``local_steps`` mini-batches per update, on ``devices``
    (a ``devices`` config node; default preset without). Asynchronous algorithms get
    :class:`AsyncFederation` with ``asynchronous``."""
    quiet_lightning()
    root = write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)
    dm = FederatedDataModule(
        "mnist", root=str(root), download=False, num_clients=num_clients, partition=partition,
        batch_size=16, seed=seed, val_fraction=val_fraction,
    )
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(seed)
    net = init_weights(TwoCNN(1, 10, hidden))
    kwargs = dict(
        trainer=instantiate(TRAINER),
        params=FederationParams(num_clients, participation, rounds, 1, eval_every=eval_every,
                                server_optimizer={"_target_": "torch.optim.SGD", "lr": 1.0},
                                local_steps=local_steps),
        client=ClientParams(1e-3, optimizer={"_target_": "torch.optim.Adam"}),
        seed=seed, progress=False, devices=build_devices(devices or {}, num_clients),
        checkpointer=checkpointer, recorder=recorder,
    )
    if getattr(algorithm, "asynchronous", False):
        return AsyncFederation(net, dm, algorithm,
                               asynchronous=asynchronous or AsyncParams(max_aggregations=rounds),
                               **kwargs)
    return Federation(net, dm, algorithm, **kwargs)


def params_of(fed) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in fed.net.named_parameters()}
