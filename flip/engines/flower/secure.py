"""AutoFLIP's exploration through Flower's secure aggregation (SecAgg+; Bell et al., CCS 2020):
the server learns the mean of the explorers' D_k and nothing else (docs/robust-guidance.md,
issue 14; the mean it needs is ALGORITHMS.md §2.1's).

Server side, :func:`secure_mean`: Flower's own ``SecAggPlusWorkflow`` runs the four stages
(setup, key sharing, masked vectors, unmasking) on the run's Grid, one SuperNode per explorer;
its fit instructions carry θ_0 and each explorer's :class:`~flip.federation.executor.ClientJob`
(:class:`ExplorationStrategy`, a legacy Flower ``Strategy`` because the workflow is written
against one). Client side, :func:`explorer_report`: the ClientApp's default ``train`` handler,
wrapped in Flower's ``secaggplus_mod``, trains the job with ``engine=local``'s code, computes
D_k = (θ_k − θ_0)² (clipped to L2 norm C when the guidance is private) and hands it to the
mod, which quantises it over [−c, c] (c = ``exploration.secure_clipping_range``, default C) in
2²² levels and masks it. Only the explorer's cost (samples processed, epochs) travels in the
clear; θ_k never leaves the client.

What is real and what is not: with ``engine.backend=ray`` (or SuperNodes started by hand) the
masked vectors cross Flower's runtime between processes, as in a deployment;
``backend=inprocess`` runs the same protocol messages in one process (a test of the protocol,
not of its secrecy). The Gaussian noise of private guidance is still added by the server to the
sum it receives (central DP: the server is trusted to add it). SecAgg+'s own bytes (keys,
shares) are not counted in ``cost/bytes``; each explorer's upload is counted as one dense
model, as without it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from torch import Tensor

from flip.engines.flower.codec import job_fields, job_from_fields
from flip.errors import ConfigError, TrainingStopped
from flip.federation.executor import ClientJob
from flip.federation.failures import first_nonfinite
from flip.federation.seeding import derive_seed
from flip.pruning import squared_displacement
from flip.pruning.guidance_robust import clip_displacement

log = logging.getLogger(__name__)

QUANTIZATION_RANGE = 2**22
"""SecAgg+'s quantisation levels per entry (Flower's default): resolution 2c / 2²²."""
MODULUS_RANGE = 2**32
"""SecAgg+'s modulus (Flower's default): the sum of n quantised reports must stay below it, so
at most 2³² / 2²² = 1024 explorers."""
QUANTIZATION_STREAM = 4005
"""Stream key of the seed of SecAgg+'s stochastic rounding in an explorer's process."""


@dataclass
class SecureMean:
    """What :func:`secure_mean` returns.

    ``mean``: mean of D_k over the explorers in ``reports``, by parameter name (float32, CPU,
    the parameters' shapes; quantisation error at most 2c / 2²² per entry);
    ``reports``: client → ``{"samples_processed", "epochs", "over_range"}`` of each explorer
    whose masked vector entered the sum (``over_range``: its D_k entries above c, which
    SecAgg+ clipped to c); ``failed``: clients that dropped out (training raised, NaN/Inf
    weights, no reply), with the reason where Flower gave one.
    """

    mean: dict[str, Tensor]
    reports: dict[int, dict] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


class ExplorationStrategy(Strategy):
    """The legacy Flower ``Strategy`` SecAggPlusWorkflow drives: ``configure_fit`` hands each
    explorer's SuperNode its fit instructions, ``aggregate_fit`` keeps the unmasked mean (the
    workflow has put it in every result's parameters) and the explorers' metrics. Nothing
    else is used; evaluation is flip's own."""

    def __init__(self, instructions: dict[int, FitIns], proxies: dict[int, GridClientProxy]):
        self.instructions, self.proxies = instructions, proxies
        self.mean: list[np.ndarray] | None = None
        self.metrics: dict[int, dict] = {}
        self.failures: list[str] = []

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(self.proxies[node], ins) for node, ins in self.instructions.items()]

    def aggregate_fit(self, server_round, results, failures):
        self.failures = [str(f) for f in failures]
        if not results:
            return None, {}
        self.mean = parameters_to_ndarrays(results[0][1].parameters)
        self.metrics = {proxy.node_id: dict(res.metrics) for proxy, res in results}
        return results[0][1].parameters, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_mean(executor, fed, net: torch.nn.Module, jobs: list[ClientJob], clip: float | None,
                clipping_range: float) -> SecureMean:
    """Run the explorers ``jobs`` through SecAgg+ on ``executor``'s Grid (module docstring).

    ``net``: θ_0 (parameters and buffers; every explorer starts from it); ``clip``: C of
    private guidance (each D_k clipped to L2 norm C on its client), ``None`` for none;
    ``clipping_range``: c, the largest D_k entry the quantisation represents.

    Raises:
        ConfigError: two explorers on one SuperNode (``engine.num_supernodes``: SecAgg+ takes
            one vector per node) or more than 1024 explorers (the modulus), before any
            training.
        TrainingStopped: the protocol halted (fewer explorers left than its reconstruction
            threshold, half of them); the message counts those that answered.
    """
    route = executor.nodes(fed)
    node_client = {route.node_of(job.client): job.client for job in jobs}
    if len(node_client) < len(jobs):
        raise ConfigError("engine.num_supernodes", executor.num_supernodes,
                          f"null or >= {len(jobs)} (one SuperNode per explorer)",
                          "SecAgg+ sums one vector per SuperNode.")
    if len(jobs) > MODULUS_RANGE // QUANTIZATION_RANGE:
        raise ConfigError("exploration.client_fraction", len(jobs),
                          f"at most {MODULUS_RANGE // QUANTIZATION_RANGE} explorers "
                          "with exploration.secure_aggregation")
    state = net.state_dict()
    names = list(state)
    guided = [name for name, _ in net.named_parameters()]
    theta0 = ndarrays_to_parameters([state[k].detach().cpu().numpy() for k in names])
    common = {"names": json.dumps(names), "guided": json.dumps(guided),
              "clip": float(clip or 0.0), "range": float(clipping_range)}
    instructions = {
        route.node_of(job.client): FitIns(theta0, {**common, "job": json.dumps(job_fields(job))})
        for job in jobs
    }
    run_id = executor.grid.run.run_id
    proxies = {node: GridClientProxy(node, executor.grid, run_id) for node in instructions}
    strategy = ExplorationStrategy(instructions, proxies)
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={},
                                    state=RecordDict(), run_config={}), strategy=strategy)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        theta0, keep_input=True)
    workflow = SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=0.5, max_weight=1.0,
        clipping_range=float(clipping_range), quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE, timeout=executor.timeout_s)
    workflow(executor.grid, context)
    if strategy.mean is None:
        raise TrainingStopped(
            f"exploration: Flower's SecAgg+ halted with {len(strategy.metrics)} of {len(jobs)} "
            f"explorers answering (failures: {strategy.failures[:3]}); no guidance matrix")
    shapes = {name: p.shape for name, p in net.named_parameters()}
    mean = {name: torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(shapes[name])
            for name, a in zip(guided, strategy.mean, strict=True)}
    reports = {node_client[node]: {key: int(m[key])
                                   for key in ("samples_processed", "epochs", "over_range")}
               for node, m in strategy.metrics.items()}
    failed = {job.client: "dropped out of SecAgg+ (training raised, NaN/Inf weights or no "
              "reply)" for job in jobs if job.client not in reports}
    return SecureMean(mean, reports, failed)


