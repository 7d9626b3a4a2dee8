"""``python -m flip.engines.flower.export DIR [experiment=...] [overrides]``: a Flower app
directory for a real deployment (ENGINES.md §3; the commands are in docs/engines.md).

``DIR/pyproject.toml`` names flip's ServerApp and ClientApp
(``flip.engines.flower.server_app:app``, ``flip.engines.flower.client_app:app``) and carries
the composed flip config as the run config ``flip-config``
(:mod:`flip.engines.flower.runconfig`); ``flwr run DIR`` against a SuperLink sends it to the
ServerApp and to every SuperNode. flip (with this extra) must be installed wherever a
SuperLink or SuperNode runs, and the data must be readable there (``data.root``, or a
SuperNode's ``--node-config "data-root=PATH"``). The app declares no dependencies; run the
SuperLink with ``--disable-runtime-dependency-installation``.

Overrides are those of ``python -m flip``; ``engine=flower`` is added unless an ``engine``
is given, and ``output_dir`` defaults to ``DIR/run`` (where the ServerApp writes the run).
Bad values raise ``ConfigError`` (printed as ``flip: ...``) before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomli_w
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import flip
from flip.engines.flower.runconfig import CONFIG_KEY, RESULT_KEY, ship
from flip.errors import ConfigError
from flip.train import build, run_params

CONFIGS = Path(flip.__file__).resolve().parents[1] / "configs"
SERVER_APP = "flip.engines.flower.server_app:app"
CLIENT_APP = "flip.engines.flower.client_app:app"


def write_app(directory: str | Path, cfg: DictConfig, result_dir: str | None = None) -> Path:
    """Write the Flower app of ``cfg`` into ``directory`` (created); ``result_dir``: where
    the ServerApp writes ``result.json`` (a simulation's launcher). Returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {CONFIG_KEY: ship(cfg)}
    if result_dir:
        config[RESULT_KEY] = str(result_dir)
    doc = {
        "project": {
            "name": "flip-app", "version": "0.1.0", "dependencies": [],
            "description": f"flip experiment {cfg.get('experiment_name', '')} "
                           f"({cfg.algorithm.name}) on Flower",
        },
        "tool": {"flwr": {"app": {
            "publisher": "flip",
            "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
            "config": config,
        }}},
    }
    (out / "pyproject.toml").write_text(tomli_w.dumps(doc, multiline_strings=True))
    return out


def export_cfg(directory: str | Path, overrides: list[str]) -> DictConfig:
    """The composed, validated config of an export (module docstring). Raises ``ConfigError``
    naming the first invalid field."""
    if not any(o.lstrip("+~").startswith("engine=") for o in overrides):
        overrides = ["engine=flower", *overrides]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.output_dir = cfg.output_dir or str(Path(directory).absolute() / "run")
    run_params(cfg)
    build(cfg.algorithm)
    if build(cfg.engine).name != "flower":
        raise ConfigError("engine", cfg.engine.name, "flower (an exported app runs on Flower)")
    return cfg


def main(argv: list[str] | None = None) -> None:
    """The command line (module docstring): exits with ``flip: ...`` on a ``ConfigError``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        sys.exit("usage: python -m flip.engines.flower.export DIR [experiment=NAME] "
                 "[key=value ...]")
    try:
        cfg = export_cfg(argv[0], argv[1:])
    except ConfigError as err:
        sys.exit(f"flip: {err}")
    out = write_app(argv[0], cfg)
    n = cfg.engine.num_supernodes or cfg.federation.num_clients
    print(f"Flower app written to {out} (run directory {cfg.output_dir}); it waits for {n} "
          f"SuperNodes (engine.num_supernodes) with partition-id 0..{n - 1}. See "
          "docs/engines.md: flower-superlink, flower-supernode, flwr run.")


if __name__ == "__main__":
    main()
