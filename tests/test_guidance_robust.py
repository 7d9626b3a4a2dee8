"""Robust, private and attacked guidance (docs/robust-guidance.md, ALGORITHMS.md §2.1):
median and trimmed mean by hand, a scaled explorer that steers the mean's mask but not the
median's, clipping, ε from ``dp-accounting``, σ = 0 exactly non-private, the attacks, and bad
input stopping before training with the field named."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dp_accounting
import numpy as np
import pytest
import torch
from compose import compose_cfg
from dp_accounting.rdp import RdpAccountant
from federation_helpers import tiny_federation
from test_exploration import ShiftExecutor

from flip.algorithms import AutoFLIP
from flip.algorithms.autoflip import GUIDANCE_NOISE_STREAM
from flip.algorithms.autoflip_params import ExplorationParams
from flip.data.datasets import DEBIAN_FMNIST_DIR
from flip.errors import ConfigError
from flip.federation.seeding import derive_seed
from flip.pruning import global_threshold, guidance_matrix, unstructured_mask
from flip.pruning.guidance_robust import (
    add_gaussian_noise,
    aggregate_displacements,
    attack_displacement,
    clip_displacement,
    displacement_norm,
    gaussian_epsilon,
    malicious_explorers,
)
from flip.pruning.masks import mask_jaccard

# ----- robust aggregation (Yin et al., ICML 2018) ----------------------------------------------


def reports_of(*rows):
    """One report per row: {"w": tensor(row)}."""
    return [{"w": torch.tensor(r, dtype=torch.float32)} for r in rows]


def test_median_by_hand():
    odd = reports_of([1, 10, 0], [2, 20, 5], [100, 30, 4])
    torch.testing.assert_close(aggregate_displacements(odd, "median")["w"],
                               torch.tensor([2.0, 20.0, 4.0]))
    even = reports_of([1, 8], [3, 2], [5, 4], [1000, 6])  # the mean of the two middle values
    torch.testing.assert_close(aggregate_displacements(even, "median")["w"],
                               torch.tensor([4.0, 5.0]))


def test_trimmed_mean_by_hand():
    five = reports_of([1, 9], [2, 7], [3, 5], [4, 3], [1000, 1])
    # trim 0.2 of 5: b = 1 dropped from each end → mean of (2, 3, 4) and of (3, 5, 7)
    torch.testing.assert_close(aggregate_displacements(five, "trimmed_mean", 0.2)["w"],
                               torch.tensor([3.0, 5.0]))
    # trim 0.1 of 5: ⌊0.5⌋ = 0 dropped, the mean
    torch.testing.assert_close(aggregate_displacements(five, "trimmed_mean", 0.1)["w"],
                               torch.tensor([202.0, 5.0]))
    torch.testing.assert_close(aggregate_displacements(five, "mean")["w"],
                               torch.tensor([202.0, 5.0]))
    # trim 0.45 of 5: b = 2 → the median
    torch.testing.assert_close(aggregate_displacements(five, "trimmed_mean", 0.45)["w"],
                               aggregate_displacements(five, "median")["w"])


def test_aggregate_refuses_mismatched_reports_and_bad_names():
    with pytest.raises(ValueError, match="no reports"):
        aggregate_displacements([], "median")
    with pytest.raises(ValueError, match="shape of w"):
        aggregate_displacements(reports_of([1, 2], [1, 2, 3]), "median")
    with pytest.raises(ConfigError, match=r"exploration\.aggregate='mode'.*trimmed_mean"):
        aggregate_displacements(reports_of([1]), "mode")
    with pytest.raises(ConfigError, match=r"exploration\.trim=0\.5"):
        aggregate_displacements(reports_of([1]), "trimmed_mean", 0.5)


def mask_of(displacement, tp=0.3):
    """flip's own §2.1–2.2 path on a hand-made D: guidance matrix, global Tp-quantile
    threshold, unstructured mask."""
    g = guidance_matrix(displacement)
    return unstructured_mask(g, list(g), global_threshold(g, list(g), tp))


def test_one_scaled_explorer_steers_the_mean_but_not_the_median():
    """Five explorers share the loss landscape (D = base, increasing over ten entries) and
    each has one idiosyncratic large entry (explorer k: entry k). Tp = 0.3 prunes entries
    0, 1, 2. Explorer 0 reports its own D × 1e6: the mean is then its report, whose large
    entry 0 is kept (and entry 3 pruned instead); the median and the trimmed mean (b = 1)
    ignore it."""
    base = torch.linspace(0.1, 1.0, 10).reshape(2, 5)
    honest = []
    for k in range(5):
        d = base.clone()
        d.view(-1)[k] += 0.5
        honest.append({"w": d})
    clean = mask_of(aggregate_displacements(honest, "mean"))
    assert clean["w"].view(-1).tolist() == [False] * 3 + [True] * 7
    attacked = [attack_displacement(honest[0], "scaled", 1e6), *honest[1:]]
    assert not torch.equal(mask_of(aggregate_displacements(attacked, "mean"))["w"], clean["w"])
    assert torch.equal(mask_of(aggregate_displacements(attacked, "median"))["w"], clean["w"])
    assert torch.equal(mask_of(aggregate_displacements(attacked, "trimmed_mean", 0.2))["w"],
                       clean["w"])


# ----- attacks (simulated on the server) --------------------------------------------------------


def test_inverted_report_prunes_what_the_honest_one_keeps():
    honest = {"w": torch.tensor([0.0, 1.0, 4.0, 9.0]), "b": torch.tensor([[2.0, 3.0]])}
    inverted = attack_displacement(honest, "inverted")
    torch.testing.assert_close(inverted["w"], torch.tensor([9.0, 8.0, 5.0, 0.0]))
    torch.testing.assert_close(inverted["b"], torch.tensor([[1.0, 0.0]]))
    g, gi = guidance_matrix(honest), guidance_matrix(inverted)
    for name in g:  # per-tensor min-max: G_attacked = 1 − G_honest
        torch.testing.assert_close(gi[name], 1 - g[name])
    kept, kept_inv = mask_of(honest, 0.5), mask_of(inverted, 0.5)
    assert not (kept["w"] & kept_inv["w"]).any()


def test_scaled_and_random_attacks():
    gen = torch.Generator().manual_seed(0)
    honest = {"w": torch.rand(200, 50, generator=gen) ** 4, "c": torch.full((3,), 2.0)}
    torch.testing.assert_close(attack_displacement(honest, "scaled", 1e3)["w"],
                               honest["w"] * 1e3)
    a = attack_displacement(honest, "random", rng=np.random.default_rng(1))
    b = attack_displacement(honest, "random", rng=np.random.default_rng(1))
    assert torch.equal(a["w"], b["w"])  # reproducible from the stream
    assert a["w"].shape == honest["w"].shape and (a["w"] >= 0).all()
    # the Gamma draws match the honest tensor's mean and std (10,000 draws: within a few %)
    assert math.isclose(a["w"].mean(), honest["w"].mean(), rel_tol=0.05)
    assert math.isclose(a["w"].std(), honest["w"].std(), rel_tol=0.1)
    assert abs(torch.corrcoef(torch.stack([a["w"].view(-1), honest["w"].view(-1)]))[0, 1]) < 0.05
    torch.testing.assert_close(a["c"], honest["c"])  # std 0: the constant mean
    with pytest.raises(ConfigError, match=r"exploration\.attack='flip'"):
        attack_displacement(honest, "flip")


def test_malicious_explorers_are_a_seeded_share():
    explorers = [0, 2, 3, 5, 7, 8, 9, 11, 12, 13]
    picked = malicious_explorers(explorers, 0.3, np.random.default_rng([42, 4003]))
    assert len(picked) == 3 and set(picked) <= set(explorers)
    assert picked == malicious_explorers(explorers, 0.3, np.random.default_rng([42, 4003]))
    assert malicious_explorers(explorers, 0.0, np.random.default_rng(0)) == []
    assert len(malicious_explorers(explorers[:5], 0.1, np.random.default_rng(0))) == 1  # 0.5 up


# ----- private guidance (Gaussian mechanism, dp-accounting) -------------------------------------


def test_clipping_bounds_each_explorers_contribution():
    big = {"a": torch.tensor([3.0]), "b": torch.tensor([[4.0]])}  # ‖D‖ = 5 over both tensors
    clipped = clip_displacement(big, 2.5)
    torch.testing.assert_close(clipped["a"], torch.tensor([1.5]))
    torch.testing.assert_close(clipped["b"], torch.tensor([[2.0]]))
    small = {"a": torch.tensor([0.3]), "b": torch.tensor([[0.4]])}
    assert all(torch.equal(clip_displacement(small, 2.5)[k], small[k]) for k in small)
    # whatever one explorer reports, the sum moves by at most C
    gen = torch.Generator().manual_seed(0)
    honest = [clip_displacement({"a": 9 * torch.rand(1, generator=gen),
                                 "b": 9 * torch.rand(1, 1, generator=gen)}, 2.5)
              for _ in range(3)]
    for report in (big, attack_displacement(big, "scaled", 1e6), small):
        with_k = [*honest, clip_displacement(report, 2.5)]
        sums = [{n: sum(r[n] for r in rs) for n in ("a", "b")} for rs in (honest, with_k)]
        moved = {n: sums[1][n] - sums[0][n] for n in ("a", "b")}
        assert displacement_norm(moved) <= 2.5 + 1e-6


def test_noise_is_added_once_with_std_sigma_times_c():
    total = {"w": torch.zeros(100_000)}
    noisy = add_gaussian_noise(total, 2.0, 0.5, torch.Generator().manual_seed(0))
    assert math.isclose(noisy["w"].std(), 1.0, rel_tol=0.02)  # σ·C = 1
    same = add_gaussian_noise(total, 2.0, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(noisy["w"], same["w"])
    assert torch.equal(add_gaussian_noise(total, 0.0, 0.5, torch.Generator())["w"], total["w"])


@pytest.mark.parametrize("sigma,delta", [(1.0, 1e-5), (4.0, 1e-6), (0.6, 1e-5)])
def test_epsilon_is_dp_accountings_and_reaches_the_summary(sigma, delta, tmp_path):
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma))
    want = accountant.get_epsilon(delta)
    assert gaussian_epsilon(sigma, delta) == want
    # below the classic RDP conversion min_α α/(2σ²) + log(1/δ)/(α − 1) (Mironov 2017)
    classic = min(a / (2 * sigma**2) + math.log(1 / delta) / (a - 1)
                  for a in np.linspace(1.01, 400, 40_000))
    assert 0 < want <= classic
    privacy = {"noise_multiplier": sigma, "clip": 1.0, "delta": delta}
    algo, fed, _ = explore(tmp_path, ShiftExecutor(), privacy=privacy)
    fed.setup()
    info = json.loads(json.dumps(fed.summary()["algorithm_info"]))
    assert info["guidance_epsilon"] == want
    assert (info["guidance_noise_multiplier"], info["guidance_clip"], info["guidance_delta"]) == (
        sigma, 1.0, delta)


def test_no_privacy_reports_no_epsilon():
    info = AutoFLIP().info(None)
    assert info["guidance_epsilon"] is None and info["guidance_aggregate"] == "mean"
    assert gaussian_epsilon(0.0, 1e-5) == math.inf


# ----- wired into AutoFLIP.explore --------------------------------------------------------------


def explore(tmp_path, executor, **exploration):
    """An AutoFLIP over the tiny federation (4 clients, all explore) whose explorer k returns
    θ_0 + (k + 1) everywhere (D_k = (k + 1)²)."""
    algo = AutoFLIP(exploration={"epochs": 2, "patience": 1, **exploration},
                    pruning={"threshold": 0.3, "compact": False})
    fed = tiny_federation(tmp_path, algo, rounds=1)
    fed.executor = executor
    theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
    return algo, fed, theta0


def test_noise_multiplier_zero_is_exactly_non_private(tmp_path):
    algo, fed, _ = explore(tmp_path / "a", ShiftExecutor())
    plain, _ = algo.explore(fed)
    algo0, fed0, _ = explore(tmp_path / "b", ShiftExecutor(),
                             privacy={"noise_multiplier": 0.0, "clip": 1e-3})
    off, _ = algo0.explore(fed0)
    assert all(torch.equal(plain[k], off[k]) for k in plain)  # no clipping, no noise
    fed.setup()
    fed0.setup()
    assert all(torch.equal(algo.masks[k], algo0.masks[k]) for k in algo.masks)
    assert all(torch.equal(algo.guidance[k], algo0.guidance[k]) for k in algo.guidance)


def test_private_explore_clips_sums_adds_noise_and_divides(tmp_path):
    """D_k = (k + 1)² over P entries: ‖D_k‖ = (k + 1)²·√P; clip C = 2·√P keeps explorer 0
    (1·√P) and clips 1, 2, 3 to norm C, i.e. to 2 per entry: sum 1 + 2 + 2 + 2 = 7, plus the
    noise of the run's stream, divided by the 4 explorers."""
    _, fed, theta0 = explore(tmp_path, ShiftExecutor())  # the federation; C needs P first
    entries = sum(p.numel() for p in theta0.values())
    sigma, clip = 0.5, 2 * math.sqrt(entries)
    algo = AutoFLIP(exploration={"epochs": 2, "patience": 1,
                                 "privacy": {"noise_multiplier": sigma, "clip": clip}})
    d, _ = algo.explore(fed)
    gen = torch.Generator().manual_seed(derive_seed(fed.seed, GUIDANCE_NOISE_STREAM))
    for name, p in theta0.items():
        noise = torch.randn(p.shape, generator=gen) * sigma * clip
        torch.testing.assert_close(d[name], (7.0 + noise) / 4, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregate,want", [("median", 6.5), ("trimmed_mean", 6.5),
                                            ("mean", 7.5)])