def explorer_report(side, fitins: FitIns) -> FitRes:
    """One explorer's side of :func:`secure_mean`: train the job of ``fitins`` from θ_0 on
    ``side`` (:class:`~flip.engines.flower.client_side.ClientSide`), return D_k (clipped to C
    when ``clip`` > 0) as the FitRes SecAgg+ masks, weight (``num_examples``) 1 so the
    unmasked result is the plain mean, and the explorer's cost and its count of entries above
    ``range`` (c) as metrics. Seeds NumPy's
    global generator from the job (SecAgg+'s stochastic rounding draws from it next), so a
    run is repeatable.

    Raises:
        FloatingPointError: θ_k has NaN/Inf values (the explorer drops out, as a failed
            explorer is left out without SecAgg+).
    """
    config = fitins.config
    names, guided = json.loads(config["names"]), json.loads(config["guided"])
    job = job_from_fields(json.loads(config["job"]))
    arrays = parameters_to_ndarrays(fitins.parameters)
    state = {k: torch.from_numpy(np.array(a)).to(side.device)
             for k, a in zip(names, arrays, strict=True)}
    update = side.train(state, None, job, [])
    bad = first_nonfinite(update.params)
    if bad is not None:
        raise FloatingPointError(f"explorer {job.client}: NaN/Inf values in {bad}")
    report = squared_displacement({k: state[k] for k in guided}, update.params)
    if float(config["clip"]) > 0:
        report = clip_displacement(report, float(config["clip"]))
    over = sum(int((t > float(config["range"])).sum()) for t in report.values())
    np.random.seed(derive_seed(job.seed, QUANTIZATION_STREAM) % 2**32)
    return FitRes(Status(Code.OK, ""),
                  ndarrays_to_parameters([report[k].numpy() for k in guided]),
                  num_examples=1,
                  metrics={"samples_processed": int(update.samples_processed),
                           "epochs": len(update.epoch_losses), "over_range": over})


def fitins_of(content: RecordDict) -> FitIns:
    """The FitIns of a SecAgg+ ``train`` message's content."""
    return compat.recorddict_to_fitins(content, keep_input=True)


def fitres_content(res: FitRes) -> RecordDict:
    """A FitRes as the content SecAgg+'s mod reads back."""
    return compat.fitres_to_recorddict(res, keep_input=True)
