"""``FlowerExecutor``: the executor seam over a Flower Grid (ENGINES.md §1, §3).

This module imports no ``flwr`` at load time, so ``engine=flower`` without the extra installed
is a :class:`~flip.errors.ConfigError` saying how to install it, raised when Hydra builds the
executor: before any data is read.

Without a Grid (``python -m flip engine=flower``) the executor *delegates* the run
(:meth:`FlowerExecutor.delegate`): ``engine.backend=ray`` starts Flower's simulation runtime
(:mod:`flip.engines.flower.simulation`), ``inprocess`` runs the ServerApp and the ClientApp in
this process through :class:`~flip.engines.flower.direct_grid.DirectGrid`; either way the
ServerApp calls :func:`flip.train.train` again with a FlowerExecutor on its Grid, which sends
every cohort's jobs as Messages (:mod:`flip.engines.flower.codec`).
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

from flip.errors import ConfigError
from flip.federation.evaluation import evaluate
from flip.federation.executor import Executor
from flip.params import check, check_choice, is_int, is_number
from flip.pruning import removal_chain

log = logging.getLogger(__name__)

INSTALL = "Install Flower with flip's extra: pip install -e '.[flower]' (or make install-flower)."
BACKENDS = ("ray", "inprocess")


class ClientAppError(RuntimeError):
    """A ClientApp's reply carried a Flower ``Error`` (its training raised, or the runtime
    could not run it); the message names the client, the SuperNode and the reason."""


def machine_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class FlowerExecutor(Executor):
    """``engine=flower`` (ENGINES.md §3): each cohort's jobs go as Flower Messages to the
    SuperNodes, whose ClientApp trains them with ``engine=local``'s code; results come back in
    job order. Evaluation runs where the ServerApp runs, as ``engine=local``'s
    (:func:`flip.federation.evaluation.evaluate`).

    Args (``engine.*``):
        backend: ``ray`` (Flower's simulation runtime on Ray: a local SuperLink and ``flwr
            run``) or ``inprocess`` (ServerApp and ClientApp in this process, no Ray).
        num_supernodes: SuperNodes to wait for (simulation: how many are simulated);
            ``null``: ``federation.num_clients``.
        client_resources: ``{num_cpus, num_gpus}`` per simulated ClientApp (Ray resources).
        timeout_s: seconds a cohort (and the wait for SuperNodes) may take; a job without a
            reply by then is a failed client.
        poll_s: seconds between polls for replies.
        grid: the ServerApp's Grid (set by :mod:`flip.engines.flower.server_app`).

    Raises:
        ConfigError: ``flwr`` is not installed, or a field is out of range (when built); for a
            simulation (:meth:`delegate` with ``ray``), Ray is not installed or a
            ``client_resources`` request is larger than this machine (Ray would wait for it
            forever), naming the field: before any data is read.
    """

    secure_aggregation = True
    """AutoFLIP's ``exploration.secure_aggregation`` runs here (:meth:`secure_mean`)."""

    def __init__(self, name: str = "flower", backend: str = "ray",
                 num_supernodes: int | None = None, client_resources: dict | None = None,
                 timeout_s: float = 3600.0, poll_s: float = 0.05, grid=None):
        super().__init__(name)
        if importlib.util.find_spec("flwr") is None:
            raise ConfigError("engine", name, "local (flwr is not installed)", INSTALL)
        self.backend = check_choice("engine.backend", backend, BACKENDS)
        self.num_supernodes = check(
            "engine.num_supernodes", num_supernodes,
            num_supernodes is None or (is_int(num_supernodes) and num_supernodes >= 1),
            "null (one per client) or an integer >= 1")
        res = {"num_cpus": 1, "num_gpus": 0.0, **(client_resources or {})}
        for key in res:
            check(f"engine.client_resources.{key}", res[key], key in ("num_cpus", "num_gpus"),
                  "keys num_cpus, num_gpus")
        check("engine.client_resources.num_cpus", res["num_cpus"],
              is_int(res["num_cpus"]) and res["num_cpus"] >= 1,
              "an integer number of CPUs >= 1 (Flower 1.42's simulation takes whole CPUs)")
        check("engine.client_resources.num_gpus", res["num_gpus"],
              is_number(res["num_gpus"]) and res["num_gpus"] >= 0, "a number of GPUs >= 0")
        self.client_resources = res
        self.timeout_s = check("engine.timeout_s", timeout_s,
                               is_number(timeout_s) and timeout_s > 0, "seconds > 0")
        self.poll_s = check("engine.poll_s", poll_s, is_number(poll_s) and poll_s > 0,
                            "seconds > 0")
        self.grid = grid
        self.node_map = None
        self.cohorts = 0

    def check_machine(self) -> None:
        """Ray runs a ClientApp only where its ``client_resources`` fit; a request larger than
        the machine would never be scheduled. Raises ``ConfigError`` naming the field."""
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("engine.backend", "ray", "inprocess (Ray is not installed)",
                              INSTALL)
        cpus, gpus = machine_cpus(), torch.cuda.device_count()
        check("engine.client_resources.num_cpus", self.client_resources["num_cpus"],
              self.client_resources["num_cpus"] <= cpus,
              f"an integer number of CPUs in 1..{cpus} (this machine has {cpus})")
        check("engine.client_resources.num_gpus", self.client_resources["num_gpus"],
              self.client_resources["num_gpus"] <= gpus,
              f"a number of GPUs in [0, {gpus}] (this machine has {gpus})")

    def delegate(self, cfg) -> dict | None:
        """With a Grid: ``None`` (train here). Without: run ``cfg`` on Flower (module
        docstring) and return its summary."""
        if self.grid is not None:
            return None
        if self.backend == "inprocess":
            from flip.engines.flower.direct_grid import run_in_process

            return run_in_process(cfg)
        self.check_machine()
        from flip.engines.flower.simulation import run_simulation

        return run_simulation(cfg, self)

    def nodes(self, fed):
        """The :class:`~flip.engines.flower.nodes.NodeMap`, discovered on first use."""
        if self.node_map is None:
            from flip.engines.flower.nodes import discover

            expected = self.num_supernodes or fed.dm.num_clients
            self.node_map = discover(self.grid, expected, self.timeout_s, self.poll_s)
            log.info("Flower: %d SuperNodes", len(self.node_map.nodes))
        return self.node_map

    def train(self, fed, net, masks, jobs):
        """One Message per job to the SuperNode of its client (the state dict and masks
        encoded once), replies decoded onto the server's device; a job whose reply is an
        error or missing comes back as :class:`ClientAppError` / ``TimeoutError``."""
        self.check([spec for job in jobs for spec in job.callbacks])
        if not jobs:
            return []
        from flwr.app import Message

        from flip.engines.flower.codec import (
            TRAIN,
            decode_update,
            encode_masks,
            encode_state,
            train_request,
        )
        from flip.engines.flower.nodes import exchange

        route = self.nodes(fed)
        arrays = encode_state(net.state_dict())
        bits = encode_masks(masks) if masks is not None else None
        removals = removal_chain(net)
        self.cohorts += 1
        messages = [
            Message(train_request(arrays, bits, job, removals),
                    dst_node_id=route.node_of(job.client), message_type=TRAIN,
                    group_id=f"cohort-{self.cohorts}", ttl=self.timeout_s)
            for job in jobs
        ]
        out = []
        for job, msg, reply in zip(jobs, messages,
                                   exchange(self.grid, messages, self.timeout_s, self.poll_s),
                                   strict=True):
            node = msg.metadata.dst_node_id
            if reply is None:
                out.append(TimeoutError(f"client {job.client}: no reply from SuperNode {node} "
                                        f"within engine.timeout_s={self.timeout_s} s"))
            elif reply.has_error():
                out.append(ClientAppError(f"client {job.client} on SuperNode {node}: "
                                          f"{reply.error.reason}"))
            else:
                try:
                    out.append(decode_update(reply.content, fed.device))
                except Exception as err:  # a malformed reply is that client's failure
                    out.append(err)
        return out

    def secure_mean(self, fed, net, jobs, clip, clipping_range):
        """The mean of the explorers' D_k through Flower's SecAgg+
        (:func:`flip.engines.flower.secure.secure_mean`, whose errors it raises)."""
        from flip.engines.flower.secure import secure_mean

        return secure_mean(self, fed, net, list(jobs), clip, clipping_range)

    def evaluate(self, fed, net, splits=("val", "global", "local")):
        return evaluate(fed, net, splits)
