"""The run's flip config in Flower's run config (ENGINES.md §3: "the ClientApp builds and
caches the data module per process from the run's config (shipped in the run config ...)").

:func:`ship` turns a composed config into the YAML text the ServerApp and every ClientApp
read back with :func:`receive`: interpolations resolved, paths that are relative to this
process's working directory made absolute (another process may start elsewhere), and
``engine.num_supernodes`` fixed (``null`` becomes ``federation.num_clients``), so that the
simulation, the ServerApp and the SuperNodes agree on it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_KEY = "flip-config"
"""Run-config key holding the flip config as YAML."""
RESULT_KEY = "flip-result-dir"
"""Optional run-config key: a directory where the ServerApp writes ``result.json`` (its
summary or its error) for the process that launched the simulation."""
DATA_ROOT_KEY = "data-root"
"""Optional node-config key: where this SuperNode keeps the data (overrides ``data.root``)."""


def _absolute(value):
    return str(Path(value).expanduser().absolute()) if isinstance(value, str) else value


def ship(cfg: DictConfig) -> str:
    """The YAML text of ``cfg`` as the Flower processes read it (module docstring)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(out):
        out.output_dir = _absolute(out.output_dir)
        if isinstance(out.get("resume"), str):
            out.resume = _absolute(out.resume)
        if out.get("data") is not None and isinstance(out.data.get("root"), str):
            out.data.root = _absolute(out.data.root)
        if out.engine.get("num_supernodes") is None:
            out.engine.num_supernodes = int(out.federation.num_clients)
    return OmegaConf.to_yaml(out)


def receive(run_config, node_config=None) -> DictConfig:
    """The flip config of a Flower run config (``context.run_config``); a SuperNode's
    ``data-root`` node config replaces ``data.root``. Raises ``KeyError`` when the run config
    holds no flip config (the app was not written by :mod:`flip.engines.flower.export`)."""
    if CONFIG_KEY not in run_config:
        raise KeyError(f"the Flower run config has no {CONFIG_KEY!r}: export the app with "
                       "python -m flip.engines.flower.export")
    cfg = OmegaConf.create(str(run_config[CONFIG_KEY]))
    root = (node_config or {}).get(DATA_ROOT_KEY)
    if root:
        with open_dict(cfg):
            cfg.data.root = str(root)
    return cfg
