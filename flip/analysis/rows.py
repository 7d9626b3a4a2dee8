"""What the analysis takes from one run: its table row, its curve and its label.

A run is loaded by :func:`flip.analysis.runs.load_run` (``summary.json``, ``rounds.csv``,
``config.yaml``, or a W&B offline run); :func:`read_run` turns it into one table row (raw
numbers: accuracies and densities as fractions, FLOPs, GB = 1e9 bytes, seconds) and one
record per round, with the honest picks of :mod:`flip.analysis.picks`; :func:`load_runs`
labels the runs so that variants of one algorithm (two Tp, two PruneFL upload policies) are
separate table rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from flip.analysis.picks import optimistic, val_pick
from flip.analysis.runs import config_get, expand_run_dirs, load_run
from flip.analysis.stats import group_by
from flip.analysis.tables import cell, show
from flip.metrics.costs import GB


class Column(NamedTuple):
    """How a row key is shown: its header, its :func:`flip.analysis.tables.fmt` kind, and
    whether it picks a round on the validation split (then "no val split" without one)."""

    header: str
    kind: str
    picked: bool = False


COLUMNS = {
    "label": Column("Algorithm", "text"),
    "best_acc1": Column("Test top-1 @ best val", "pct", True),
    "best_acc5": Column("Test top-5 @ best val", "pct", True),
    "best_val_acc1": Column("Best val top-1", "pct", True),
    "best_round": Column("Best-val round", "count", True),
    "final_acc1": Column("Final test top-1", "pct"),
    "final_acc5": Column("Final test top-5", "pct"),
    "final_local_acc1": Column("Final local top-1 (weighted)", "pct"),
    "optimistic_acc1": Column("Top-1 optimistic (test-picked)", "pct"),
    "density": Column("Density (params sent)", "pct"),
    "flops_per_sample": Column("FLOPs/sample", "si"),
    "train_flops_total": Column("Train FLOPs", "si"),
    "gb_total": Column("GB", "gb"),
    "compression_ratio": Column("Compression", "ratio"),
    "sim_time_total": Column("Simulated time", "time"),
    "updates_min": Column("Updates per client, fewest", "count"),
    "updates_max": Column("Updates per client, most", "count"),
    "tp": Column("Tp (AutoFLIP threshold quantile)", "num"),
    "target_density": Column("Target density", "pct"),
    "density_unstructured": Column("Density, unstructured mask", "pct"),
    "density_hybrid": Column("Density, hybrid mask", "pct"),
    "units_removed": Column("Units removed", "count"),
    "importance_upload": Column("Importance upload (PruneFL)", "text"),
    "importance_share": Column("Importance share of bytes", "pct"),
    "guidance": Column("Guidance (AutoFLIP)", "text"),
    "epsilon": Column("ε of the guidance", "num"),
    "jaccard_clean": Column("Mask Jaccard vs clean", "num"),
}
"""The row keys of :func:`read_run` the tables show, with one header and format each."""


def row_cell(row: dict, key: str) -> str:
    """``row[key]`` (a run's row, or a row over seeds) as its table cell: the format of
    :data:`COLUMNS` (:func:`flip.analysis.tables.cell`)."""
    return cell(row, key, COLUMNS[key].kind, COLUMNS[key].picked)


AUTOFLIP_FACTS = (  # (row key, algorithm_info key)
    ("tp", "threshold"),
    ("target_density", "target_density"),
    ("density_unstructured", "density_unstructured"),
    ("density_hybrid", "density_hybrid"),
    ("units_removed", "units_removed"),
    ("units_total", "units_total"),
    ("jaccard_clean", "guidance_jaccard_clean"),
)
"""AutoFLIP's facts in ``summary.json``'s ``algorithm_info`` (ALGORITHMS.md §2.2, §4)."""
PRUNEFL_FACTS = ("importance_upload", "bytes_importance", "importance_share")
"""PruneFL's importance upload (ALGORITHMS.md §3.1 step 2)."""
GUIDANCE_FACTS = ("guidance", "epsilon")
"""How AutoFLIP's guidance was made (docs/robust-guidance.md): :func:`guidance_text` and ε."""


def guidance_text(info: dict) -> str | None:
    """AutoFLIP's guidance recipe from ``algorithm_info`` as one short text: the aggregate
    (``mean``, ``median``, ``trimmed_mean 0.1``), the attack when some explorers are malicious
    (``scaled ×20%``), the Gaussian noise when private (``σ 1.1, C 0.01, δ 1e-05``; ε is
    :data:`COLUMNS`' ``epsilon``) and ``SecAgg+`` when the reports were summed by secure
    aggregation. None for a summary written before the guidance options."""
    aggregate = info.get("guidance_aggregate")
    if aggregate is None:
        return None
    parts = [aggregate if info.get("guidance_trim") is None
             else f"{aggregate} {info['guidance_trim']:g}"]
    if info.get("guidance_attack", "none") != "none" and info.get("guidance_attack_fraction"):
        parts.append(f"{info['guidance_attack']} ×{100 * info['guidance_attack_fraction']:.0f}%")
    if info.get("guidance_noise_multiplier"):
        parts.append(f"σ {info['guidance_noise_multiplier']:g}, C {info['guidance_clip']:g}, "
                     f"δ {info['guidance_delta']:g}")
    if info.get("guidance_secure_aggregation"):
        parts.append("SecAgg+")
    return ", ".join(parts)


def algorithm_facts(algorithm: str, summary: dict, config: dict | None) -> dict:
    """The algorithm-specific row keys (:data:`AUTOFLIP_FACTS`, :data:`PRUNEFL_FACTS`; None
    where they do not apply or the run lacks them), from ``summary["algorithm_info"]``.

    PruneFL: ``importance_upload`` (the policy, ``reconfiguration`` or ``every_round``; else
    the config's ``prunefl.importance_upload`` or ``algorithm.importance_upload``),
    ``bytes_importance`` (bytes of importance uploads; else the cost block's
    ``bytes_extra_up``) and ``importance_share`` = importance bytes / all bytes of the run.
    AutoFLIP: ``tp`` (the threshold quantile used; else the config's ``pruning.threshold``),
    ``target_density``, ``density_unstructured`` (fraction of all parameters the
    unstructured mask alone keeps), ``density_hybrid`` (fraction the hybrid mask keeps),
    ``units_removed`` and ``units_total`` (filters/neurons/LSTM units), ``jaccard_clean``
    (an attacked run's mask against the honest reports' mask), ``guidance``
    (:func:`guidance_text`) and ``epsilon`` (ε of the private guidance at its δ; None when
    there is no noise, where ε is infinite)."""
    info, cost = summary.get("algorithm_info") or {}, summary.get("cost") or {}
    keys = [k for k, _ in AUTOFLIP_FACTS] + list(PRUNEFL_FACTS) + list(GUIDANCE_FACTS)
    facts = dict.fromkeys(keys)
    if algorithm == "prunefl":
        facts["importance_upload"] = (
            info.get("importance_upload")
            or config_get(config, ("prunefl", "importance_upload"), None)
            or config_get(config, ("algorithm", "importance_upload"), None)
        )
        importance = info.get("bytes_importance", cost.get("bytes_extra_up"))
        total = cost.get("bytes_total")
        facts["bytes_importance"] = importance
        facts["importance_share"] = importance / total if importance is not None and total else None
    elif algorithm == "autoflip":
        facts.update({key: info.get(src) for key, src in AUTOFLIP_FACTS})
        if facts["tp"] is None:
            facts["tp"] = config_get(config, ("pruning", "threshold"), None)
        facts["guidance"] = guidance_text(info)
        facts["epsilon"] = info.get("guidance_epsilon")
    return facts


def _curve(rows: list[dict]) -> list[dict]:
    """One record per round: ``round``, test ``acc1``/``acc5``, ``val_acc1``, ``gb_cum``,
    ``flops_cum``, ``density`` and ``sim_time`` (cumulative simulated seconds); None where
    the round has no evaluation or the run no such column."""
    keys = (
        ("acc1", "global/acc1"),
        ("acc5", "global/acc5"),
        ("val_acc1", "val/acc1"),
        ("gb_cum", "cost/gb_cum"),
        ("flops_cum", "cost/flops_train_cum"),
        ("density", "model/density"),
        ("sim_time", "sim/time_s"),
    )
    return [{"round": int(r["round"]), **{k: r.get(src) for k, src in keys}} for r in rows]


def read_run(run_dir: Path, data: dict | None = None) -> tuple[dict, list[dict]]:
    """One run's table row and its per-round records (:func:`_curve`), from ``data`` or read
    by :func:`flip.analysis.runs.load_run` (errors as there).

    The row: ``run_dir``, ``source``, ``algorithm``, ``experiment``, ``model``, ``seed``,
    ``rounds_completed``; ``val_split`` (the run has validation metrics); the validation
    pick (:func:`flip.analysis.picks.val_pick`, None without validation): ``best_round``,
    ``best_val_acc1``, ``best_acc1`` and ``best_acc5`` (test top-1/top-5 at that round);
    ``optimistic_acc1``/``_acc5`` (test-picked maxima); ``final_acc1``, ``final_acc5`` and
    ``final_local_acc1`` (last evaluated round); ``density`` (fraction of the parameters
    sent); ``flops_per_sample`` (and ``_dense``), ``train_flops_total`` (set-up included),
    ``gb_total``, ``compression_ratio``, ``sim_time_total`` (simulated seconds, None when
    the run has no ``sim/time_s``), ``updates_min``/``updates_max`` (the fewest and most
    updates a client contributed: summary ``participation``) and :func:`algorithm_facts`.
    None where the run lacks one.
    """
    run_dir = Path(run_dir)
    data = data or load_run(run_dir)
    summary = data["summary"]
    cost, final = summary.get("cost") or {}, summary.get("final") or {}
    curve = _curve(data["rows"])
    gb_total = cost.get("gb_total")
    if gb_total is None and cost.get("bytes_total") is not None:
        gb_total = cost["bytes_total"] / GB
    train_flops = cost.get("train_flops_total")
    if train_flops is None and "train_flops_rounds" in cost:
        train_flops = cost["train_flops_rounds"] + cost.get("train_flops_exploration", 0.0)
    pick = val_pick(summary, curve) or {}
    best_test = optimistic(summary, curve)
    densities = [p["density"] for p in curve if p["density"] is not None]
    times = [p["sim_time"] for p in curve if p["sim_time"] is not None]
    participation = summary.get("participation")  # updates per client (ASYNC.md §2)
    algorithm = summary.get("algorithm", run_dir.name)
    row = {
        "run_dir": str(run_dir),
        "source": data["source"],
        "algorithm": algorithm,
        "experiment": summary.get("experiment"),
        "model": summary.get("model"),
        "seed": summary.get("seed"),
        "rounds_completed": summary.get("rounds_completed"),
        "val_split": bool(pick),
        "best_round": pick.get("round"),
        "best_val_acc1": pick.get("val_acc1"),
        "best_acc1": pick.get("acc1"),
        "best_acc5": pick.get("acc5"),
        "optimistic_acc1": best_test["acc1"],
        "optimistic_acc5": best_test["acc5"],
        "final_acc1": final.get("global/acc1"),
        "final_acc5": final.get("global/acc5"),
        "final_local_acc1": final.get("local/acc1_weighted"),
        "density": cost.get("density", densities[-1] if densities else None),
        "flops_per_sample": cost.get("flops_per_sample"),
        "flops_per_sample_dense": cost.get("flops_per_sample_dense"),
        "train_flops_total": train_flops,
        "gb_total": gb_total,
        "compression_ratio": cost.get("compression_ratio"),
        "sim_time_total": times[-1] if times else None,
        "updates_min": min(participation) if participation else None,
        "updates_max": max(participation) if participation else None,
        **algorithm_facts(algorithm, summary, data["config"]),
    }
    return row, curve


@dataclass
class Run:
    """One run: its dir, algorithm, seed, label, table row, curve and config."""

    path: Path
    algorithm: str
    seed: object
    config: dict | None
    row: dict
    curve: list[dict]
    label: str = ""
    algo_config: dict = field(default_factory=dict)


def _leaves(node: dict, prefix: str = "") -> dict:
    """A nested config dict as ``{"dotted.key": value}`` (Hydra's ``_target_`` left out)."""
    out = {}
    for key, value in node.items():
        if key == "_target_":
            continue
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: Algorithm settings that name another run of the same seed (random pruning's
#: ``reference_run``, the AutoFLIP run whose density it matches): they differ from seed to
#: seed by design, so they never split a row.
PER_SEED_KEYS = {"importance_upload", "reference_run"}


def label_runs(runs: list[Run]) -> None:
    """Set each run's label: its algorithm, then in parentheses its PruneFL importance upload
    policy (when known) and the algorithm settings (dotted keys of the config's
    ``algorithm`` node, less :data:`PER_SEED_KEYS`) that differ between the runs of that
    algorithm, e.g. ``prunefl (every_round)``, ``autoflip (pruning.threshold=0.2)``."""
    for algo, group in group_by(runs, lambda r: r.algorithm).items():
        settings = [_leaves(r.algo_config) for r in group]
        keys = sorted({k for s in settings for k in s if k.rsplit(".", 1)[-1] not in PER_SEED_KEYS})
        differ = [k for k in keys if len({show(s.get(k)) for s in settings}) > 1]
        for r, s in zip(group, settings, strict=True):
            parts = [r.row["importance_upload"]] if r.row.get("importance_upload") else []
            parts += [f"{k}={show(s.get(k))}" for k in differ]
            r.label = f"{algo} ({', '.join(parts)})" if parts else algo


def label_by_dir(runs: list[Run]) -> None:
    """Label each run by its directory name less a ``_seed<N>`` suffix (the labels of a
    ``results/NAME/spec.yaml``, :mod:`flip.results`), e.g. ``autoflip-per_round_seed2`` →
    ``autoflip-per_round``; a run whose directory has no such suffix keeps its label. For
    runs whose configs were written by different versions of flip, where the config keys
    that :func:`label_runs` compares are not the same."""
    for r in runs:
        label, sep, seed = Path(r.path).name.rpartition("_seed")
        if sep and label and seed.isdigit():
            r.label = label


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Every run under ``paths`` (see :func:`flip.analysis.runs.expand_run_dirs`), labelled
    by :func:`label_runs`. Raises ``FileNotFoundError`` for a dir with no run."""
    runs = []
    for d in expand_run_dirs(paths):
        data = load_run(d)
        row, curve = read_run(d, data)
        cfg = data["config"]
        algo = config_get(cfg, ("algorithm",), None) or {}
        algo_cfg = {k: v for k, v in algo.items() if k != "name"}
        seed = row["seed"] if row["seed"] is not None else config_get(cfg, ("seed",), None)
        runs.append(Run(d, row["algorithm"], seed, cfg, row, curve, algo_config=algo_cfg))
    label_runs(runs)
    return runs
