"""Round overhead: flip's FedAvg round against a plain PyTorch loop doing the same steps.

Both sides train the same sampled clients from the same global weights, with the same data
loaders (same seeds, so the same batches), a fresh Adam per client and the same number of local
epochs, then average the weights. flip adds what a researcher gets from it: a Lightning Trainer
per client, the mask hooks, the server optimizer step and the cost accounting. Evaluation is
left out of both. The two are interleaved round by round and compared as the ratio of their
median times, measured in one run (these machines are noisy).

    python benchmarks/round_overhead.py [--rounds 10] [--out benchmarks/results/round_overhead.json]

Target (issue #2): flip's time <= 1.10 × the plain loop's on CPU.
"""

import argparse
import copy
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
from flip.federation.seeding import TRAINING, derive_seed, sample_clients
from flip.models import TwoCNN, init_weights
from flip.train import quiet_lightning

TARGET = 1.10


def plain_round(net, dm, clients, r, seed, epochs, lr):
    """The same round in plain PyTorch: local Adam epochs per client, then FedAvg."""
    states, sizes = [], []
    for k in clients:
        local = copy.deepcopy(net).train()
        opt = torch.optim.Adam(local.parameters(), lr=lr)
        loader = dm.client_train_dataloader(k, derive_seed(seed, TRAINING, r, k))
        torch.manual_seed(derive_seed(seed, TRAINING, r, k))
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(local(x), y).backward()
                opt.step()
        states.append(local.state_dict())
        sizes.append(dm.client_num_train(k))
    total = sum(sizes)
    with torch.no_grad():
        for name, p in net.state_dict().items():
            p.copy_(sum(s[name] * (n / total) for s, n in zip(states, sizes, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--train-subset", type=float, default=0.5)
    ap.add_argument("--out", default="benchmarks/results/round_overhead.json")
    args = ap.parse_args()
    quiet_lightning()
    seed, lr = 0, 3e-4
    dm = FederatedDataModule("fmnist", num_clients=20, partition="patho", batch_size=350,
                             train_subset=args.train_subset, seed=seed)
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(seed)
    net = init_weights(TwoCNN(1, 10, 32))
    plain_net = copy.deepcopy(net)
    trainer = instantiate({"_target_": "lightning.Trainer", "_partial_": True, "accelerator": "cpu",
                           "devices": 1, "logger": False, "enable_checkpointing": False,
                           "enable_progress_bar": False, "enable_model_summary": False})
    fed = Federation(net, dm, FedAvg(), trainer=trainer,
                     client_optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr), lr=lr,
                     server_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                     rounds=10**6, local_epochs=args.local_epochs, participation=0.25,
                     eval_every=10**6, seed=seed, progress=False)
    fed.setup()
    flip_s, plain_s = [], []
    for r in range(1, args.rounds + 2):  # round 1 warms both up and is not counted
        clients = sample_clients(seed, r, dm.num_clients, 0.25)
        t = time.perf_counter()
        fed.run_round(r)
        t_flip = time.perf_counter() - t
        t = time.perf_counter()
        plain_round(plain_net, dm, clients, r, seed, args.local_epochs, lr)
        t_plain = time.perf_counter() - t
        if r > 1:
            flip_s.append(t_flip)
            plain_s.append(t_plain)
    # Clients' updates are bit-identical; the aggregates differ by float rounding only (flip
    # steps on the pseudo-gradient θ − Σ w(θ − θ_k), the loop averages Σ w θ_k).
    diff = max(float((a - b).abs().max()) for a, b in
               zip(fed.net.state_dict().values(), plain_net.state_dict().values(), strict=True))
    ratio = statistics.median(flip_s) / statistics.median(plain_s)
    result = {
        "benchmark": "round_overhead",
        "device": fed.device.type,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setting": {"data": "fmnist", "clients_per_round": 5, "local_epochs": args.local_epochs,
                    "batch_size": 350, "train_subset": args.train_subset, "model": "TwoCNN h32"},
        "rounds_timed": args.rounds,
        "flip_round_s": flip_s,
        "plain_round_s": plain_s,
        "flip_median_s": statistics.median(flip_s),
        "plain_median_s": statistics.median(plain_s),
        "ratio": ratio,
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "max_abs_weight_diff_after_rounds": diff,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"flip {result['flip_median_s']:.3f} s/round, plain {result['plain_median_s']:.3f} "
          f"s/round, ratio {ratio:.3f} (target <= {TARGET}); max weight difference {diff:.1e}; "
          f"wrote {out}")


if __name__ == "__main__":
    main()
