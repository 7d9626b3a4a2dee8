"""Evaluation cost against the number of clients K (issue 10 item 9).

A round that evaluates scores the global model on the official test split and on every
client's local test set. Before the batched evaluation each client cost one Lightning
``Trainer.test`` call, so the evaluation's time grew with K. This benchmark trains FedAvg
rounds on the demo setting (real Fashion-MNIST, pathological 2 classes per client, 50% of the
training split, TwoCNN h32, E = 1, m = 5 clients a round) with K = 20 (C = 0.25) and K = 1000
(C = 0.005) and times each round's evaluation (validation, global test split and every local
test set: ``fed.executor.evaluate``) apart from its training: the evaluated images are the
same in total (the local test sets hold 20% of each client's data), so only the per-client
cost differs, while the training is not comparable (five clients of K = 1000 hold 50× fewer
samples than five of K = 20) and is reported only for context. Rounds of the two settings
alternate; the result is the ratio of their median evaluation times, measured in one run.

    python benchmarks/evaluation_scaling.py [--rounds 5] [--out FILE.json]

Target (issue 10): the K = 1000 round costs at most 1.2 × the K = 20 round.
"""

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

TARGET = 1.2


def federation(num_clients: int, participation: float, trainer) -> Federation:
    dm = FederatedDataModule("fmnist", num_clients=num_clients, partition="patho",
                             batch_size=350, eval_batch_size=350, train_subset=0.5, seed=42)
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(0)
    fed = Federation(
        init_weights(TwoCNN(1, 10, 32)), dm, FedAvg(), trainer=trainer,
        params=FederationParams(num_clients, participation, 10**6, 1, eval_every=10**6),
        client=ClientParams(3e-4), seed=0, progress=False,
    )
    fed.setup()
    return fed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/evaluation_scaling.json")
    args = ap.parse_args()
    quiet_lightning()
    trainer = instantiate({"_target_": "lightning.Trainer", "_partial_": True,
                           "accelerator": "auto", "devices": 1, "logger": False,
                           "enable_checkpointing": False, "enable_progress_bar": False,
                           "enable_model_summary": False})
    feds = {20: federation(20, 0.25, trainer), 1000: federation(1000, 0.005, trainer)}
    times: dict[int, list[float]] = {k: [] for k in feds}
    train: dict[int, list[float]] = {k: [] for k in feds}
    for r in range(1, args.rounds + 2):  # round 1 warms up and is not counted
        for k, fed in feds.items():
            t = time.perf_counter()
            fed.run_round(r)
            t_eval = time.perf_counter()
            fed.executor.evaluate(fed, fed.net)
            if r > 1:
                train[k].append(t_eval - t)
                times[k].append(time.perf_counter() - t_eval)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median[1000] / median[20]
    result = {
        "benchmark": "evaluation_scaling",
        "device": feds[20].device.type,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setting": {"data": "fmnist", "partition": "patho 2", "train_subset": 0.5,
                    "model": "TwoCNN h32", "local_epochs": 1, "clients_per_round": 5,
                    "evaluation": "every round: validation, global test split, every local "
                                  "test set (timed apart from the round's training)"},
        "local_test_samples": {k: sum(f.dm.client_num_test(c) for c in range(k))
                               for k, f in feds.items()},
        "evaluation_s": {str(k): v for k, v in times.items()},
        "median_evaluation_s": {str(k): v for k, v in median.items()},
        "training_round_s": {str(k): v for k, v in train.items()},
        "ratio_k1000_over_k20": ratio,
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"evaluation of a round: K=20 {median[20]:.2f} s, K=1000 {median[1000]:.2f} s, ratio "
          f"{ratio:.3f} (target <= {TARGET}); wrote {out}")


if __name__ == "__main__":
    main()
