"""Published comparisons, made reproducibly: ``python -m flip.results results/NAME``.

``results/NAME/spec.yaml`` says what the comparison runs (issue 11, ALGORITHMS.md §5)::

    title: one line
    base: [experiment=fmnist_compare, logger=none]       # overrides every run shares
    seeds: [1, 2, 3]
    runs:                                                # label: its own overrides
      fedavg: [algorithm=fedavg]
      random: [algorithm=random, "random_pruning.reference_run={logs}/autoflip_seed{seed}"]
    reuse: {autoflip: fmnist_compare/autoflip}           # finished runs of another spec
    analysis: [compare]                                  # or [ablation, --by, KEY]

For every label and seed the driver runs ``python -m flip <base> <overrides> seed=<seed>`` into
``logs/results/NAME/<label>_seed<seed>`` in its own process: a run that finished
(``summary.json``) is skipped, one that stopped after a checkpoint is continued with ``resume=``
(so a long comparison spans sessions), ``{logs}`` and ``{seed}`` in overrides are filled in.
``--save-unfinished`` copies the newest checkpoint (and ``rounds.csv``, ``config.yaml``) of each
unfinished run to ``results/NAME/unfinished/<label>_seed<seed>/``, to commit: on a fresh clone
the driver continues such a run from that copy, and drops the copy once the run finished;
``--jobs N`` runs N of them at once (one process each; on 2 CPU cores set ``OMP_NUM_THREADS=1``,
as ``make compare-async`` does). ``reuse`` takes the finished runs of another spec (same code,
same setting; its committed ``results/NAME/runs/`` copy first) instead of running them again.
Then each run's ``config.yaml``, ``summary.json`` and ``rounds.csv`` are copied to
``results/NAME/runs/<label>_seed<seed>/``, ``provenance.json`` records the commit, the machine
and the command, and the analysis (``flip.analysis.compare`` or ``flip.analysis.ablation``)
writes its tables and plots into ``results/NAME/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from flip.federation.checkpoint import CHECKPOINT_DIR, list_checkpoints
from flip.provenance import provenance

LOGS = Path("logs/results")
KEPT = ("config.yaml", "summary.json", "rounds.csv")
UNFINISHED = "unfinished"


def load_spec(folder: Path) -> dict:
    """``folder/spec.yaml`` with its defaults (``seeds`` [1, 2, 3], ``reuse`` {}).

    Raises:
        SystemExit: no spec there, or a label that is neither run nor reused.
    """
    path = folder / "spec.yaml"
    if not path.is_file():
        raise SystemExit(f"flip: {path} not found (a results folder holds its spec.yaml)")
    spec = yaml.safe_load(path.read_text())
    spec.setdefault("seeds", [1, 2, 3])
    spec.setdefault("reuse", {})
    spec.setdefault("runs", {})
    spec.setdefault("analysis", ["compare"])
    return spec


def run_one(name: str, label: str, seed: int, overrides: list[str],
            saved: Path | None = None) -> Path:
    """Run (or continue, or skip) one run; returns its directory. ``saved``: the folder of
    committed unfinished runs (``results/NAME/unfinished``), continued from when the logs hold
    no checkpoint of the run."""
    out = LOGS / name / f"{label}_seed{seed}"
    if (out / "summary.json").is_file():
        return out
    copy = saved / out.name if saved else None
    if (copy and not list_checkpoints(out / CHECKPOINT_DIR)
            and list_checkpoints(copy / CHECKPOINT_DIR)):
        shutil.copytree(copy, out, dirs_exist_ok=True)
    filled = [o.format(logs=str(LOGS / name), seed=seed) for o in overrides]
    cmd = [sys.executable, "-m", "flip", *filled, f"seed={seed}", f"hydra.run.dir={out}"]
    if list_checkpoints(out / CHECKPOINT_DIR):
        cmd.append(f"resume={out}")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def save_unfinished(name: str, dest: Path) -> list[str]:
    """Copy the newest checkpoint, ``rounds.csv`` and ``config.yaml`` of every unfinished run
    under ``logs/results/NAME`` (a checkpoint, no ``summary.json``) to ``dest/<run>/``, replacing
    an older copy; returns the runs copied."""
    saved = []
    for out in sorted((LOGS / name).glob("*")):
        found = list_checkpoints(out / CHECKPOINT_DIR)
        if (out / "summary.json").is_file() or not found:
            continue
        target = dest / out.name
        shutil.rmtree(target, ignore_errors=True)
        (target / CHECKPOINT_DIR).mkdir(parents=True)
        shutil.copy2(found[-1][1], target / CHECKPOINT_DIR / found[-1][1].name)
        for kept in ("config.yaml", "rounds.csv"):
            if (out / kept).is_file():
                shutil.copy2(out / kept, target / kept)
        saved.append(out.name)
    return saved


def collect(run_dir: Path, dest: Path) -> None:
    """Copy a finished run's ``config.yaml``, ``summary.json`` and ``rounds.csv`` to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copy2(run_dir / name, dest / name)


