"""``train(cfg)``: one federated run composed by Hydra, testable without the CLI."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from flip.devices import build_devices
from flip.errors import ConfigError, DataNotFoundError
from flip.federation import Executor, Federation
from flip.federation.async_engine import AsyncFederation
from flip.federation.checkpoint import CHECKPOINT_DIR, Checkpointer
from flip.federation.recorder import RunRecorder
from flip.federation.resume import (
    check_partition,
    check_resume_config,
    find_resume,
    partition_state,
)
from flip.federation.seeding import INIT, derive_seed
from flip.models import init_weights
from flip.params import (
    AsyncParams,
    CheckpointParams,
    ClientParams,
    FederationParams,
    check,
    from_node,
)
from flip.provenance import provenance
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


def run_params(cfg: DictConfig) -> tuple[FederationParams, ClientParams, CheckpointParams]:
    """The run's validated settings, before any data is read or any client trained: the
    federation, the client, the checkpoints, the asynchronous engine (``async.*``) and the
    devices (``devices.*``, checked for K = ``federation.num_clients``, and again for the K
    a natural partition gives), plus ``output_dir``, ``resume`` and a GPU trainer on a
    machine without one (``trainer=gpu``).

    Raises:
        ConfigError: naming the first invalid field and its accepted values.
    """
    check("output_dir", cfg.get("output_dir"), bool,
          "a directory path (set by Hydra under the CLI)")
    check("resume", cfg.get("resume"), lambda v: v is None or isinstance(v, bool | str),
          "null, true or a path (a run directory or a checkpoint file)")
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    check("trainer.accelerator", accelerator,
          accelerator not in ("gpu", "cuda") or torch.cuda.is_available(),
          "cpu or auto on a machine without a CUDA GPU",
          hint="This machine has no CUDA GPU that torch can use: run with trainer=cpu (or "
          "trainer=default, which uses a GPU when there is one).")
    fed_params = from_node(FederationParams, to_dict(cfg.federation), "federation")
    async_params(cfg)
    build_devices(to_dict(cfg.get("devices") or {}), fed_params.num_clients)
    return (
        fed_params,
        from_node(ClientParams, to_dict(cfg.client), "client"),
        from_node(CheckpointParams, to_dict(cfg.checkpoint), "checkpoint"),
    )


def async_params(cfg: DictConfig) -> AsyncParams:
    """The asynchronous engine's settings (``async.*``, ASYNC.md §2); defaults without the
    node. Raises ``ConfigError`` naming the field."""
    node = cfg.get("async")
    return from_node(AsyncParams, to_dict(node) if node is not None else {}, "async")


def to_dict(node) -> dict:
    """A config node as plain containers, interpolations resolved."""
    return OmegaConf.to_container(node, resolve=True)


def train(cfg: DictConfig, executor: Executor | None = None) -> dict:
    """Run one federated experiment and return its summary (also written to ``summary.json``).

    Build (the settings are validated first: ``ConfigError`` on bad values; then the data
    module, ``DataNotFoundError`` saying where to put missing files; the network θ_0; the
    algorithm; the federation), (resume), fit, write. Everything before the first training
    step raises on bad input; after it, each round's row is written as it ends.
    Output: ``cfg.output_dir`` (the Hydra run directory under the CLI) gets ``config.yaml``
    (with K as the data gave it), ``partition.json``, ``class_histogram.{csv,png}``,
    ``rounds.csv``, ``timings.csv``, ``summary.json``, the final global model ``model.pt``
    (state dict in the dense layout; a compacted AutoFLIP run also writes
    ``model_compact.pt``), the algorithm's artifacts (AutoFLIP: ``guidance.pt``, ``mask.pt``)
    and ``checkpoints/``.

    ``cfg.resume`` (``true`` or a path, :func:`flip.federation.resume.find_resume`)
    continues an interrupted run in its own directory from its last checkpoint instead: the
    config and the partition must match the checkpoint's (``CheckpointError`` otherwise), the
    algorithm's set-up is not repeated, ``rounds.csv`` continues without duplicated or lost
    rows and W&B continues the same run.

    ``executor``: where clients train; default ``cfg.engine`` built here. An engine that runs
    the experiment elsewhere (:meth:`flip.federation.Executor.delegate`: ``engine=flower``
    starts a Flower runtime whose ServerApp calls this function with its own executor) gets
    the validated config before any data is read, and its summary is returned.
    """
    fed_params, client_params, ckpt_params = run_params(cfg)
    quiet_lightning()
    algorithm = build(cfg.algorithm)
    executor = executor or build(cfg.engine)
    algorithm.check_engine(executor)  # settings the engine cannot serve, before any data
    summary = executor.delegate(cfg)
    if summary is not None:
        return summary
    # the config as composed, before the data may set K (natural partitions): what a resume
    # compares; the partition check below covers the clients themselves
    composed = to_dict(cfg)
    resume = find_resume(cfg.get("resume"), Path(cfg.output_dir))
    if resume is not None:
        check_resume_config(composed, resume)
        log.info("resuming %s after round %d (%s)", resume.run_dir, resume.round, resume.path.name)
    out_dir = resume.run_dir if resume is not None else Path(cfg.output_dir)

    # ----- build
    dm = build_datamodule(cfg)
    fed_params = replace(fed_params, num_clients=dm.num_clients)  # natural partitions: K = users
    devices = build_devices(to_dict(cfg.get("devices") or {}), dm.num_clients)
    algorithm.check_data(dm)  # settings the data's K cannot satisfy, before anything is written
    run_cfg = OmegaConf.merge(
        cfg, {"output_dir": str(out_dir), "federation": {"num_clients": dm.num_clients}}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg, resolve=True))
    if resume is not None:
        check_partition(dm.partition_indices, resume)
    else:
        dm.save_partition(out_dir)
    net = build_network(cfg, dm)
    loggers = build_loggers(cfg, out_dir, resume.wandb_id if resume else None)
    for lg in loggers:
        lg.log_hyperparams(to_dict(run_cfg))
    wandb_id = next((lg.experiment.id for lg in loggers if isinstance(lg, WandbLogger)), None)
    for lg in loggers:  # W&B: simulated time as the x-axis of the evaluations (ASYNC.md §1)
        if isinstance(lg, WandbLogger):
            lg.experiment.define_metric("sim/time_s")
            for group in ("val/*", "global/*", "local/*", "buffer/*"):
                lg.experiment.define_metric(group, step_metric="sim/time_s")
    engine, extra = Federation, {}
    if getattr(algorithm, "asynchronous", False):  # ASYNC.md §2: the asynchronous engine
        engine, extra = AsyncFederation, {"asynchronous": async_params(cfg)}
    fed = engine(
        net, dm, algorithm,
        trainer=instantiate(cfg.trainer),
        params=fed_params,
        client=client_params,
        seed=cfg.seed,
        executor=executor,
        recorder=RunRecorder(
            out_dir, loggers, resume.state["federation"]["history"] if resume else None
        ),
        progress=cfg.progress,
        checkpointer=Checkpointer(
            out_dir / CHECKPOINT_DIR, every=ckpt_params.every, keep=ckpt_params.keep,
            extra={"config": composed, "partition": partition_state(dm.partition_indices),
                   "wandb_id": wandb_id},
        ),
        devices=devices,
        **extra,
    )

    # ----- fit
    try:
        summary = fed.fit(resume.state if resume else None)
    except BaseException:
        close_loggers(loggers, "failed")
        raise

    # ----- write
    torch.save(fed.dense_state_dict(), out_dir / "model.pt")  # the dense layout
    if fed.layout is not None:  # the compact network AutoFLIP trained (same names, smaller)
        torch.save(fed.net.state_dict(), out_dir / "model_compact.pt")
    algorithm.save(out_dir)
    summary.update(
        provenance=provenance(fed.device),
        experiment=cfg.experiment_name,
        seed=cfg.seed,
        model=cfg.model.name,
        data={"dataset": dm.name, "partition": cfg.partition.name, "num_clients": dm.num_clients},
    )
    fed.recorder.write_summary(summary)
    for lg in loggers:
        run = getattr(lg, "experiment", None)
        if run is not None and hasattr(run, "summary"):  # W&B: the run's summary panel
            run.summary.update(flatten(summary))
    close_loggers(loggers, "success")
    return summary
