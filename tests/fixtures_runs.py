"""Hand-written finished runs for the analysis tests: ``config.yaml``, ``summary.json`` and
``rounds.csv`` in the shape the federated core writes (issue 11: validation metrics, simulated
time, ``best`` picked on ``val/acc1``, ``best_test_optimistic``, ``algorithm_info``,
``provenance``), without training anything."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

ROUND_COLUMNS = [
    "round", "clients/sampled", "clients/failed", "round/retries", "lr/client", "train/loss",
    "val/loss", "val/acc1", "val/acc5", "val/f1", "global/loss", "global/acc1", "global/acc5",
    "global/f1", "global/precision", "global/recall", "local/acc1_weighted", "local/acc1_mean",
    "local/acc1_std", "local/f1_weighted", "local/f1_mean", "local/f1_std",
    "local/loss_weighted", "model/nonzero_params", "model/density", "cost/flops_train_round",
    "cost/flops_train_cum", "cost/bytes_down_round", "cost/bytes_up_round",
    "cost/bytes_extra_up_round", "cost/bytes_cum", "cost/gb_cum", "sim/time_s",
]  # fmt: skip
PARAMS = 1_000_000


def _config(algorithm: str, seed: int, val_fraction: float, extra: dict | None) -> dict:
    cfg = {
        "experiment_name": "fmnist_patho",
        "seed": seed,
        "data": {"name": "fmnist", "train_subset": 1.0, "test_fraction": 0.2,
                 "val_fraction": val_fraction},
        "partition": {"name": "patho", "classes_per_client": 2},
        "model": {"name": "twocnn", "net": {"hidden_size": 8}},
        "federation": {"num_clients": 10, "participation": 0.5, "rounds": 5,
                       "local_epochs": 1},
        "algorithm": {"_target_": f"flip.algorithms.{algorithm}", "name": algorithm},
    }  # fmt: skip
    for key, value in (extra or {}).items():  # dotted keys, e.g. "pruning.threshold"
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def write_run(
    run_dir: Path,
    algorithm: str,
    seed: int,
    test: list[float | None],
    val: list[float | None] | None = None,
    *,
    density: float = 1.0,
    gb_round: float = 0.01,
    gb_setup: float = 0.0,
    extra_up: list[int] | None = None,
    flops_round: float = 1e11,
    seconds_round: float | None = 30.0,
    info: dict | None = None,
    config: dict | None = None,
) -> dict:
    """Write a finished run; return its summary.

    ``test``/``val``: top-1 per round (fractions; None: no evaluation that round; ``val``
    None: no validation split, ``data.val_fraction=0``). Each round moves ``gb_round`` GB of
    model (half down, half up) plus ``extra_up[r]`` bytes of importance upload, and
    ``flops_round`` training FLOPs; ``gb_setup`` GB precede round 1. ``seconds_round``: the
    simulated seconds per round (None: no ``sim/time_s`` column, as in older runs).
    ``config``: dotted keys added to ``config.yaml``."""
    run_dir.mkdir(parents=True)
    rounds = len(test)
    extra_up = extra_up or [0] * rounds
    columns = [c for c in ROUND_COLUMNS if seconds_round is not None or c != "sim/time_s"]
    rows, cum_bytes, cum_flops = [], gb_setup * 1e9, 0.0
    for r in range(1, rounds + 1):
        acc, vacc = test[r - 1], val[r - 1] if val else None
        model_bytes = int(gb_round * 1e9)
        cum_bytes += model_bytes + extra_up[r - 1]
        cum_flops += flops_round
        row = dict.fromkeys(columns, "")
        row.update({
            "round": r, "clients/sampled": 5, "clients/failed": 0, "round/retries": 0,
            "lr/client": 0.01, "train/loss": 1.0 / r, "model/nonzero_params": density * PARAMS,
            "model/density": density, "cost/flops_train_round": flops_round,
            "cost/flops_train_cum": cum_flops, "cost/bytes_down_round": model_bytes // 2,
            "cost/bytes_up_round": model_bytes // 2 + extra_up[r - 1],
            "cost/bytes_extra_up_round": extra_up[r - 1], "cost/bytes_cum": int(cum_bytes),
            "cost/gb_cum": cum_bytes / 1e9,
        })  # fmt: skip
        if seconds_round is not None:
            row["sim/time_s"] = r * seconds_round
        if acc is not None:
            row.update(
                {
                    "global/acc1": acc,
                    "global/acc5": min(1.0, acc + 0.2),
                    "global/loss": 1.0 - acc,
                    "local/acc1_weighted": acc - 0.05,
                }
            )
        if vacc is not None:
            row.update({"val/acc1": vacc, "val/acc5": min(1.0, vacc + 0.2), "val/loss": 1.0 - vacc})
        rows.append(row)
    with (run_dir / "rounds.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)

    evaluated = [r for r in rows if r["global/acc1"] != ""]
    best = {}
    with_val = [r for r in rows if r["val/acc1"] != ""]
    if with_val:
        top = max(with_val, key=lambda r: r["val/acc1"])  # the first of equal maxima
        best = {
            "picked_on": "val/acc1",
            "round": top["round"],
            "val/acc1": top["val/acc1"],
            "global/acc1": top["global/acc1"],
            "global/acc5": top["global/acc5"],
        }
    summary = {
        "algorithm": algorithm,
        "experiment": "fmnist_patho",
        "seed": seed,
        "model": "twocnn",
        "data": {"dataset": "fmnist", "partition": "patho", "num_clients": 10},
        "rounds_completed": rounds,
        "final": {k: v for k, v in evaluated[-1].items() if "/" in k and v != ""},
        "best": best,
        "best_test_optimistic": {
            "global/acc1": max(r["global/acc1"] for r in evaluated),
            "global/acc5": max(r["global/acc5"] for r in evaluated),
        },
        "cost": {
            "params": PARAMS, "nonzero_params": density * PARAMS, "density": density,
            "compression_ratio": 1 / density, "flops_per_sample": 1e6 * density,
            "flops_per_sample_dense": 1e6, "train_flops_total": cum_flops,
            "bytes_total": int(cum_bytes), "gb_total": cum_bytes / 1e9,
            "bytes_extra_up": sum(extra_up),
        },
        "algorithm_info": info or {},
        "provenance": {"commit": "0" * 40, "dirty": False, "machine": "test", "cpu": "test",
                       "torch": "2", "device": "cpu"},
    }  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    cfg = _config(algorithm, seed, 0.1 if val else 0.0, config)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return summary


# Two seeds each; in rounds 2 nothing is evaluated. Test-best and val-best rounds differ.
FEDAVG = {
    1: ([0.50, None, 0.70, 0.65, 0.60], [0.55, None, 0.62, 0.68, 0.66]),  # val-best r4
    2: ([0.52, None, 0.72, 0.61, 0.66], [0.50, None, 0.70, 0.64, 0.71]),  # val-best r5
}
AUTOFLIP = {
    1: ([0.40, None, 0.60, 0.62, 0.58], [0.45, None, 0.66, 0.60, 0.64]),  # val-best r3
    2: ([0.42, None, 0.63, 0.57, 0.61], [0.40, None, 0.58, 0.63, 0.62]),  # val-best r4
}
AUTOFLIP_INFO = {
    1: {"threshold": 0.3, "target_density": None, "density_unstructured": 0.70,
        "density_hybrid": 0.52, "units_removed": 12, "units_total": 96},
    2: {"threshold": 0.3, "target_density": None, "density_unstructured": 0.69,
        "density_hybrid": 0.50, "units_removed": 14, "units_total": 96},
}  # fmt: skip


def write_comparison(root: Path, with_val: bool = True, seconds_round: float | None = 30.0):
    """FedAvg and AutoFLIP (Tp 0.3), seeds 1 and 2, as ``root/<algorithm>_<seed>``; the
    AutoFLIP runs keep 52% / 50% of the parameters and move half the GB (after 0.02 GB of
    exploration). Returns the run dirs."""
    dirs = []
    for seed in (1, 2):
        test, val = FEDAVG[seed]
        d = root / f"fedavg_{seed}"
        write_run(d, "fedavg", seed, test, val if with_val else None, seconds_round=seconds_round)
        dirs.append(d)
        test, val = AUTOFLIP[seed]
        d = root / f"autoflip_{seed}"
        info = AUTOFLIP_INFO[seed]
        write_run(
            d,
            "autoflip",
            seed,
            test,
            val if with_val else None,
            density=info["density_hybrid"],
            gb_round=0.005,
            gb_setup=0.02,
            flops_round=0.5e11,
            seconds_round=seconds_round,
            info=info,
            config={"pruning.threshold": 0.3, "algorithm.pruning": {"threshold": 0.3}},
        )
        dirs.append(d)
    return dirs
