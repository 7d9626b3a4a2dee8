"""Data path benchmark: DataLoaders vs batches from tensors on the device (``data.device_data``).

For each path (``false``: DataLoaders, ``true``: :class:`flip.data.device_batches.DeviceBatches`)
on real Fashion-MNIST (pathological, K = 20, B = 350, as ``experiment=fmnist_patho``):

- ``data_epoch_s``: one epoch over every client's training loader, each batch moved to the
  device (what Lightning does) and touched, no model: the data path alone;
- ``round_s``: FedAvg rounds through :class:`flip.federation.Federation` (TwoCNN h32, 5 clients,
  2 local epochs, evaluation on every client's local test set and the global test set).

The first round of each path warms up and is not counted; the paths alternate round by round.
Both paths' global models are compared at the end (``max_abs_weight_diff``: 0 on the CPU).

    python benchmarks/data_path.py                 # CPU
    python benchmarks/data_path.py --device cuda   # GPU (trainer accelerator gpu)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from flip.algorithms import FedAvg
from flip.data import FederatedDataModule
from flip.federation import Federation
from flip.models import TwoCNN, init_weights
from flip.params import ClientParams, FederationParams
from flip.train import quiet_lightning


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_epoch(dm, device: torch.device, seed: int) -> float:
    """Seconds for one epoch of every client's training batches, moved to ``device``."""
    sync(device)
    t = time.perf_counter()
    total = torch.zeros((), device=device)
    for k in range(dm.num_clients):
        for x, y in dm.client_train_dataloader(k, seed + k):
            total += x.to(device, non_blocking=True).sum() + y.to(device).sum()
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-subset", type=float, default=0.5)
    ap.add_argument("--out", default="benchmarks/results/data_path.json")
    args = ap.parse_args()
    quiet_lightning()
    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    trainer = instantiate({"_target_": "lightning.Trainer", "_partial_": True,
                           "accelerator": accel, "devices": 1, "logger": False,
                           "enable_checkpointing": False, "enable_progress_bar": False,
                           "enable_model_summary": False})
    feds, place_s, epoch_s, round_s = {}, {}, {}, {}
    for mode in ("false", "true"):
        dm = FederatedDataModule("fmnist", num_clients=20, partition="patho", batch_size=350,
                                 eval_batch_size=350, train_subset=args.train_subset, seed=0,
                                 device_data=mode)
        dm.prepare_data()
        dm.setup()
        torch.manual_seed(0)
        fed = Federation(init_weights(TwoCNN(1, 10, 32)), dm, FedAvg(), trainer=trainer,
                         params=FederationParams(20, 0.25, args.rounds + 1, local_epochs=2),
                         client=ClientParams(3e-4), seed=0, progress=False)
        t = time.perf_counter()
        assert dm.on_device == (mode == "true")  # places the splits (timed)
        sync(fed.device)
        place_s[mode] = time.perf_counter() - t
        fed.setup()
        epoch_s[mode] = [data_epoch(dm, fed.device, s) for s in range(3)]
        feds[mode], round_s[mode] = fed, []
    for r in range(1, args.rounds + 2):
        for mode, fed in feds.items():
            sync(fed.device)
            t = time.perf_counter()
            fed.run_round(r)
            sync(fed.device)
            if r > 1:
                round_s[mode].append(time.perf_counter() - t)
    diff = max(float((a - b).abs().max()) for a, b in zip(
        feds["false"].net.state_dict().values(), feds["true"].net.state_dict().values(),
        strict=True))
    dev = feds["true"].device
    result = {
        "benchmark": "data_path",
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setting": {"data": "fmnist", "partition": "patho", "clients": 20, "batch_size": 350,
                    "train_subset": args.train_subset, "clients_per_round": 5,
                    "local_epochs": 2, "model": "TwoCNN h32"},
        "place_s": place_s,
        "data_epoch_s": epoch_s,
        "round_s": round_s,
        "data_epoch_median_s": {m: statistics.median(v) for m, v in epoch_s.items()},
        "round_median_s": {m: statistics.median(v) for m, v in round_s.items()},
        "max_abs_weight_diff": diff,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("device", "place_s", "data_epoch_median_s",
                                               "round_median_s", "max_abs_weight_diff")}))


if __name__ == "__main__":
    main()
