"""``train(cfg)``: one federated run composed by Hydra, testable without the CLI."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from flip.checks import check_config
from flip.errors import ConfigError, DataNotFoundError
from flip.federation import Federation
from flip.federation.checkpoint import (
    CHECKPOINT_DIR,
    Checkpointer,
    check_partition,
    check_resume_config,
    find_resume,
    partition_state,
)
from flip.federation.recorder import RunRecorder
from flip.federation.seeding import INIT, derive_seed
from flip.models import init_weights
from flip.wandb_mode import WANDB_LOGGER, announce, wandb_logger_kwargs

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


def build_datamodule(cfg: DictConfig):
    """The run's data module from ``cfg.data`` with ``federation.num_clients``, the partition
    and the seed, its data loaded, partitioned and split (``prepare_data`` and ``setup``).
    Raises ``ConfigError`` for settings the data cannot satisfy and ``DataNotFoundError`` when
    the files are missing (DATA.md)."""
    part = {k: v for k, v in cfg.partition.items() if k != "name"}
    dm = build(
        cfg.data,
        num_clients=cfg.federation.num_clients,
        partition=cfg.partition.name,
        seed=cfg.seed,
        **part,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_network(cfg: DictConfig, dm) -> torch.nn.Module:
    """θ_0: ``cfg.model.net`` with the data module's ``model_kwargs``, initialised by
    ``cfg.model.init`` from the run seed's init stream (ALGORITHMS.md §2.1)."""
    torch.manual_seed(derive_seed(cfg.seed, INIT))
    net = build(cfg.model.net, **dm.model_kwargs())
    init_weights(net, cfg.model.init)
    return net


def build_loggers(cfg: DictConfig, out_dir: Path, wandb_id: str | None = None) -> list:
    """The configured experiment loggers (``cfg.logger``: a mapping of name → ``_target_``),
    e.g. Lightning's ``WandbLogger`` (offline unless ``logger.wandb.offline=false``; the mode is
    decided without the network, see :mod:`flip.wandb_mode`; ``wandb_id``: the W&B run a resumed
    run continues). An offline W&B run says once where it is and how to upload it."""
    loggers = []
    for _, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is not None and "_target_" in lcfg:
            kwargs, reason = {}, ""
            if lcfg["_target_"] == WANDB_LOGGER:
                kwargs, reason = wandb_logger_kwargs(bool(lcfg.get("offline")), wandb_id)
            lg = instantiate(lcfg, save_dir=str(out_dir), _convert_="all", **kwargs)
            if lcfg["_target_"] == WANDB_LOGGER:
                # Lightning always passes anonymous=None, which W&B now warns about on every run
                if getattr(lg, "_wandb_init", {}).get("anonymous", 0) is None:
                    del lg._wandb_init["anonymous"]
                announce(lg, reason, resumed=wandb_id is not None)
            loggers.append(lg)
    return loggers


def close_loggers(loggers: list, status: str) -> None:
    """Finalize the loggers and end a W&B run (``finish``), so that the next run of the same
    process (a Hydra multirun) starts its own W&B run instead of reusing this one."""
    for lg in loggers:
        lg.finalize(status)
        run = getattr(lg, "_experiment", None)
        if run is not None and hasattr(run, "finish"):
            run.finish(exit_code=0 if status == "success" else 1)


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
    ``timings.csv``, ``summary.json``, the final global model ``model.pt`` (state dict in the
    dense layout; a compacted AutoFLIP run also writes ``model_compact.pt``), the
    algorithm's artifacts (AutoFLIP: ``guidance.pt``, ``mask.pt``) and ``checkpoints/``.

    ``cfg.resume`` (``true`` or a path, :func:`flip.federation.checkpoint.find_resume`)
    continues an interrupted run in its own directory from its last checkpoint instead: the
    config and the partition must match the checkpoint's (``CheckpointError`` otherwise), the
    algorithm's set-up is not repeated, ``rounds.csv`` continues without duplicated or lost
    rows and W&B continues the same run.
    """
    check_config(cfg)
    quiet_lightning()
    out_dir = Path(cfg.output_dir)
    resume = find_resume(cfg.get("resume"), out_dir)
    # the config as composed, before the data may set K (natural partitions): what a resume
    # compares; the partition check below covers the clients themselves
    composed = OmegaConf.to_container(cfg, resolve=True)
    if resume is not None:
        check_resume_config(composed, resume)
        out_dir = resume.run_dir
        with open_dict(cfg):
            cfg.output_dir = str(out_dir)
        log.info("resuming %s after round %d (%s)", out_dir, resume.round, resume.path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    algorithm = build(cfg.algorithm)
    fed_cfg = cfg.federation
    dm = build_datamodule(cfg)
    if dm.num_clients != fed_cfg.num_clients:  # natural partitions: K = users (DATA.md)
        fed_cfg.num_clients = dm.num_clients
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if resume is not None:
        check_partition(dm.partition_indices, resume)
    else:
        dm.save_partition(out_dir)

    net = build_network(cfg, dm)

    loggers = build_loggers(cfg, out_dir, resume.wandb_id if resume else None)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    wandb_id = next((lg.experiment.id for lg in loggers if isinstance(lg, WandbLogger)), None)
    checkpointer = Checkpointer(
        out_dir / CHECKPOINT_DIR,
        every=cfg.checkpoint.every,
        keep=cfg.checkpoint.keep,
        extra={
            "config": composed,
            "partition": partition_state(dm.partition_indices),
            "wandb_id": wandb_id,
        },
    )
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
        recorder=RunRecorder(
            out_dir, loggers, resume.state["federation"]["history"] if resume else None
        ),
        progress=cfg.progress,
        min_clients=fed_cfg.min_clients,
        max_round_retries=fed_cfg.max_round_retries,
        max_loss=fed_cfg.max_loss,
        checkpointer=checkpointer,
    )
    try:
        summary = fed.fit(resume.state if resume else None)
    except BaseException:
        close_loggers(loggers, "failed")
        raise
    torch.save(fed.dense_state_dict(), out_dir / "model.pt")  # the dense layout
    if fed.index is not None:  # the compact network AutoFLIP trained (same names, smaller)
        torch.save(fed.net.state_dict(), out_dir / "model_compact.pt")
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
    close_loggers(loggers, "success")
    return summary
