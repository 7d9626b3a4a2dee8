"""Round overhead: flip's FedAvg round against the loop a reader would write by hand.

The reference is plain PyTorch, written without Lightning and without flip's data module: the
Fashion-MNIST training images preprocessed once with torchvision (to float, normalise), each
sampled client's partition indices shuffled per epoch by a ``DataLoader(shuffle=True)`` over
the indices with a generator seeded by the client's seed, batches gathered by indexing, a
fresh Adam per client, E local epochs, then the sample-weighted average of the clients'
weights. flip runs the same round through ``Federation.run_round`` (the executor seam, a
Lightning Trainer per client, the mask hooks, the server optimizer step, the cost ledger);
evaluation is left out of both. Every round both start from the same global weights, and the
benchmark checks that they end within float rounding of each other (the clients' updates
are bit-identical; the aggregates differ in the last bits because flip steps on the
pseudo-gradient θ − Σ w(θ − θ_k) and the loop averages Σ w θ_k). The two are interleaved
round by round and compared as the ratio of their median times, measured in one run (these
machines are noisy).

    python benchmarks/round_overhead.py [--rounds 10] [--out benchmarks/results/round_overhead.json]

Target (issue 10): flip's time <= 1.05 × the hand-written loop's.
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
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from flip.algorithms import FedAvg
from flip.data import FederatedDataModule, load_dataset
from flip.federation import Federation
from flip.federation.seeding import client_seed, sample_clients
from flip.models import TwoCNN, init_weights
from flip.params import ClientParams, FederationParams
from flip.train import quiet_lightning

TARGET = 1.05
MAX_DIFF = 1e-5  # float rounding of the aggregate after one round


def hand_written_round(net, x_all, y_all, parts, clients, r, seed, epochs, lr, batch_size):
    """One FedAvg round in plain PyTorch; returns the averaged state dict."""
    states, sizes = [], []
    for k in clients:
        idx = parts[k]
        local = copy.deepcopy(net).train()
        opt = torch.optim.Adam(local.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(client_seed(seed, r, k))
        batches = DataLoader(idx, batch_size=batch_size, shuffle=True, generator=gen)
        for _ in range(epochs):
            for b in batches:  # a batch of sample indices
                opt.zero_grad()
                torch.nn.functional.cross_entropy(local(x_all[b]), y_all[b]).backward()
                opt.step()
        states.append(local.state_dict())
        sizes.append(len(idx))
    total = sum(sizes)
    return {name: sum(s[name] * (n / total) for s, n in zip(states, sizes, strict=True))
            for name in states[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--train-subset", type=float, default=0.5)
    ap.add_argument("--out", default="benchmarks/results/round_overhead.json")
    args = ap.parse_args()
    quiet_lightning()
    seed, lr, batch_size, participation = 0, 3e-4, 350, 0.25
    dm = FederatedDataModule("fmnist", num_clients=20, partition="patho", batch_size=batch_size,
                             train_subset=args.train_subset, seed=seed)
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(seed)
    net = init_weights(TwoCNN(1, 10, 32))
    trainer = instantiate({"_target_": "lightning.Trainer", "_partial_": True, "accelerator": "cpu",
                           "devices": 1, "logger": False, "enable_checkpointing": False,
                           "enable_progress_bar": False, "enable_model_summary": False})
    fed = Federation(
        net, dm, FedAvg(), trainer=trainer,
        params=FederationParams(20, participation, 10**6, args.local_epochs, eval_every=10**6),
        client=ClientParams(lr, optimizer={"_target_": "torch.optim.Adam"}), seed=seed,
        progress=False,
    )
    fed.setup()

    # the reader's own data: raw images preprocessed once with torchvision, the partition
    train, _ = load_dataset("fmnist", "data", False)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([float(train.mean[0])], [float(train.std[0])])])
    x_all, y_all = norm(train.images), train.labels
    parts = [torch.as_tensor(c["train"]) for c in dm.partition_indices]

    flip_s, plain_s, diffs = [], [], []
    for r in range(1, args.rounds + 2):  # round 1 warms both up and is not counted
        clients = sample_clients(seed, r, dm.num_clients, participation)
        start = copy.deepcopy(fed.net)
        t = time.perf_counter()
        fed.run_round(r)
        t_flip = time.perf_counter() - t
        t = time.perf_counter()
        avg = hand_written_round(start, x_all, y_all, parts, clients, r, seed,
                                 args.local_epochs, lr, batch_size)
        t_plain = time.perf_counter() - t
        diffs.append(max(float((fed.net.state_dict()[n] - avg[n]).abs().max()) for n in avg))
        if r > 1:
            flip_s.append(t_flip)
            plain_s.append(t_plain)
    ratio = statistics.median(flip_s) / statistics.median(plain_s)
    result = {
        "benchmark": "round_overhead",
        "device": fed.device.type,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setting": {"data": "fmnist", "clients_per_round": fed.params.clients_per_round,
                    "local_epochs": args.local_epochs, "batch_size": batch_size,
                    "train_subset": args.train_subset, "model": "TwoCNN h32"},
        "reference": "hand-written PyTorch loop (no Lightning, no flip data module)",
        "rounds_timed": args.rounds,
        "flip_round_s": flip_s,
        "plain_round_s": plain_s,
        "flip_median_s": statistics.median(flip_s),
        "plain_median_s": statistics.median(plain_s),
        "ratio": ratio,
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "max_abs_weight_diff_per_round": max(diffs),
    }
    if max(diffs) > MAX_DIFF:
        raise SystemExit(f"flip and the hand-written loop disagree by {max(diffs):.2e} after a "
                         f"round (> {MAX_DIFF}): not the same computation")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"flip {result['flip_median_s']:.3f} s/round, hand-written {result['plain_median_s']:.3f}"
          f" s/round, ratio {ratio:.3f} (target <= {TARGET}); largest weight difference after a "
          f"round {max(diffs):.1e}; wrote {out}")


if __name__ == "__main__":
    main()
