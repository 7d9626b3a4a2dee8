"""``train(cfg)``: one federated run composed by Hydra, testable without the CLI."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from flip.checks import check_config
from flip.errors import ConfigError, DataNotFoundError
from flip.federation import Federation
from flip.federation.recorder import RunRecorder
from flip.federation.seeding import INIT, derive_seed
from flip.models import init_weights

log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners: a run builds one Trainer per client and round."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*TPU available.*",
        ".*LeafSpec.*",
        ".*is a leaf.*",
    ):
        warnings.filterwarnings("ignore", message=msg)


def build(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate``, re-raising flip's own ``ConfigError``/``DataNotFoundError``
    unwrapped, so the user reads the field and the accepted values, not Hydra's wrapper."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError | DataNotFoundError):
            raise err.__cause__ from None
        raise


def build_loggers(cfg: DictConfig, out_dir: Path) -> list:
    """The configured experiment loggers (``cfg.logger``: a mapping of name → ``_target_``),
    e.g. Lightning's ``WandbLogger`` (offline unless ``logger.wandb.offline=false``)."""
    loggers = []
    for _, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is not None and "_target_" in lcfg:
            loggers.append(instantiate(lcfg, save_dir=str(out_dir)))
    return loggers


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"cost": {"gb_total": 1}}`` → ``{"cost/gb_total": 1}``; keys that already hold a
    slash (``final`` → ``global/acc1``) are joined with one, e.g. ``final/global/acc1``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def train(cfg: DictConfig) -> dict:
    """Run one federated experiment and return its summary (also written to ``summary.json``).

    Order: check the config (``ConfigError`` on bad values), build the data module (data
    found or a ``DataNotFoundError`` saying where to put it; the partition is validated and
    written), the network θ_0, the algorithm, then the rounds. Everything before the first
    training step raises on bad input; after it, each round's row is written as it ends.
    Output: ``cfg.output_dir`` (the Hydra run directory under the CLI) gets
    ``config.yaml``, ``partition.json``, ``class_histogram.{csv,png}``, ``rounds.csv``,
    ``summary.json``, the final global model ``model.pt`` (state dict) and the algorithm's
    artifacts (AutoFLIP: ``guidance.pt``, ``mask.pt``).
    """
    check_config(cfg)
    quiet_lightning()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    algorithm = build(cfg.algorithm)
    fed_cfg = cfg.federation
    part = {k: v for k, v in cfg.partition.items() if k != "name"}
    dm = build(
        cfg.data,
        num_clients=fed_cfg.num_clients,
        partition=cfg.partition.name,
        seed=cfg.seed,
        **part,
    )
    dm.prepare_data()
    dm.setup("fit")
    dm.save_partition(out_dir)

    torch.manual_seed(derive_seed(cfg.seed, INIT))
    net = build(cfg.model.net, in_channels=dm.input_shape[0], num_classes=dm.num_classes)
    init_weights(net, cfg.model.init)

    loggers = build_loggers(cfg, out_dir)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    fed = Federation(
        net,
        dm,
        algorithm,
        trainer=instantiate(cfg.trainer),
        client_optimizer=instantiate(cfg.client.optimizer),
        lr=cfg.client.lr,
        lr_decay=cfg.client.lr_decay,
        server_optimizer=instantiate(fed_cfg.server_optimizer),
        rounds=fed_cfg.rounds,
        local_epochs=fed_cfg.local_epochs,
        participation=fed_cfg.participation,
        eval_every=fed_cfg.eval_every,
        seed=cfg.seed,
        recorder=RunRecorder(out_dir, loggers),
        progress=cfg.progress,
    )
    summary = fed.fit()
    torch.save(fed.net.state_dict(), out_dir / "model.pt")
    algorithm.save(out_dir)
    summary.update(
        experiment=cfg.experiment_name,
        seed=cfg.seed,
        model=cfg.model.name,
        data={"dataset": dm.name, "partition": cfg.partition.name, "num_clients": dm.num_clients},
    )
    RunRecorder.write_summary(fed.recorder, summary)
    for lg in loggers:
        run = getattr(lg, "experiment", None)
        if run is not None and hasattr(run, "summary"):  # W&B: the run's summary panel
            run.summary.update(flatten(summary))
        lg.finalize("success")
        if run is not None and hasattr(run, "finish"):  # W&B: end the run, so the next job of
            run.finish()  # a Hydra multirun starts its own (group, job_type) instead of reusing it
    return summary
