"""engine=flower against engine=local: per-round wall time and start-up (docs/engines.md).

The same FedAvg run of ``experiment=fmnist_patho`` (K = 20, 5 clients a round, E = 2,
TwoCNN hidden 32, evaluation every round) for R rounds, three times: ``engine=local``, and
``engine=flower`` in Flower's Ray simulation with 1 worker (``client_resources.num_cpus`` =
all CPUs) and with one worker per CPU (``num_cpus=1``). Each run is ``flip.train.train`` in
this process, as ``python -m flip`` calls it. Per run: every round's ``time/round_s`` (from
``timings.csv``: the round as the server sees it, evaluation included), their median over
rounds 2..R (round 1 also pays the workers' first import and data build), and the start-up:
total wall time minus the rounds (local: reading and partitioning the data, building the
model; flower: also the SuperLink, the ServerApp's process, Ray and its workers). Each Flower
run's accuracy columns are checked against the local run's (max abs difference reported).
Memory: the peak resident set of this process (local) or of the ServerApp's process
(``flwr-simulation``) and of each Ray worker (``ClientAppActor``), sampled every 0.5 s.

    python benchmarks/engines.py [--rounds 4] [--out benchmarks/results/engines.json]
"""

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from flip.engines.flower.executor import machine_cpus
from flip.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = ["experiment=fmnist_patho", "algorithm=fedavg", "logger=none", "progress=false",
        "checkpoint.every=0"]


class PeakRSS(threading.Thread):
    """Peak resident memory (MiB) per process kind while it runs: ``local`` (this process),
    ``serverapp`` (``flwr-simulation``), ``worker`` (a Ray ``ClientAppActor``, the largest)."""

    KINDS = {"serverapp": "flwr-simulation", "worker": "ClientAppActor"}

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"local": 0.0, "serverapp": 0.0, "worker": 0.0}
        self.done = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") / 2**20

    def sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue
            kind = "local" if int(pid) == os.getpid() else next(
                (k for k, pattern in self.KINDS.items() if pattern in cmd), None)
            if kind:
                self.peak[kind] = max(self.peak[kind], rss)

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()


def one_run(out: Path, overrides: list[str]) -> dict:
    """Run, then read its rounds and timings."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[*BASE, *overrides, f"output_dir={out}"])
    memory = PeakRSS()
    memory.start()
    start = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - start
    memory.done.set()
    memory.join()
    with (out / "timings.csv").open() as f:
        rounds = [float(r["time/round_s"]) for r in csv.DictReader(f)]
    with (out / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {"round_s": rounds, "median_round_s": statistics.median(rounds[1:] or rounds),
            "first_round_s": rounds[0], "startup_s": total - sum(rounds), "total_s": total,
            "peak_rss_mib": memory.peak, "rows": rows}


def max_diff(rows: list[dict], ref: list[dict]) -> float:
    keys = [k for k in ref[0] if k.startswith(("global/acc", "local/acc"))]
    return max(abs(float(r[k]) - float(q[k])) for r, q in zip(rows, ref, strict=True)
               for k in keys if q[k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/engines.json")
    args = ap.parse_args()
    cpus = machine_cpus()
    runs = {
        "local": [],
        "flower, 1 worker": ["engine=flower", f"engine.client_resources.num_cpus={cpus}"],
        f"flower, {cpus} workers": ["engine=flower", "engine.client_resources.num_cpus=1"],
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="flip-bench-engines-") as tmp:
        for name, extra in runs.items():
            print(f"{name} ...", file=sys.stderr, flush=True)
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            results[name] = one_run(out, [f"federation.rounds={args.rounds}", *extra])
    ref = results["local"]
    ref_rows = ref["rows"]
    for r in results.values():
        r["ratio_to_local"] = r["median_round_s"] / ref["median_round_s"]
        r["startup_over_local_s"] = r["startup_s"] - ref["startup_s"]
        r["max_abs_diff_accuracy"] = max_diff(r.pop("rows"), ref_rows)
    doc = {
        "device": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        "setting": "experiment=fmnist_patho algorithm=fedavg (K=20, 5 clients/round, E=2, "
                   f"TwoCNN h32), {args.rounds} rounds, evaluation every round",
        "rounds": args.rounds,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("| engine | median round (s) | × local | round 1 (s) | start-up (s) | max Δ acc | "
          "peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        mem = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mib"].items() if v)
        print(f"| {name} | {r['median_round_s']:.2f} | {r['ratio_to_local']:.2f} | "
              f"{r['first_round_s']:.2f} | {r['startup_s']:.1f} | "
              f"{r['max_abs_diff_accuracy']:.1e} | {mem} |")


if __name__ == "__main__":
    main()
