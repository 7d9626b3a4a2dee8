"""W&B sweep files (sweeps/*.yaml) against W&B's sweep schema, their parameters as overrides of
the experiment they name, and the offline ablation plot (flip.ablation)."""

import json
from pathlib import Path

import pytest
import yaml
from compose import CONFIGS, compose_cfg
from fixtures_data import write_tiny_cifar10
from jsonschema import Draft7Validator, FormatChecker
from omegaconf import OmegaConf

from flip.ablation import ablation, config_value, main
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
        {**sweep, "metric": {"name": "global/acc1", "goal": "maximise"}},
        {**sweep, "parameters": {"pruning.threshold": {"values": []}}},
        {**sweep, "agent": "local"},
    ]
    for config in bad:
        assert list(VALIDATOR.iter_errors(config)), config


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_runs_flip_and_maximises_final_top1(path):
    sweep = load(path)
    assert sweep["command"][-1] == "${args_no_hyphens}"
    assert sweep["command"][1:4] == ["python", "-m", "flip"]  # flip's Hydra entry point
    assert sweep["metric"] == {"name": "global/acc1", "goal": "maximize"}
    assert "global/acc1" in (ROOT / "flip" / "federation" / "recorder.py").read_text()
    header = path.read_text().split("name:")[0]
    assert f"wandb sweep sweeps/{path.name}" in header


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
    assert "| 0.1 | autoflip |" in (tmp_path / "out" / "ablation.md").read_text()
    assert main([str(sweep_dir), "--by", "pruning.nope"]) == 2
    assert "config.yaml has no pruning.nope" in capsys.readouterr().err
