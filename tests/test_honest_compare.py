"""`flip.analysis.compare` on hand-written runs (issue 11): rounds picked on the validation
split (ALGORITHMS.md §5), "no val split" said, PruneFL's upload policies as separate rows with
their importance share, AutoFLIP's densities (not Tp), and the W&B summary groups."""

import json

import pytest
from fixtures_runs import AUTOFLIP, AUTOFLIP_INFO, FEDAVG, write_comparison, write_run

from flip.analysis.compare import IncomparableRunsError, compare
from flip.analysis.picks import first_reach, optimistic, val_pick
from flip.analysis.rows import read_run
from flip.analysis.wandb_offline import nested_summary
from flip.train import flatten


def md_line(path, label, table=0):
    """The cells of ``label``'s line in the ``table``-th table of comparison.md."""
    tables = path.read_text().split("## ")[1:]
    lines = tables[table].splitlines()
    header = [c.strip() for c in lines[2].split("|")[1:-1]]
    line = next(x for x in lines if x.startswith(f"| {label} |"))
    return dict(zip(header, (c.strip() for c in line.split("|")[1:-1]), strict=True))


def test_best_is_the_test_accuracy_at_the_best_validation_round(tmp_path):
    """FedAvg seed 1 has its best test top-1 (70%) in round 3 and its best val top-1 in
    round 4 (test 65%); seed 2: test best 72% (round 3), val best round 5 (test 66%). The
    table reports 65.5% ± 0.71%, and the test-picked 71% only as optimistic. Before issue
    11 "best" was the test maximum and no column was labelled optimistic."""
    rows = {r["label"]: r for r in compare(write_comparison(tmp_path / "runs"), tmp_path)}
    fedavg, autoflip = rows["fedavg"], rows["autoflip"]
    assert fedavg["best_acc1"] == pytest.approx(0.655)
    assert fedavg["best_acc1_std"] == pytest.approx(0.00707107, rel=1e-5)
    assert fedavg["best_round"] == 4.5 and fedavg["best_val_acc1"] == pytest.approx(0.695)
    assert fedavg["optimistic_acc1"] == pytest.approx(0.71)
    assert autoflip["best_acc1"] == pytest.approx(0.585)  # rounds 3 and 4: 60% and 57%
    cells = md_line(tmp_path / "comparison.md", "fedavg")
    assert cells["Test top-1 @ best val"] == "65.50% ± 0.71%"
    assert cells["Top-1 optimistic (test-picked)"] == "71.00% ± 1.41%"
    assert not any(h.startswith("Best top-1") for h in cells)


def test_target_and_costs_to_target_use_the_validation_curve(tmp_path):
    """Default target: the lowest mean best val top-1 (AutoFLIP 64.5%) rounded down, 64%.
    FedAvg's val top-1 first reaches it in rounds 4 and 3 (its test top-1 already in round
    3 for both seeds); AutoFLIP seed 2's val never does. Before, the target and the rounds
    came from the test curve, and FLOPs and simulated time to target did not exist."""
    out = tmp_path / "out"
    rows = {r["label"]: r for r in compare(write_comparison(tmp_path / "runs"), out)}
    fedavg, autoflip = rows["fedavg"], rows["autoflip"]
    assert json.loads((out / "comparison.json").read_text())["target"] == 0.64
    assert fedavg["rounds_to_target"] == 3.5 and fedavg["rounds_to_target_n"] == 2
    assert fedavg["gb_to_target"] == pytest.approx(0.035)  # 0.04 and 0.03 GB
    assert fedavg["flops_to_target"] == pytest.approx(3.5e11)
    assert fedavg["time_to_target"] == pytest.approx(105.0)  # 120 s and 90 s
    assert autoflip["rounds_to_target"] == 3 and autoflip["rounds_to_target_n"] == 1
    cells = md_line(out / "comparison.md", "fedavg")
    assert cells["Rounds to 64% val top-1"] == "3.5 ± 0.7"
    assert cells["Sim. time to 64% val top-1"] == "105 s ± 21.2 s"
    assert cells["FLOPs to 64% val top-1"] == "350 G ± 70.7 G"
    assert md_line(out / "comparison.md", "autoflip")["GB to 64% val top-1"] == (
        "0.035 (1/2 seeds)"  # 0.02 GB of exploration + 3 rounds of 0.005 GB
    )
    rows = {r["label"]: r for r in compare(write_comparison(tmp_path / "b"), out, target=0.7)}
    assert rows["fedavg"]["rounds_to_target"] == 3  # seed 2 only: seed 1's val peaks at 68%
    assert rows["fedavg"]["rounds_to_target_n"] == 1 and rows["autoflip"]["rounds_to_target_n"] == 0