def test_explore_aggregates_as_configured(aggregate, want, tmp_path):
    """D_k = 1, 4, 9, 16: median (4 + 9) / 2, trimmed mean with b = ⌊0.25·4⌋ = 1 the same,
    mean 7.5."""
    algo, fed, theta0 = explore(tmp_path, ShiftExecutor(), aggregate=aggregate, trim=0.25)
    d, _ = algo.explore(fed)
    for name, p in theta0.items():
        torch.testing.assert_close(d[name], torch.full(p.shape, want))


def test_explore_attacks_the_seeded_explorers(tmp_path):
    """attack_fraction 0.5 of 4 explorers: 2 chosen from the run seed; their D_k × 100."""
    algo, fed, theta0 = explore(tmp_path, ShiftExecutor(), attack="scaled",
                                attack_fraction=0.5, attack_scale=100.0)
    d, _ = algo.explore(fed)
    assert len(algo.malicious) == 2
    want = sum((k + 1) ** 2 * (100 if k in algo.malicious else 1) for k in range(4)) / 4
    for name, p in theta0.items():
        torch.testing.assert_close(d[name], torch.full(p.shape, float(want)))
    again, fed_again, _ = explore(tmp_path / "again", ShiftExecutor(), attack="inverted",
                                  attack_fraction=0.5)
    again.explore(fed_again)
    assert again.malicious == algo.malicious  # the same seed picks the same explorers
    assert algo.info(fed)["guidance_malicious"] == algo.malicious
    assert algo.state_dict()["malicious"] == algo.malicious


