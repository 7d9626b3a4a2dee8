"""Pruning speed-up: AutoFLIP's rounds (Tp = 0.3, compacted) against FedAvg's, in wall time and
in training FLOPs, on TwoCNN and ResNet-18 (Fashion-MNIST; 32×32 for ResNet-18).

Each model runs ``python -m flip``'s ``train(cfg)`` for FedAvg and for AutoFLIP from the same
config (same clients, same data, same local epochs; AutoFLIP with a one-epoch exploration on a
tenth of the clients and its structured mask compacted), ``--repeats`` times alternately. The
time of a round is ``time/round_s`` of ``timings.csv``; the first round (warm-up) and the last
(it evaluates) are left out, and the medians are compared. The FLOPs are the runs' own
``cost/flops_train_round`` (fvcore, the unstructured density counted inside the compact model).
The wall-time cut is set against two FLOPs cuts: the counted one, and the structured one alone
(the compact network's dense FLOPs), which is all a dense kernel can turn into time.

    python benchmarks/pruning_speedup.py [--rounds 5] [--repeats 2] [--models twocnn resnet18]

ResNet-18 trains on Fashion-MNIST resized to 32×32 (CIFAR-100 does not reach these machines, and
AutoFLIP's mask needs a real exploration: on random pixels G is flat and nearly every unit goes).
Target (issue 3): on a GPU the wall-time cut is at least 70% of the FLOPs cut.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from flip.train import quiet_lightning, train

ROOT = Path(__file__).resolve().parents[1]

TARGET = 0.70
COMMON = [
    "logger=none", "progress=false", "checkpoint.every=0", "seed=0",
    "federation.eval_every=1000", "pruning.threshold=0.3", "pruning.compact=true",
    "exploration.epochs=1", "exploration.patience=1", "exploration.client_fraction=0.1",
    "federation.local_epochs=1",
]
MODELS = {
    "twocnn": ["data=fmnist", "model=twocnn", "partition=patho", "federation.num_clients=20",
               "federation.participation=0.2", "data.train_subset=0.25"],
    "resnet18": ["data=fmnist", "data.resize=32", "model=resnet18", "partition=patho",
                 "federation.num_clients=20", "federation.participation=0.1",
                 "data.batch_size=64", "data.train_subset=0.1"],
}


def run(model: str, algorithm: str, rounds: int, out: Path, extra: list[str]) -> dict:
    """One run; returns its per-round times, FLOPs and the summary."""
    overrides = [*COMMON, *MODELS[model], *extra, f"algorithm={algorithm}",
                 f"federation.rounds={rounds}", f"output_dir={out}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg)
    with (out / "timings.csv").open() as f:
        times = [float(r["time/round_s"]) for r in csv.DictReader(f)]
    with (out / "rounds.csv").open() as f:
        flops = [float(r["cost/flops_train_round"]) for r in csv.DictReader(f)]
    summary = json.loads((out / "summary.json").read_text())
    return {"times": times[1:-1], "flops_round": flops[1], "summary": summary}


def compare(model: str, rounds: int, repeats: int, out: Path) -> dict:
    extra = []
    times = {"fedavg": [], "autoflip": []}
    runs = {}
    for i in range(repeats):
        for algo in ("fedavg", "autoflip"):
            runs[algo] = run(model, algo, rounds, out / model / f"{algo}_{i}", extra)
            times[algo] += runs[algo]["times"]
    cost = runs["autoflip"]["summary"]["cost"]
    time_ratio = statistics.median(times["autoflip"]) / statistics.median(times["fedavg"])
    flops_ratio = runs["autoflip"]["flops_round"] / runs["fedavg"]["flops_round"]
    dense = runs["fedavg"]["summary"]["cost"]["flops_per_sample"]
    structured_ratio = cost["flops_per_sample_structured"] / dense
    time_cut, flops_cut = 1 - time_ratio, 1 - flops_ratio
    return {
        "model": model,
        "autoflip_density": cost["density"],
        "fedavg_round_s": times["fedavg"],
        "autoflip_round_s": times["autoflip"],
        "time_ratio": time_ratio,
        "flops_ratio": flops_ratio,
        "structured_flops_ratio": structured_ratio,
        "time_cut_over_flops_cut": time_cut / flops_cut if flops_cut > 0 else None,
        "time_cut_over_structured_cut": (
            time_cut / (1 - structured_ratio) if structured_ratio < 1 else None
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--runs", default="logs/bench/pruning_speedup")
    ap.add_argument("--out", default="benchmarks/results/pruning_speedup.json")
    args = ap.parse_args()
    quiet_lightning()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = [compare(m, args.rounds, args.repeats, Path(args.runs)) for m in args.models]
    gpu = device == "cuda"
    for r in results:
        r["meets_target"] = (
            r["time_cut_over_flops_cut"] is not None and r["time_cut_over_flops_cut"] >= TARGET
        ) if gpu else None
    result = {
        "benchmark": "pruning_speedup",
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setting": {"threshold": 0.3, "compact": True, "rounds": args.rounds,
                    "rounds_timed_per_run": args.rounds - 2, "repeats": args.repeats,
                    "models": {m: MODELS[m] for m in args.models}, "common": COMMON},
        "target": f"time cut >= {TARGET} x FLOPs cut, on a GPU",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for r in results:
        print(f"{r['model']}: AutoFLIP/FedAvg time {r['time_ratio']:.3f}, FLOPs "
              f"{r['flops_ratio']:.3f} (structured alone {r['structured_flops_ratio']:.3f}), "
              f"density {r['autoflip_density']:.3f} on {result['device']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