def test_runs_without_a_validation_split_say_so(tmp_path):
    """data.val_fraction=0: no val/* values, summary best = {}. The picked columns say
    "no val split" (before: '–' for best, and a target of 0% reached in round 1), the
    optimistic column still shows the test maxima, and there is no target."""
    dirs = write_comparison(tmp_path / "runs", with_val=False, seconds_round=None)
    out = tmp_path / "out"
    rows = {r["label"]: r for r in compare(dirs, out)}
    assert rows["fedavg"]["best_acc1"] is None and not rows["fedavg"]["val_split"]
    assert rows["fedavg"]["rounds_to_target"] is None
    assert json.loads((out / "comparison.json").read_text())["target"] is None
    cells = md_line(out / "comparison.md", "fedavg")
    for header in ("Test top-1 @ best val", "Best-val round", "Rounds to target (val top-1)"):
        assert cells[header] == "no val split"
    assert cells["Top-1 optimistic (test-picked)"] == "71.00% ± 1.41%"
    assert cells["Simulated time"] == "–"  # no sim/time_s column: unavailable, not 0
    assert not (out / "accuracy_time.png").exists()


def write_prunefl(root, policy, seed, extra_up, info=True):
    """A PruneFL run, 5 rounds of 0.01 GB of model plus ``extra_up`` importance bytes; the
    policy in config.yaml's ``prunefl`` node and (``info``) in the summary's algorithm_info."""
    info = {"importance_upload": policy, "bytes_importance": sum(extra_up)} if info else {}
    run = root / f"prunefl_{policy}_{seed}"
    write_run(
        run, "prunefl", seed, [0.5, None, 0.6, 0.62, 0.61], [0.5, None, 0.61, 0.6, 0.63],
        density=0.8, extra_up=extra_up, info=info,
        config={"prunefl.importance_upload": policy},
    )  # fmt: skip
    return run