# ----- bad input stops before training, naming the field ----------------------------------------

BAD = [
    ("exploration.trim=0.6", "exploration.trim"),
    ("exploration.trim=0.5", "exploration.trim"),
    ("exploration.trim=-0.1", "exploration.trim"),
    ("exploration.aggregate=mode", "exploration.aggregate"),
    ("exploration.attack=flip", "exploration.attack"),
    ("exploration.attack_fraction=1.5", "exploration.attack_fraction"),
    ("exploration.attack_fraction=0.2", "exploration.attack"),  # with attack: none
    ("exploration.attack=scaled exploration.attack_scale=0", "exploration.attack_scale"),
    ("exploration.privacy.noise_multiplier=-1", "exploration.privacy.noise_multiplier"),
    ("exploration.privacy.noise_multiplier=1", "exploration.privacy.clip"),  # clip null
    ("exploration.privacy.noise_multiplier=1 exploration.privacy.clip=0",
     "exploration.privacy.clip"),
    ("exploration.privacy.noise_multiplier=1 exploration.privacy.clip=1 "
     "exploration.privacy.delta=0", "exploration.privacy.delta"),
    ("exploration.privacy.noise_multiplier=1 exploration.privacy.clip=1 "
     "exploration.aggregate=median", "exploration.aggregate"),
    ("+exploration.privacy.epsilon=1", "exploration.privacy.epsilon"),
]
NO_DATA = ["data.root=/nonexistent/flip-data", "data.download=false",
           "data.debian_dir=/nonexistent/debian", "logger=none", "progress=false",
           "algorithm=autoflip"]