def reused_run(results: Path, source: str, seed: int) -> Path:
    """The finished run ``source`` (``NAME/label``) of seed ``seed`` from another spec: its
    committed copy ``results/NAME/runs/<label>_seed<seed>`` where there is one (so a reuse
    works on any clone), else its log directory ``logs/results/NAME/<label>_seed<seed>``.

    Raises:
        SystemExit: ``source`` is not of the form ``NAME/label``.
    """
    other, sep, other_label = source.partition("/")
    if not sep or not other or not other_label:
        raise SystemExit(f"flip: reuse source {source!r} must be NAME/label")
    committed = results / other / "runs" / f"{other_label}_seed{seed}"
    if (committed / "summary.json").is_file():
        return committed
    return LOGS / other / f"{other_label}_seed{seed}"


def make(folder: Path, analyse_only: bool = False, jobs: int = 1) -> None:
    """Run every missing run of ``folder``'s spec (``jobs`` at a time), collect the runs, run
    the analysis."""
    spec = load_spec(folder)
    name = folder.name
    runs = folder / "runs"
    done = {}
    todo = [(seed, label, overrides) for seed in spec["seeds"]
            for label, overrides in spec["runs"].items()]
    if analyse_only:
        results = [LOGS / name / f"{label}_seed{seed}" for seed, label, _ in todo]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(
                lambda t: run_one(name, t[1], t[0], [*spec["base"], *t[2]],
                                  folder / UNFINISHED), todo))
    for (seed, label, _), run_dir in zip(todo, results, strict=True):
        done[f"{label}_seed{seed}"] = run_dir
    for seed in spec["seeds"]:
        for label, source in spec["reuse"].items():
            done[f"{label}_seed{seed}"] = reused_run(folder.parent, source, seed)
    for key, run_dir in done.items():
        if (run_dir / "summary.json").is_file():
            collect(run_dir, runs / key)
            shutil.rmtree(folder / UNFINISHED / key, ignore_errors=True)
    command = f"python -m flip.results {folder}" + (f" --jobs {jobs}" if jobs > 1 else "")
    record = {"spec": spec, "command": command, "runs": sorted(done), **provenance()}
    made = folder / "provenance.json"
    if analyse_only and made.is_file():  # the runs' record stays; the re-analysis is added
        record = {**json.loads(made.read_text()),
                  "analysed": {"command": f"{command} --analyse-only", **provenance()}}
    made.write_text(json.dumps(record, indent=2) + "\n")
    tool, *args = spec["analysis"]
    subprocess.run([sys.executable, "-m", f"flip.analysis.{tool}", str(runs), "--out",
                    str(folder), *args], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="results/NAME folders (with spec.yaml)")
    ap.add_argument("--analyse-only", action="store_true",
                    help="collect finished runs and redo the tables and plots; run nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    ap.add_argument("--save-unfinished", action="store_true",
                    help=f"copy each unfinished run's newest checkpoint to NAME/{UNFINISHED}/ "
                         "(to commit, so a fresh clone continues it); run nothing")
    args = ap.parse_args(argv)
    for folder in args.folders:
        if args.save_unfinished:
            saved = save_unfinished(folder.name, folder / UNFINISHED)
            print(f"{folder}: saved {', '.join(saved) or 'no unfinished run'}")
            continue
        make(folder, args.analyse_only, args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