def test_prunefl_upload_policies_are_two_rows_with_their_importance_share(tmp_path):
    """Two PruneFL policies × seeds 1, 2: rows "prunefl (reconfiguration)" (0.03 GB of
    importance in round 5 of 0.08 GB: 37.5%) and "prunefl (every_round)" (0.03 GB each
    round of 0.2 GB: 75%). Before, the four runs were one label "prunefl" with each seed
    twice and the comparison was refused; and nothing named the policy or its share."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_prunefl(root, "reconfiguration", seed, [0, 0, 0, 0, 30_000_000])
        write_prunefl(root, "every_round", seed, [30_000_000] * 5)
        write_run(root / f"fedavg_{seed}", "fedavg", seed, [0.5, None, 0.6, 0.62, 0.61],
                  [0.5, None, 0.61, 0.6, 0.63])  # fmt: skip
    out = tmp_path / "out"
    rows = {r["label"]: r for r in compare([root], out)}
    assert set(rows) == {"fedavg", "prunefl (reconfiguration)", "prunefl (every_round)"}
    reconf, every = rows["prunefl (reconfiguration)"], rows["prunefl (every_round)"]
    assert reconf["importance_share"] == pytest.approx(0.375)
    assert every["importance_share"] == pytest.approx(0.75)
    assert reconf["runs"] == every["runs"] == 2
    cells = md_line(out / "comparison.md", "prunefl (every_round)", table=1)
    assert cells["Importance upload (PruneFL)"] == "every_round"
    assert cells["Importance share of bytes"] == "75.00% ± 0.00%"
    assert md_line(out / "comparison.md", "fedavg", table=1)["Importance share of bytes"] == "–"

    write_prunefl(root, "every_round", 3, [30_000_000] * 5)  # a seed the others lack
    with pytest.raises(IncomparableRunsError, match="seeds differ") as err:
        compare([root], out)
    assert "prunefl (every_round): 1, 2, 3" in str(err.value)

    # an algorithm_info without the policy: read from config.yaml, share from the cost block
    run = write_prunefl(tmp_path / "bare", "every_round", 1, [30_000_000] * 5, info=False)
    row, _ = read_run(run)
    assert row["importance_upload"] == "every_round"
    assert row["importance_share"] == pytest.approx(0.75)


def test_autoflip_densities_not_tp(tmp_path):
    """AutoFLIP at Tp 0.3 keeps 70% / 69% of the parameters with the unstructured mask
    alone and 52% / 50% with the hybrid mask (12 and 14 of 96 units removed): the pruning
    table reports those densities and names Tp as the threshold quantile it is. Before,
    there was no density column, only the compression ratio."""
    out = tmp_path / "out"
    compare(write_comparison(tmp_path / "runs"), out)
    cells = md_line(out / "comparison.md", "autoflip", table=1)
    assert cells == {
        "Algorithm": "autoflip",
        "Density (params sent)": "51.00% ± 1.41%",
        "Tp (AutoFLIP threshold quantile)": "0.3",
        "Target density": "–",
        "Density, unstructured mask": "69.50% ± 0.71%",
        "Density, hybrid mask": "51.00% ± 1.41%",
        "Units removed": "13 ± 1.4 of 96",
        "Importance upload (PruneFL)": "–",
        "Importance share of bytes": "–",
        "Guidance (AutoFLIP)": "–",  # these summaries predate the guidance options
        "ε of the guidance": "–",
    }
    assert md_line(out / "comparison.md", "fedavg")["Density (params sent)"] == "100.00% ± 0.00%"


def test_picks_fall_back_to_the_curve_and_to_older_summaries():
    """A summary without ``best.picked_on`` (written before picks) is picked from the
    curve: the first round of the highest val top-1; an older ``best`` (test-picked) is the
    optimistic figure, never the pick."""
    curve = [
        {"round": 1, "acc1": 0.5, "acc5": 0.8, "val_acc1": 0.6},
        {"round": 2, "acc1": None, "acc5": None, "val_acc1": None},
        {"round": 3, "acc1": 0.7, "acc5": 0.9, "val_acc1": 0.65},
        {"round": 4, "acc1": 0.6, "acc5": 0.85, "val_acc1": 0.65},
    ]
    old = {"best": {"global/acc1": 0.7, "global/acc5": 0.9}}
    assert val_pick(old, curve) == {"round": 3, "val_acc1": 0.65, "acc1": 0.7, "acc5": 0.9}
    assert optimistic(old, curve) == {"acc1": 0.7, "acc5": 0.9}
    no_val = [{**p, "val_acc1": None} for p in curve]
    assert val_pick(old, no_val) is None
    assert optimistic({}, no_val) == {"acc1": 0.7, "acc5": 0.9}
    assert first_reach(curve, 0.62)["round"] == 3
    assert first_reach(curve, 0.62, key="acc1")["round"] == 3
    assert first_reach(curve, 0.66) is None


def test_wandb_summary_keeps_the_new_groups(tmp_path):
    """The summary as W&B stores it (flattened by flip.train.flatten) reads back whole:
    best (with picked_on and round), best_test_optimistic, algorithm_info, provenance.
    Before, the last three were dropped."""
    root = tmp_path / "runs"
    info = {"threshold": 0.3, "density_hybrid": 0.5}
    summary = write_run(root / "a", "autoflip", 1, *AUTOFLIP[1], info=info)
    assert nested_summary(flatten(summary)) == summary


def test_validation_fraction_must_match(tmp_path):
    """Runs holding out 10% of the training data for validation train on less data than
    runs holding out none: not comparable. A config from before data.val_fraction existed
    counts as 0 (it had no validation split)."""
    dirs = write_comparison(tmp_path / "runs", with_val=False)
    old = dirs[0] / "config.yaml"
    old.write_text(old.read_text().replace("  val_fraction: 0.0\n", ""))
    assert "val_fraction" not in old.read_text()
    compare(dirs, tmp_path / "out")  # 0 and absent: comparable
    write_run(tmp_path / "runs" / "fedavg_3", "fedavg", 3, *FEDAVG[1])
    with pytest.raises(IncomparableRunsError, match="validation fraction differs"):
        compare([*dirs, tmp_path / "runs" / "fedavg_3"], tmp_path / "out")


def test_random_pruning_runs_referring_to_their_seeds_autoflip_run_are_one_row(tmp_path):
    """Random pruning at the density of "the AutoFLIP run of the same seed" names a different
    ``reference_run`` per seed. Those runs are one row "random" with 2 seeds, not two
    one-seed rows that make the comparison refuse itself (which stopped
    results/fmnist_compare's analysis); a real setting that differs still splits rows."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_run(root / f"fedavg_{seed}", "fedavg", seed, [0.5, 0.6], [0.5, 0.61])
        write_run(root / f"random_{seed}", "random", seed, [0.4, 0.5], [0.4, 0.52],
                  density=0.5, config={"algorithm.reference_run": f"logs/autoflip_seed{seed}"})
    rows = {r["label"]: r for r in compare([root], tmp_path / "out")}
    assert set(rows) == {"fedavg", "random"}
    assert rows["random"]["runs"] == 2

    for seed in (1, 2):
        write_run(root / f"random_d_{seed}", "random", seed, [0.4, 0.5], [0.4, 0.52],
                  density=0.3, config={"algorithm.density": 0.3})
    labels = {r["label"] for r in compare([root], tmp_path / "out")}
    assert labels == {"fedavg", "random (density=None)", "random (density=0.3)"}


def test_guidance_recipe_and_epsilon_are_on_the_dashboard(tmp_path):
    """AutoFLIP with private guidance (σ 1.5, C 0.01, δ 1e-5, SecAgg+) and AutoFLIP with the
    median against 20% scaled explorers are two rows of the pruning table: the private row
    shows its recipe and the ε of ``dp-accounting``'s accountant for (σ, δ); the median row its
    attack and ε = ∞ (no noise). Before, ε was only in ``summary.json``."""
    from flip.pruning.guidance_robust import gaussian_epsilon

    eps = gaussian_epsilon(1.5, 1e-5)
    private = {"guidance_aggregate": "mean", "guidance_trim": None, "guidance_attack": "none",
               "guidance_attack_fraction": 0.0, "guidance_noise_multiplier": 1.5,
               "guidance_clip": 0.01, "guidance_delta": 1e-5, "guidance_epsilon": eps,
               "guidance_secure_aggregation": True}
    robust = {**private, "guidance_aggregate": "median", "guidance_attack": "scaled",
              "guidance_attack_fraction": 0.2, "guidance_noise_multiplier": 0.0,
              "guidance_clip": None, "guidance_delta": None, "guidance_epsilon": None,
              "guidance_secure_aggregation": False}
    dirs = []
    for name, info, agg, sigma in (("dp", private, "mean", 1.5), ("med", robust, "median", 0.0)):
        for seed in (1, 2):
            test, val = AUTOFLIP[seed]
            d = tmp_path / "runs" / f"{name}_{seed}"
            write_run(d, "autoflip", seed, test, val, density=0.5,
                      info={**AUTOFLIP_INFO[seed], **info},
                      config={"algorithm.exploration": {"aggregate": agg,
                                                        "privacy": {"noise_multiplier": sigma}}})
            dirs.append(d)
    out = tmp_path / "out"
    compare(dirs, out)
    dp = md_line(out / "comparison.md", "autoflip (exploration.aggregate=mean, "
                 "exploration.privacy.noise_multiplier=1.5)", table=1)
    med = md_line(out / "comparison.md", "autoflip (exploration.aggregate=median, "
                  "exploration.privacy.noise_multiplier=0.0)", table=1)
    assert dp["Guidance (AutoFLIP)"] == "mean, σ 1.5, C 0.01, δ 1e-05, SecAgg+"
    assert dp["ε of the guidance"] == f"{eps:.3g}" and 1 < eps < 10
    assert med["Guidance (AutoFLIP)"] == "median, scaled ×20%"
    assert med["ε of the guidance"] == "∞"


def test_runs_of_two_flip_versions_are_labelled_by_their_results_directories(tmp_path):
    """A results folder that reuses runs of an older flip (whose config.yaml lacks the newer
    options) beside new ones: by config, the labels name every option the old configs lack
    (``=None``); with ``labels="dirs"`` they are the spec's labels, the run directories'
    names less ``_seed<N>``, and each group keeps its own numbers."""
    runs = tmp_path / "runs"
    new_options = {"algorithm.pruning.adaptive": "per_round",
                   "algorithm.exploration.aggregate": "mean"}
    for seed in (1, 2):
        test, val = AUTOFLIP[seed]
        write_run(runs / f"autoflip_seed{seed}", "autoflip", seed, test, val)
        write_run(runs / f"autoflip-per_round_seed{seed}", "autoflip", seed,
                  [a + 0.1 if a is not None else None for a in test], val, config=new_options)
    by_config = tmp_path / "by_config"
    compare([runs], by_config)
    assert "| autoflip (exploration.aggregate=None, pruning.adaptive=None) |" in (
        by_config / "comparison.md").read_text()
    by_dirs = tmp_path / "by_dirs"
    compare([runs], by_dirs, labels="dirs")
    fixed = md_line(by_dirs / "comparison.md", "autoflip")
    adaptive = md_line(by_dirs / "comparison.md", "autoflip-per_round")
    # val-best rounds 3 (seed 1) and 4 (seed 2): test 60% and 57%, +10 points when per_round
    assert fixed["Test top-1 @ best val"] == "58.50% ± 2.12%"
    assert adaptive["Test top-1 @ best val"] == "68.50% ± 2.12%"
    with pytest.raises(ValueError, match="labels"):
        compare([runs], tmp_path / "bad", labels="names")