@pytest.mark.parametrize("override,field", BAD)
def test_bad_guidance_setting_stops_before_the_data_is_read(override, field, tmp_path):
    """The data root does not exist: reading it would raise DataNotFoundError instead."""
    from flip.train import train

    with pytest.raises(ConfigError) as err:
        train(compose_cfg([*NO_DATA, *override.split()], tmp_path))
    assert err.value.field == field and "accepted" in str(err.value)
    assert not (tmp_path / "rounds.csv").exists()


def test_bad_trim_on_the_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flip", "algorithm=autoflip", "exploration.trim=0.6",
         "logger=none", *NO_DATA[:3], f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode != 0
    assert "exploration.trim=0.6 is invalid" in out.stderr and "0 <= trim < 0.5" in out.stderr
    assert "DataNotFoundError" not in out.stderr
    assert not (tmp_path / "rounds.csv").exists()


def test_median_with_a_single_explorer_is_refused():
    params = ExplorationParams(client_fraction=0.1, aggregate="median")
    params.check_explorers(20)  # 2 explorers: fine
    for aggregate in ("median", "trimmed_mean"):
        algo = AutoFLIP(exploration={"client_fraction": 0.1, "aggregate": aggregate})
        with pytest.raises(ConfigError, match=r"exploration\.aggregate.*1 explorer") as err:
            algo.check_data(SimpleNamespace(num_clients=4))
        assert err.value.field == "exploration.aggregate"
    AutoFLIP(exploration={"client_fraction": 0.1}).check_data(SimpleNamespace(num_clients=4))


