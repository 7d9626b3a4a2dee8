"""``python -m flip [experiment=...] [overrides]``: the Hydra entry point (thin; see flip.train)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from flip.errors import CheckpointError, ConfigError, DataNotFoundError, TrainingStopped
from flip.train import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with open_dict(cfg):
        cfg.output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    if cfg.get("resume") and HydraConfig.get().mode == RunMode.MULTIRUN:
        sys.exit("flip: resume continues one run; resume each job of a sweep on its own "
                 "(python -m flip <its overrides> resume=<its run directory>)")
    try:
        summary = train(cfg)
    except (ConfigError, DataNotFoundError, CheckpointError, TrainingStopped) as err:
        sys.exit(f"flip: {err}")
    return summary["final"].get("global/acc1")


if __name__ == "__main__":
    main()
