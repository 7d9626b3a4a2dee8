"""The README's benchmark table, one line per benchmark result, from benchmarks/results/*.json.

    python benchmarks/table.py [--results benchmarks/results]
"""

import argparse
import json
from pathlib import Path


def rows(results: Path) -> list[str]:
    """Markdown rows: benchmark, device, setting, measured, target."""
    out = []
    path = results / "round_overhead.json"
    if path.exists():
        r = json.loads(path.read_text())
        out.append(
            f"| (a) round overhead | {r['device']} | FedAvg, TwoCNN, Fashion-MNIST | flip / plain "
            f"loop = **{r['ratio']:.3f}** ({r['flip_median_s']:.2f} s vs "
            f"{r['plain_median_s']:.2f} s per round; weights within "
            f"{r['max_abs_weight_diff_per_round']:.0e}) | ≤ {r['target']:.2f} |"
        )
    path = results / "evaluation_scaling.json"
    if path.exists():
        r = json.loads(path.read_text())
        m = r["median_evaluation_s"]
        out.append(
            f"| evaluation scaling | {r['device']} | a round's evaluation, K = 1000 vs K = 20, "
            f"TwoCNN, Fashion-MNIST | × **{r['ratio_k1000_over_k20']:.3f}** ({m['1000']:.2f} s "
            f"vs {m['20']:.2f} s) | ≤ {r['target']:.1f} |"
        )
    path = results / "pruning_speedup.json"
    if path.exists():
        r = json.loads(path.read_text())
        for m in r["results"]:
            out.append(
                f"| (b) pruning speed-up | {r['device']} | AutoFLIP Tp=0.3 compacted vs FedAvg, "
                f"{m['model']} | time × **{m['time_ratio']:.3f}**, training FLOPs × "
                f"{m['flops_ratio']:.3f} (structured alone × {m['structured_flops_ratio']:.3f}) | "
                "time cut ≥ 0.7 × FLOPs cut (GPU) |"
            )
    path = results / "client_memory.json"
    if path.exists():
        r = json.loads(path.read_text())
        for m in r["results"]:
            mib = {a: m[a]["peak_bytes"] / 2**20 for a in ("fedavg", "autoflip")}
            out.append(
                f"| (c) peak memory per client | {r['device']} | one local epoch, {m['model']} | "
                f"FedAvg {mib['fedavg']:.0f} MiB, AutoFLIP compact {mib['autoflip']:.0f} MiB "
                f"(× {m['peak_ratio']:.2f}) | — |"
            )
    path = results / "data_path.json"
    if path.exists():
        r = json.loads(path.read_text())
        e, rd = r["data_epoch_median_s"], r["round_median_s"]
        out.append(
            f"| data path (`make bench-data`) | {r['device']} | DataLoaders vs device tensors, "
            f"TwoCNN, Fashion-MNIST | data epoch {e['false']:.2f} s vs {e['true']:.2f} s; "
            f"FedAvg round {rd['false']:.1f} s vs {rd['true']:.1f} s | same numbers |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    print("| benchmark | device | setting | measured | target |")
    print("|---|---|---|---|---|")
    print("\n".join(rows(Path(args.results))))


if __name__ == "__main__":
    main()
