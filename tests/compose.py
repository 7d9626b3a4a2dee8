"""Compose flip's Hydra config in tests, as ``python -m flip`` would."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_cfg(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The composed config for ``overrides``; ``output_dir`` set when given."""
    extra = [f"output_dir={output_dir}"] if output_dir else []
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])
