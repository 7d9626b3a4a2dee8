"""Peak memory of one client's local training: the dense network (FedAvg) against AutoFLIP's
compact network (Tp = 0.3), on TwoCNN and ResNet-18 (Fashion-MNIST; 32×32 for ResNet-18).

Each measurement runs in a fresh process: it builds the data module and the network from the
same config as ``benchmarks/pruning_speedup.py``, compacts it with the removal of that
benchmark's AutoFLIP run (its ``mask.pt``), then trains client 0 for one local epoch through
the client LightningModule and the shared Trainer. Peak = on a GPU,
``torch.cuda.max_memory_allocated`` above what was allocated before training; on CPU, the
process's peak resident set (VmHWM, reset through ``/proc/self/clear_refs`` just before
training) above its resident set at that moment. Both count weights, gradients, optimizer
state, activations and batches.

    python benchmarks/client_memory.py [--runs logs/bench/pruning_speedup]

Run ``benchmarks/pruning_speedup.py`` first (``make bench`` does).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(model: str, algorithm: str, runs: Path) -> dict:
    """One measurement, in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from pruning_speedup import COMMON, MODELS

    from flip.federation.client import ClientModule
    from flip.pruning import apply_masks, compact, compact_masks
    from flip.train import build_datamodule, build_network, quiet_lightning

    quiet_lightning()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*COMMON, *MODELS[model]])
    dm = build_datamodule(cfg)
    net = build_network(cfg, dm)
    masks = None
    if algorithm == "autoflip":
        saved = torch.load(runs / model / "autoflip_0" / "mask.pt")
        apply_masks(net, saved["masks"])
        net, index = compact(net, saved["removal"], dm.example_input())
        masks = compact_masks(saved["masks"], index)
    trainer = instantiate(cfg.trainer)(max_epochs=1)
    dm.use_device(trainer.strategy.root_device)  # the data path a run's clients use
    module = ClientModule(net, dm.num_classes, instantiate(cfg.client.optimizer), cfg.client.lr,
                          masks)
    loader = dm.client_train_dataloader(0, 0)
    cuda = trainer.strategy.root_device.type == "cuda"
    if cuda:
        net.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
        before = _status("VmRSS")
    trainer.fit(module, train_dataloaders=loader)
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    return {
        "model": model,
        "algorithm": algorithm,
        "params": sum(p.numel() for p in net.parameters()),
        "samples": dm.client_num_train(0),
        "batch_size": cfg.data.batch_size,
        "peak_bytes": peak - before,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="logs/bench/pruning_speedup")
    ap.add_argument("--models", nargs="+", default=["twocnn", "resnet18"])
    ap.add_argument("--out", default="benchmarks/results/client_memory.json")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "ALGORITHM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    runs = Path(args.runs)
    if args.worker:
        print(json.dumps(worker(*args.worker, runs)))
        return
    results = []
    for model in args.models:
        pair = {}
        for algorithm in ("fedavg", "autoflip"):
            out = subprocess.run(
                [sys.executable, __file__, "--runs", str(runs), "--worker", model, algorithm],
                capture_output=True, text=True, check=True,
            )
            pair[algorithm] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = pair["autoflip"]["peak_bytes"] / pair["fedavg"]["peak_bytes"]
        results.append({"model": model, **{f"{a}": r for a, r in pair.items()},
                        "peak_ratio": ratio})
        print(f"{model}: peak per client FedAvg {pair['fedavg']['peak_bytes'] / 2**20:.1f} MiB, "
              f"AutoFLIP compact {pair['autoflip']['peak_bytes'] / 2**20:.1f} MiB "
              f"(ratio {ratio:.3f})")
    gpu = torch.cuda.is_available()
    result = {
        "benchmark": "client_memory",
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "measure": "cuda max_memory_allocated" if gpu else "peak RSS (VmHWM) above RSS",
        "torch": torch.__version__,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
