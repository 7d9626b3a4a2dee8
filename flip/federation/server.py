"""The federation: the global model, its mask and layout, and the rounds over it (ALGORITHMS.md
§1). The round itself is :mod:`flip.federation.round`; clients train behind the executor seam
(:mod:`flip.federation.executor`); costs are the :class:`~flip.metrics.ledger.CostLedger`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import Tensor, nn

from flip.devices import Clock, Devices, build_devices
from flip.federation.aggregation import build_server_optimizer
from flip.federation.checkpoint import set_rng_state
from flip.federation.executor import EVAL_SPLITS, ClientUpdate, Executor, LocalExecutor
from flip.federation.progress import RoundProgress
from flip.federation.recorder import RunRecorder
from flip.federation.round import run_round, stepped_tensors
from flip.metrics.ledger import CostLedger
from flip.params import ClientParams, FederationParams, optimizer_factory
from flip.pruning import CompactLayout, apply_masks

log = logging.getLogger(__name__)

__all__ = ["ClientUpdate", "Federation"]


class Federation:
    """Runs rounds of ALGORITHMS.md §1 on a global network with an algorithm's hooks.

    Args:
        net: the initialised global network θ_0 (moved to the trainer's device).
        datamodule: a set-up client data module (:mod:`flip.data`).
        algorithm: a :class:`flip.algorithms.Algorithm` (its hooks, see there).
        trainer: partial ``lightning.Trainer`` constructor (the one shared configuration);
            called with ``max_epochs`` and ``callbacks``.
        params: the round's budget and failure rules (:class:`flip.params.FederationParams`).
        client: local training (:class:`flip.params.ClientParams`).
        seed: the run seed; all random streams derive from it (:mod:`flip.federation.seeding`).
        executor: where clients train (default :class:`LocalExecutor`, ``engine=local``).
        recorder: where rows go (``rounds.csv``, loggers); progress: show a progress bar.
        checkpointer: writes the run state after rounds
            (:class:`flip.federation.checkpoint.Checkpointer`); ``None``: no checkpoints.
        devices: the clients' devices (:class:`flip.devices.Devices`; default: the
            ``default`` preset for the data's K), which the simulated clock runs on.

    Attributes an algorithm uses: ``net`` (θ, compact after :meth:`compact`), ``masks`` (bool
    per parameter of ``net``, or ``None``), ``dm``, ``seed``, ``params``, ``client``,
    ``executor``, ``ledger`` (costs; ``ledger.add_setup`` for set-up work), ``device``,
    ``devices`` and ``clock`` (:class:`flip.devices.Clock`), ``sim_time`` (simulated seconds
    so far, ASYNC.md §1), ``participation`` (aggregated updates per client).
    """

    def __init__(
        self,
        net: nn.Module,
        datamodule,
        algorithm,
        *,
        trainer: Callable,
        params: FederationParams,
        client: ClientParams,
        seed: int = 0,
        executor: Executor | None = None,
        recorder: RunRecorder | None = None,
        progress: bool = True,
        checkpointer=None,
        devices: Devices | None = None,
    ):
        self.dm = datamodule
        self.algorithm = algorithm
        self.trainer_factory = trainer
        self.params = params
        self.client = client
        self.client_optimizer = optimizer_factory(client.optimizer)
        self.seed = seed
        self.executor = executor or LocalExecutor()
        self.recorder = recorder
        self.progress = progress
        self.checkpointer = checkpointer
        self.device = trainer(max_epochs=1).strategy.root_device
        self.net = net.to(self.device)
        if hasattr(datamodule, "use_device"):  # data.device_data: batches from device tensors
            datamodule.use_device(self.device)
        self.ledger = CostLedger(self.net, datamodule.example_input())
        self.masks: dict[str, Tensor] | None = None
        self.layout: CompactLayout | None = None  # set by compact()
        self.history: list[dict] = []
        self.round = 0  # the last completed round
        self.devices = devices or build_devices({}, datamodule.num_clients)
        self.clock = Clock(self.devices, seed)
        self.sim_time = 0.0  # simulated seconds at the end of the last round (ASYNC.md §1)
        self.participation = [0] * datamodule.num_clients
        # the next evaluation times on the simulated-time grids (s): full, validation only
        self.next_eval = [params.eval_every_s, params.val_every_s]

    def _on_grid(self, which: int) -> bool:
        every = (self.params.eval_every_s, self.params.val_every_s)[which]
        if every is None or self.sim_time < self.next_eval[which]:
            return False
        while self.next_eval[which] <= self.sim_time:
            self.next_eval[which] += every
        return True

    def evaluation_due(self, r: int, last: int) -> tuple[str, ...]:
        """What round (aggregation) ``r`` evaluates (:data:`~flip.federation.executor.
        EVAL_SPLITS`, or nothing): everything every ``federation.eval_every``, at ``last``
        (the budget), when the simulated clock reaches ``federation.max_time_s`` and at the
        first one past each multiple of ``federation.eval_every_s``; the validation split at
        the first one past each multiple of ``federation.val_every_s``."""
        full = self._on_grid(0)
        val = self._on_grid(1)
        if full or r % self.params.eval_every == 0 or r == last or self.time_is_up():
            return EVAL_SPLITS
        return ("val",) if val else ()

    def time_is_up(self) -> bool:
        """Whether the simulated clock has reached ``federation.max_time_s``."""
        budget = self.params.max_time_s
        return budget is not None and self.sim_time >= budget

    @property
    def lr(self) -> float:
        """The client learning rate of round 1 (set-up training uses it, ALGORITHMS.md §2.1)."""
        return self.client.lr

    def set_masks(self, masks: dict[str, Tensor] | None) -> None:
        """Fix the global mask M (bool, per parameter) and apply θ ← θ ⊙ M (§2.3)."""
        self.masks = {k: v.to(self.device) for k, v in masks.items()} if masks else None
        apply_masks(self.net, self.masks)

    def compact(self, removal: dict[str, list[int]]) -> None:
        """Shrink the global network to the smaller dense network without the units of
        ``removal`` (:class:`flip.pruning.CompactLayout`, ALGORITHMS.md §2.2), before round 1.

        The removed units must already be zero under :attr:`masks` (AutoFLIP's structured
        mask), so the compact network computes the same function. From here on clients train
        and send the compact network, the mask lives inside it (gathered into its shapes), the
        server optimizer steps on it, FLOPs are profiled on it and bytes counted on its tensors;
        :meth:`dense_state_dict` writes it back into the dense layout."""
        example = self.dm.example_input().to(self.device)
        small, self.layout = CompactLayout.build(self.net, removal, example)
        masks = self.layout.masks(self.masks) if self.masks else None
        self.net = small.to(self.device)
        self.set_masks(masks)
        self.ledger.reprofile(self.net)

    @property
    def removal(self) -> dict[str, list[int]]:
        """The units compacted away (empty without compaction)."""
        return self.layout.removal if self.layout else {}

    def dense_state_dict(self) -> dict[str, Tensor]:
        """The global model in the dense network's layout (for export and comparison): the
        compact network's values at their dense positions, zeros for removed parameters.
        Without compaction, the network's own state dict."""
        state = self.net.state_dict()
        return self.layout.dense_state_dict(state) if self.layout else state

    def run_round(self, r: int) -> dict:
        """Round ``r`` (:func:`flip.federation.round.run_round`); returns its row."""
        return run_round(self, r)

    def setup(self, state: dict | None = None) -> None:
        """Before round 1: the algorithm's set-up (e.g.
        AutoFLIP's exploration, mask and compaction), the server optimizer, the costs of what
        round 1 sends. With ``state`` (a :meth:`state_dict`, resuming) the algorithm's set-up is
        skipped and everything is restored from it instead (the network compacted again first).
        Client callback kinds the executor cannot build raise ``ConfigError`` first."""
        self.executor.check(self.algorithm.client_callbacks(self, 1, 0))
        if state is None:
            self.algorithm.setup(self)
        elif state.get("removal"):
            self.compact(state["removal"])
        self.server_opt = build_server_optimizer(
            optimizer_factory(self.params.server_optimizer),
            list(stepped_tensors(self.net, self.params.buffers).values()),
        )
        if state is not None:
            self.load_state_dict(state)
            return
        self.ledger.price(self.net, self.masks, self.ledger.flops)

    def state_dict(self) -> dict:
        """Everything a resumed run needs after round :attr:`round`: θ and buffers, the masks
        (both in the compact layout after :meth:`compact`), the removed units, the server
        optimizer's state, the algorithm's state (:meth:`Algorithm.state_dict`), the ledger's
        totals and counts, and the rows written so far. Tensors are on the device; the random
        streams need no state (:mod:`flip.federation.seeding`). Also the simulated time, the
        clock's link queues and the participation counts (ASYNC.md §1)."""
        return {
            "round": self.round,
            "sim_time": self.sim_time,
            "clock": self.clock.state_dict(),
            "participation": list(self.participation),
            "next_eval": list(self.next_eval),
            "net": self.net.state_dict(),
            "masks": self.masks,
            "removal": self.removal,
            "server_optimizer": self.server_opt.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            **self.ledger.state_dict(),
            "history": [dict(row) for row in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (after the server optimizer is built, see :meth:`setup`)."""
        self.net.load_state_dict(state["net"])
        self.set_masks(state["masks"])
        self.server_opt.load_state_dict(state["server_optimizer"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.ledger.load_state_dict(state)
        self.history = [dict(row) for row in state["history"]]
        self.round = int(state["round"])
        self.sim_time = float(state.get("sim_time", 0.0))  # older checkpoints: none
        if "clock" in state:
            self.clock.load_state_dict(state["clock"])
        self.participation = list(state.get("participation", self.participation))
        self.next_eval = list(state.get("next_eval", self.next_eval))

    def fit(self, resume: dict | None = None) -> dict:
        """:meth:`setup`, then rounds up to R (or until the simulated clock reaches
        ``federation.max_time_s``); every row is written as soon as its round ends, then the
        checkpoint if one is due (and after the last round). ``resume``: a checkpoint
        (:func:`flip.federation.checkpoint.load_checkpoint`) to continue from instead of setting
        up: its state and random generators are restored. Returns :meth:`summary`."""
        self.setup(resume["federation"] if resume else None)
        if resume:
            set_rng_state(resume["rng"])
        with RoundProgress(self.params.rounds, enabled=self.progress, done=self.round) as bar:
            for r in range(self.round + 1, self.params.rounds + 1):
                if self.time_is_up():
                    break
                row = self.run_round(r)
                self.history.append(row)
                self.round = r
                if self.recorder:
                    self.recorder.log_round(row)
                if self.checkpointer:
                    self.checkpointer.after_round(self, last=self.time_is_up())
                bar.update(row)
        return self.summary()

    def summary(self) -> dict:
        """The run's summary: ``final`` (metrics of the last evaluated round), ``best`` (the
        round with the highest ``val/acc1``, the first such, with its validation and test
        accuracy: picked on validation, ALGORITHMS.md §5; empty without a validation split),
        ``best_test_optimistic`` (the highest test top-1/top-5 over the rounds: picked on the
        test set, so optimistic), the ledger's ``cost`` block (ALGORITHMS.md §4, with and
        without the set-up), the algorithm's ``algorithm_info``, the simulated time
        ``sim_time_s`` and ``participation`` (aggregated updates per client, in client order;
        ASYNC.md §1)."""
        evaluated = [h for h in self.history if "global/acc1" in h]
        final = {k: v for k, v in evaluated[-1].items() if "/" in k} if evaluated else {}
        validated = [h for h in evaluated if "val/acc1" in h]
        best = {}
        if validated:
            pick = max(validated, key=lambda h: h["val/acc1"])
            best = {"picked_on": "val/acc1", "round": pick["round"],
                    **{k: pick[k] for k in ("val/acc1", "global/acc1", "global/acc5")}}
        optimistic = (
            {k: max(h[k] for h in evaluated) for k in ("global/acc1", "global/acc5")}
            if evaluated
            else {}
        )
        return {
            "algorithm": self.algorithm.name,
            "rounds_completed": len(self.history),
            "clients_failed": sum(h.get("clients/failed", 0) for h in self.history),
            "final": final,
            "best": best,
            "best_test_optimistic": optimistic,
            "cost": self.ledger.summary(),
            "algorithm_info": self.algorithm.info(self),
            "sim_time_s": self.sim_time,
            "participation": list(self.participation),
        }
