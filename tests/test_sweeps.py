"""W&B sweep files (sweeps/*.yaml) against W&B's sweep schema, their parameters as overrides of
the experiment they name, and the offline ablation plot (flip.analysis.ablation)."""

import json
from pathlib import Path

import pytest
import yaml
from compose import CONFIGS, compose_cfg
from fixtures_data import write_tiny_cifar10
from fixtures_runs import write_run
from jsonschema import Draft7Validator, FormatChecker
from omegaconf import OmegaConf

from flip.analysis.ablation import ablation, main
from flip.analysis.runs import config_value
from flip.federation.recorder import ROUND_COLUMNS
from flip.train import train

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
# An unmodified copy of sweeps/config/schema.json from sweeps==0.3.0, the package wandb's own
# controller validates with (provenance and licence in tests/data/wandb_sweep_schema.LICENSE).
SCHEMA = json.loads((Path(__file__).parent / "data" / "wandb_sweep_schema.json").read_text())
VALIDATOR = Draft7Validator(SCHEMA, format_checker=FormatChecker())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_there_are_the_three_ablations():
    assert {p.stem for p in SWEEPS} == {"tp_ablation", "exploration_epochs", "explorer_fraction"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_matches_wandbs_schema(path):
    errors = [e.message for e in VALIDATOR.iter_errors(load(path))]
    assert errors == []


def test_the_schema_catches_mistakes():
    sweep = load(ROOT / "sweeps" / "tp_ablation.yaml")
    bad = [
        {**sweep, "method": "gridsearch"},
        {**sweep, "metric": {"name": "val/acc1", "goal": "maximise"}},
        {**sweep, "parameters": {"pruning.threshold": {"values": []}}},
        {**sweep, "agent": "local"},
    ]
    for config in bad:
        assert list(VALIDATOR.iter_errors(config)), config


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_runs_flip_and_maximises_validation_top1(path):
    """Sweeps optimise the validation top-1 (ALGORITHMS.md §5: the test set picks nothing);
    before issue 11 they maximised the test top-1 (global/acc1)."""
    sweep = load(path)
    assert sweep["command"][-1] == "${args_no_hyphens}"
    assert sweep["command"][1:4] == ["python", "-m", "flip"]  # flip's Hydra entry point
    assert sweep["metric"] == {"name": "val/acc1", "goal": "maximize"}
    assert "global" not in json.dumps(sweep)
    header = path.read_text().split("name:")[0]
    assert f"wandb sweep sweeps/{path.name}" in header


@pytest.mark.xfail(
    "val/acc1" not in ROUND_COLUMNS,
    reason="the val/acc1 column comes with issue 11's training side (another branch)",
    strict=True,
)
def test_the_sweep_metric_is_a_logged_column():
    assert {load(p)["metric"]["name"] for p in SWEEPS} <= set(ROUND_COLUMNS)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_parameter_is_an_override_of_the_experiment(path, tmp_path):
    """Each value renders as ``name=value`` (what ``${args_no_hyphens}`` passes) and composes
    with the named experiment, setting that field."""
    sweep = load(path)
    params = dict(sweep["parameters"])
    experiment = params.pop("experiment")["value"]
    assert (CONFIGS / "experiment" / f"{experiment}.yaml").is_file()
    fixed = [*(s for s in sweep["command"][4:-1]), f"experiment={experiment}"]
    for name, spec in params.items():
        for value in spec.get("values", [spec.get("value")]):
            others = [f"{n}={s['value']}" for n, s in params.items() if "value" in s and n != name]
            cfg = compose_cfg([*fixed, *others, f"{name}={value}"], tmp_path)
            assert cfg.experiment_name == experiment
            if name == "algorithm":  # a config group: the option's name
                assert cfg.algorithm.name == value
            else:
                assert OmegaConf.select(cfg, name, throw_on_missing=True) == value


def test_tp_grid_is_the_papers(tmp_path):
    sweep = load(ROOT / "sweeps" / "tp_ablation.yaml")
    assert sweep["parameters"]["pruning.threshold"]["values"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert sweep["parameters"]["experiment"]["value"] == "cifar10_patho"
    makefile = (ROOT / "Makefile").read_text()
    assert "pruning.threshold=0.1,0.2,0.3,0.4,0.5" in makefile
    assert "experiment=cifar10_patho" in makefile.split("ablation-tp:")[1]


def test_ablation_plot_from_real_runs(tmp_path, capsys):
    """Two AutoFLIP runs (Tp 0.1 and 0.5) on tiny CIFAR-10 files, one round each, laid out as a
    Hydra multirun; the ablation reads each Tp from config.yaml and the costs from the runs."""
    root = write_tiny_cifar10(tmp_path / "data", per_class_train=8, per_class_test=2)
    sweep_dir = tmp_path / "multirun"
    for i, tp in enumerate((0.5, 0.1)):
        cfg = compose_cfg(
            ["experiment=cifar10_patho", "algorithm=autoflip", f"pruning.threshold={tp}",
             "logger=none", "progress=false", f"data.root={root}", "data.download=false",
             "data.batch_size=16", "federation.rounds=1", "federation.local_epochs=1",
             "federation.num_clients=4", "federation.eval_every=1", "exploration.epochs=1",
             "exploration.client_fraction=0.5"],
            sweep_dir / f"{i}_autoflip",
        )
        train(cfg)
    assert config_value(sweep_dir / "0_autoflip", "pruning.threshold") == 0.5
    rows = ablation([sweep_dir], "pruning.threshold", tmp_path / "out")
    assert [r["value"] for r in rows] == [0.1, 0.5]
    assert rows[0]["train_flops_total"] > rows[1]["train_flops_total"]
    assert rows[0]["gb_total"] > rows[1]["gb_total"]
    assert rows[0]["compression_ratio"] < rows[1]["compression_ratio"]
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "| 0.1 | autoflip | 1 |" in (tmp_path / "out" / "ablation.md").read_text()
    assert main([str(sweep_dir), "--by", "pruning.nope"]) == 2
    assert "config.yaml has no pruning.nope" in capsys.readouterr().err


def test_ablation_over_seeds_picks_on_validation(tmp_path, capsys):
    """Tp 0.1 and 0.3, seeds 1 and 2 each (hand-written runs): one row per Tp with the test
    top-1 at each seed's best-val round, densities, FLOPs and GB as mean ± std; a Tp swept
    without a validation split says so. Before issue 11 the ablation had one row per run,
    final accuracy only and no density."""
    sweep = tmp_path / "multirun"
    runs = {  # Tp: per seed (test, val, hybrid density)
        0.1: {1: ([0.6, 0.7, 0.65], [0.5, 0.55, 0.6], 0.8),
              2: ([0.62, 0.66, 0.7], [0.5, 0.6, 0.58], 0.78)},
        0.3: {1: ([0.5, 0.6, 0.55], [0.45, 0.5, 0.48], 0.5),
              2: ([0.52, 0.58, 0.6], [0.5, 0.49, 0.47], 0.54)},
    }  # fmt: skip
    job = 0
    for tp, seeds in runs.items():
        for seed, (test, val, density) in seeds.items():
            info = {"threshold": tp, "density_hybrid": density, "density_unstructured": 1 - tp}
            write_run(
                sweep / f"{job}_autoflip", "autoflip", seed, test, val, density=density,
                gb_round=0.01 * density, info=info, config={"pruning.threshold": tp},
            )  # fmt: skip
            job += 1
    write_run(
        sweep / f"{job}_autoflip", "autoflip", 1, [0.4, 0.5, 0.45], None, density=0.3,
        info={"threshold": 0.5}, config={"pruning.threshold": 0.5},
    )  # fmt: skip
    rows = ablation([sweep], "pruning.threshold", tmp_path / "out")
    assert [(r["value"], r["runs"]) for r in rows] == [(0.1, 2), (0.3, 2), (0.5, 1)]
    low, high, no_val = rows
    assert low["best_acc1"] == pytest.approx((0.65 + 0.66) / 2)  # rounds 3 and 2
    assert high["best_acc1"] == pytest.approx((0.6 + 0.52) / 2)  # rounds 2 and 1
    assert high["density"] == pytest.approx(0.52)
    assert high["density_std"] == pytest.approx(0.0282843, rel=1e-5)
    assert low["gb_total"] > high["gb_total"] and not no_val["val_split"]
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| 0.3 | autoflip | 2 | 56.00% ± 5.66% | 57.50% ± 3.54% |" in md
    assert "52.00% ± 2.83% | 52.00% ± 2.83% | 70.00% ± 0.00% |" in md
    assert "| 0.5 | autoflip | 1 | no val split | 45.00% |" in md
    summary = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert summary["by"] == "pruning.threshold" and len(summary["runs"]) == 5
    assert (tmp_path / "out" / "ablation.png").read_bytes().startswith(b"\x89PNG")


def test_ablation_default_stands_for_runs_made_before_the_option(tmp_path, capsys):
    """A results folder reusing runs of an older flip (no ``exploration.attack_fraction`` in
    their config) as its 0.0 row: without ``--default`` the ablation names the run and the
    missing key; with ``--default 0.0`` those runs are the 0.0 row, the others keep theirs."""
    runs = tmp_path / "runs"
    for seed in (1, 2):
        write_run(runs / f"attack-0.0_seed{seed}", "autoflip", seed, [0.5, 0.6], [0.5, 0.6])
        write_run(runs / f"attack-0.2_seed{seed}", "autoflip", seed, [0.3, 0.4], [0.3, 0.4],
                  config={"exploration.attack_fraction": 0.2})
    assert main([str(runs), "--by", "exploration.attack_fraction"]) == 2
    assert "config.yaml has no exploration.attack_fraction" in capsys.readouterr().err
    assert main([str(runs), "--by", "exploration.attack_fraction", "--default", "0.0",
                 "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())["rows"]
    assert [(r["value"], r["runs"]) for r in rows] == [(0.0, 2), (0.2, 2)]
    assert rows[0]["best_acc1"] == pytest.approx(0.6) and rows[1]["best_acc1"] == pytest.approx(0.4)