@pytest.mark.skipif(not (Path(DEBIAN_FMNIST_DIR) / "train-images-idx3-ubyte.gz").is_file(),
                    reason="needs Debian's dataset-fashion-mnist")
def test_median_with_a_single_explorer_stops_train_before_round_one(tmp_path):
    from flip.train import train

    cfg = compose_cfg(["debug=smoke", "algorithm=autoflip", "exploration.client_fraction=0.1",
                       "exploration.aggregate=median"], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert err.value.field == "exploration.aggregate"
    assert not (tmp_path / "rounds.csv").exists() and not (tmp_path / "config.yaml").exists()


# ----- how far an attack moves the mask --------------------------------------------------------


def test_mask_jaccard_by_hand():
    """Kept sets {0, 1} ∪ {2} against {1} ∪ {2, 3}... per tensor: a = [1,1,0,0], [1,0];
    b = [0,1,1,0], [1,1]: both 2 entries, either 5: 0.4; nothing kept anywhere: 1."""
    a = {"w": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "b": torch.tensor([1, 0]).bool()}
    b = {"w": torch.tensor([0, 1, 1, 0], dtype=torch.bool), "b": torch.tensor([1, 1]).bool()}
    assert mask_jaccard(a, b) == 2 / 5 and mask_jaccard(a, a) == 1.0
    none = {"w": torch.zeros(3, dtype=torch.bool)}
    assert mask_jaccard(none, none) == 1.0


@pytest.mark.parametrize("aggregate", ["mean", "median"])
def test_jaccard_clean_compares_with_the_run_without_the_attack(aggregate, tmp_path):
    """Real exploration on the tiny federation: an attacked run reports the Jaccard index of
    its mask against the mask the same seed gives without the attack (computed here by a
    second, clean run); the clean run reports none. One explorer of 4 scaled ×1e6 moves the
    mean's mask (Tp 0.9: at 0.3 more than 30% of these tiny runs' entries never move, so
    τ = 0 and both masks keep exactly the entries that moved)."""
    def run(folder, **attack):
        algo = AutoFLIP(exploration={"epochs": 2, "patience": 1, "aggregate": aggregate,
                                     **attack},
                        pruning={"threshold": 0.9, "compact": False})
        tiny_federation(tmp_path / folder, algo, rounds=1, hidden=8).setup()
        return algo

    attacked = run("attacked", attack="scaled", attack_fraction=0.25)
    clean = run("clean")
    assert clean.jaccard_clean is None and clean.info(None)["guidance_jaccard_clean"] is None
    assert attacked.jaccard_clean == mask_jaccard(attacked.masks, clean.masks)
    assert attacked.info(None)["guidance_jaccard_clean"] == attacked.jaccard_clean
    if aggregate == "mean":
        assert attacked.jaccard_clean < 0.5
