"""Checks of a composed config that must fail before any data is loaded or trained on.

Data set, partition and algorithm fields are checked where they are used (the data module's
and the algorithm's constructors), also before training; unknown config-group choices
(``data=foo``, ``model=foo``) are refused by Hydra with the list of available options.
"""

import math

from omegaconf import DictConfig

from flip.errors import ConfigError

OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")


def _check(cfg: DictConfig, field: str, ok, accepted: str) -> None:
    value = cfg
    for part in field.split("."):
        value = value[part]
    if not ok(value):
        raise ConfigError(field, value, accepted)


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming the first invalid field of the federation and client
    settings (ALGORITHMS.md §1 notation: K, C, R, E) and the accepted values."""
    pos_int = "an integer >= 1"
    _check(cfg, "federation.num_clients", lambda v: isinstance(v, int) and v >= 1, pos_int)
    _check(cfg, "federation.participation", lambda v: 0 < v <= 1, "a fraction C in (0, 1]")
    _check(cfg, "federation.rounds", lambda v: isinstance(v, int) and v >= 1, pos_int)
    _check(cfg, "federation.local_epochs", lambda v: isinstance(v, int) and v >= 1, pos_int)
    _check(cfg, "federation.eval_every", lambda v: isinstance(v, int) and v >= 1, pos_int)
    _check(cfg, "client.lr", lambda v: v > 0, "a learning rate > 0")
    _check(cfg, "client.lr_decay", lambda v: 0 < v <= 1, "a per-round factor γ in (0, 1]")
    _check(cfg, "client.optimizer._target_", lambda v: v in OPTIMIZERS, ", ".join(OPTIMIZERS))
    _check(cfg, "output_dir", lambda v: bool(v), "a directory path (set by Hydra under the CLI)")
    m = max(1, math.floor(cfg.federation.participation * cfg.federation.num_clients + 0.5))
    _check(
        cfg,
        "federation.min_clients",
        lambda v: isinstance(v, int) and 1 <= v <= m,
        f"an integer in 1..{m} (the clients sampled per round, m = round(C·K))",
    )
    _check(cfg, "federation.max_round_retries", lambda v: isinstance(v, int) and v >= 0,
           "an integer >= 0")
    _check(cfg, "federation.max_loss", lambda v: v is None or v > 0, "null or a number > 0")
    _check(cfg, "checkpoint.every", lambda v: isinstance(v, int) and v >= 0,
           "an integer >= 0 (0: no checkpoints)")
    _check(cfg, "checkpoint.keep", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    _check(cfg, "resume", lambda v: v is None or isinstance(v, bool | str),
           "null, true or a path (a run directory or a checkpoint file)")
