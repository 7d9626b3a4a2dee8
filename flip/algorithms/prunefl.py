"""PruneFL: initial pruning on one client, then adaptive reconfiguration (ALGORITHMS.md §3.1)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from flip.algorithms.base import Algorithm
from flip.algorithms.prunefl_initial import KIND as INITIAL_PRUNING
from flip.errors import ConfigError
from flip.federation.callbacks import CallbackSpec
from flip.federation.executor import ClientJob
from flip.federation.seeding import derive_seed
from flip.metrics.costs import BYTES_PER_VALUE, transfer_bytes
from flip.metrics.time_model import parameter_times
from flip.params import POS_INT, check, check_bool, check_choice, from_node, is_int, is_number
from flip.pruning import decrease_fraction, mask_density, prunable_names, reconfigure_network

log = logging.getLogger(__name__)

INITIAL_PRUNING_STREAM = 4001
"""Key of the random stream (with the run seed) ordering the initial-pruning client's data."""


UPLOAD_POLICIES = ("reconfiguration", "every_round")


@dataclass(frozen=True)
class InitialPruningParams:
    """PruneFL's initial pruning (``prunefl.initial.*``, ALGORITHMS.md §3.1 step 1): on client
    ``client``'s first ``batches`` batches, at most ``passes`` passes, a reconfiguration every
    ``interval`` passes once the accuracy reaches ``accuracy_factor``/num_classes, stopping
    after ``patience`` reconfigurations in a row changing the density by at most
    ``tolerance``. Raises ``ConfigError`` naming the field."""

    enabled: bool = True
    client: int = 0
    batches: int = 10
    passes: int = 1000
    interval: int = 50
    patience: int = 5
    tolerance: float = 0.1
    accuracy_factor: float = 1.5

    def __post_init__(self):
        check_bool("prunefl.initial.enabled", self.enabled)
        for key in ("batches", "passes", "interval", "patience"):
            value = getattr(self, key)
            check(f"prunefl.initial.{key}", value, is_int(value) and value >= 1, POS_INT)
        check("prunefl.initial.client", self.client, is_int(self.client) and self.client >= 0,
              "a client index >= 0")
        for key in ("tolerance", "accuracy_factor"):
            value = getattr(self, key)
            check(f"prunefl.initial.{key}", value, is_number(value) and value >= 0,
                  "a number >= 0")


@dataclass(frozen=True)
class PruneFLParams:
    """PruneFL's knobs (``prunefl.*``, ALGORITHMS.md §3.1): ``interval`` ΔR (rounds between
    reconfigurations), ``max_decrease`` (dtp at round 0), ``half_life`` (rounds; dtp =
    max_decrease·0.5^(r/half_life)), ``scope`` (prunable tensors), ``initial``
    (:class:`InitialPruningParams`), ``importance_upload`` (``reconfiguration``: PruneFL's
    own, a client sends its accumulated importance only in a reconfiguration round;
    ``every_round``: every sampled client sends it every round). Raises ``ConfigError``
    naming the field."""

    interval: int = 50
    max_decrease: float = 0.3
    half_life: float = 10000
    scope: str = "weights"
    initial: InitialPruningParams = InitialPruningParams()
    importance_upload: str = "reconfiguration"

    def __post_init__(self):
        check("prunefl.interval", self.interval, is_int(self.interval) and self.interval >= 1,
              "an integer >= 1 (rounds)")
        check("prunefl.max_decrease", self.max_decrease,
              is_number(self.max_decrease) and 0.0 <= self.max_decrease < 1.0,
              "a fraction in [0, 1)")
        check("prunefl.half_life", self.half_life,
              is_number(self.half_life) and self.half_life > 0, "a number of rounds > 0")
        check_choice("prunefl.scope", self.scope, ("weights", "all"))
        check_choice("prunefl.importance_upload", self.importance_upload, UPLOAD_POLICIES)


class PruneFL(Algorithm):
    """PruneFL (Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
    Devices", TNNLS 2022, arXiv 1909.12326), as ALGORITHMS.md §3.1 decides it.

    1. Initial pruning (``initial``) on client ``initial.client``'s first ``initial.batches``
       batches (its data order drawn from the run seed): ``initial.passes`` passes at most, one
       optimizer step per batch (the configured client optimizer at the round-1 learning rate),
       importance z += g² per step; once the accuracy on those batches reaches
       ``accuracy_factor``/num_classes, reconfigure every ``initial.interval`` passes with
       dtp = ``max_decrease``; stop when the density changed by at most ``tolerance``
       (|d_t/d_{t−1} − 1|) in ``patience`` reconfigurations in a row. FL starts from these
       weights and mask. Its FLOPs (training and the accuracy checks) and bytes (dense model
       down, masked model and bitmask up) are the run's set-up cost (``*_exploration``).
    2. Rounds as §1; clients train the masked model, and a :class:`GradientSum` callback reads
       each client's raw gradients, pruned positions included, before the mask zeroes them;
       each client adds z_k += n_k·(Σ_steps g)². Upload (``importance_upload``, §3.1 step 2):
       ``reconfiguration`` (default, PruneFL's own): a client holds z_k and sends it only when
       it is sampled in a reconfiguration round (a client never sampled in one sends none;
       the server keeps the pending z_k on its CPU, standing in for the clients' memory);
       ``every_round``: every sampled client sends z_k each round (clients keep no state).
       Each upload is 4 B per parameter entry, counted in ``cost/bytes_up_round`` and
       ``cost/bytes_extra_up_round``; the summary's ``algorithm_info`` names the policy and
       the importance bytes.
    3. After every ``interval``-th round: dtp = ``max_decrease``·0.5^(r/``half_life``);
       :func:`flip.pruning.reconfigure` keeps each layer's (1−dtp) largest-|w| active weights
       and greedily adds candidates by importance per unit time, with per-parameter times
       from :func:`flip.metrics.time_model.parameter_times` on the run's devices
       (``fed.devices``, the ``devices`` config group shared with the simulated clock,
       ASYNC.md §1; T0 = ``devices.round_overhead_s``; the tensors that are not prunable are
       always kept and count as c_comm each). Regrown weights get back the value they held
       when pruned (:func:`flip.pruning.swap_pruned`); z is reset.

    ``scope``: which tensors may be pruned (:func:`flip.pruning.prunable_names`; default
    Conv/Linear/LSTM/Embedding weights, as PruneFL's prunable layers). Raises ``ConfigError``
    for out-of-range values, naming the ``prunefl.*`` field.
    """

    def __init__(
        self,
        name: str = "prunefl",
        interval: int = 50,
        max_decrease: float = 0.3,
        half_life: float = 10000,
        scope: str = "weights",
        initial: dict | None = None,
        importance_upload: str = "reconfiguration",
    ):
        super().__init__(name)
        if not isinstance(initial, InitialPruningParams):
            initial = from_node(InitialPruningParams, initial, "prunefl.initial")
        self.params = PruneFLParams(interval, max_decrease, half_life, scope, initial,
                                    importance_upload)
        self.pending: dict[int, dict[str, torch.Tensor]] = {}  # z_k held by clients (CPU)
        self.bytes_importance = 0
        self.history: list[dict] = []
        self.masks: dict[str, torch.Tensor] = {}

    # ----- set-up ------------------------------------------------------------------------
    def setup(self, fed) -> None:
        """Per-parameter times, initial pruning (§3.1 step 1), the first mask."""
        params = dict(fed.net.named_parameters())
        self.round_overhead_s = fed.devices.round_overhead_s
        self.names = prunable_names(fed.net, self.params.scope)
        n_mean = sum(fed.dm.client_num_train(k) for k in range(fed.dm.num_clients))
        n_mean /= fed.dm.num_clients
        self.times = parameter_times(
            fed.ledger.flops, params, self.names, n_mean, fed.params.local_epochs, fed.devices
        )
        self.stored = {n: torch.zeros_like(params[n]) for n in self.names}
        masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in self.names}
        if self.params.initial.enabled:
            if self.params.initial.client >= fed.dm.num_clients:
                raise ConfigError(
                    "prunefl.initial.client",
                    self.params.initial.client,
                    f"a client index in 0..{fed.dm.num_clients - 1}",
                )
            masks = self._initial_pruning(fed, masks)
        fed.set_masks(masks)
        self.masks = fed.masks
        self.importance = {n: torch.zeros_like(p) for n, p in params.items()}

    def _initial_pruning(self, fed, masks: dict) -> dict:
        """§3.1 step 1: one job on client ``initial.client``'s first ``initial.batches`` batches
        through the executor with the :class:`~flip.algorithms.prunefl_initial.InitialPruning`
        callback; its weights become θ, its mask M; returns M."""
        init = self.params.initial
        flops = fed.ledger.flops
        spec = CallbackSpec(INITIAL_PRUNING, {
            "times": self.times,
            "round_overhead_s": self.round_overhead_s,
            "max_decrease": self.params.max_decrease,
            "interval": init.interval,
            "patience": init.patience,
            "tolerance": init.tolerance,
            "accuracy_threshold": init.accuracy_factor / fed.dm.num_classes,
            "flops": {"total": flops.total, "by_layer": flops.by_layer, "other": flops.other},
        })
        seed = derive_seed(fed.seed, INITIAL_PRUNING_STREAM)
        job = ClientJob(init.client, seed, init.passes, fed.lr, (spec,), batches=init.batches)
        [update] = fed.executor.train(fed, fed.net, masks, [job])
        if isinstance(update, BaseException):
            raise update
        done = update.extras
        masks, self.stored = done["masks"], done["stored"]
        with torch.no_grad():
            for name, p in fed.net.named_parameters():
                p.copy_(update.params[name])
        params = {n: p.detach() for n, p in fed.net.named_parameters()}
        masked_up, _ = transfer_bytes(params, masks)  # 4·nnz + bitmask
        dense_down = BYTES_PER_VALUE * sum(p.numel() for p in params.values())
        fed.ledger.add_setup(done["flops"], dense_down + masked_up, done["samples"])
        log.info(
            "PruneFL initial pruning: %d passes, %d reconfigurations, density %.4f",
            done["passes"], done["reconfigurations"], mask_density(masks),
        )
        self.history.append(
            {
                "round": 0,
                "passes": done["passes"],
                "reconfigurations": done["reconfigurations"],
                "density_prunable": mask_density(masks),
            }
        )
        return masks

    # ----- rounds ------------------------------------------------------------------------
    def client_callbacks(self, fed, round_idx: int, client: int) -> list[CallbackSpec]:
        return [CallbackSpec("gradient_sum")]

    def on_client_update(self, fed, round_idx: int, update):
        """z_k += n_k·(Σ g)² for every tensor, then the upload policy: into the server's z now
        (``every_round``) or held by the client until a reconfiguration round in which it is
        sampled (``reconfiguration``); each upload's bytes are counted."""
        grads = update.extras.pop("grad_sum", {})
        every_round = self.params.importance_upload == "every_round"
        if every_round:
            held = self.importance
        else:
            held = self.pending.setdefault(update.client, {
                n: torch.zeros_like(z, device="cpu") for n, z in self.importance.items()})
        with torch.no_grad():
            for name, g in grads.items():
                z = held[name]
                z.add_(g.to(z) ** 2, alpha=update.num_samples)
        if every_round or round_idx % self.params.interval == 0:
            if not every_round:
                with torch.no_grad():
                    for name, z in self.pending.pop(update.client).items():
                        self.importance[name].add_(z.to(self.importance[name]))
            nbytes = BYTES_PER_VALUE * sum(t.numel() for t in self.importance.values())
            update.extra_bytes_up += nbytes
            self.bytes_importance += nbytes
        return update

    def on_round_end(self, fed, round_idx: int) -> None:
        """Every ``interval`` rounds: reconfigure (§3.1 step 3) and reset z."""
        if round_idx % self.params.interval:
            return
        dtp = decrease_fraction(round_idx, self.params.max_decrease, self.params.half_life)
        masks = reconfigure_network(fed.net, fed.masks, self.importance, self.times,
                                    self.stored, dtp, self.round_overhead_s)
        fed.set_masks(masks)
        self.masks = fed.masks
        for z in self.importance.values():
            z.zero_()
        self.history.append(
            {"round": round_idx, "dtp": dtp, "density_prunable": mask_density(masks)}
        )
        log.info("PruneFL round %d: dtp %.4f, density %.4f", round_idx, dtp, mask_density(masks))

    def save(self, out_dir: Path) -> list[Path]:
        """``mask.pt`` (the last mask, bool per prunable tensor) and ``prunefl.json`` (one entry
        per reconfiguration: round, dtp, density of the prunable tensors; round 0 = the
        initial pruning)."""
        out_dir = Path(out_dir)
        paths = [out_dir / "mask.pt", out_dir / "prunefl.json"]
        torch.save({"masks": {n: m.cpu() for n, m in self.masks.items()}}, paths[0])
        paths[1].write_text(json.dumps(self.history, indent=2) + "\n")
        return paths

    def info(self, fed) -> dict:
        """The upload policy and the bytes its importance uploads took (summary's
        ``algorithm_info``)."""
        return {"importance_upload": self.params.importance_upload,
                "bytes_importance": self.bytes_importance}

    def state_dict(self) -> dict:
        """What carries over between rounds (§3.1): the prunable tensors' names and per-parameter
        times, the current mask, the accumulated importance z (the server's and, under the
        ``reconfiguration`` policy, what clients hold), the values stored for regrowth, the
        importance bytes so far and the reconfiguration history."""
        return {
            "pending": self.pending,
            "bytes_importance": self.bytes_importance,
            "names": list(self.names),
            "times": dict(self.times),
            "round_overhead_s": self.round_overhead_s,
            "masks": self.masks,
            "importance": self.importance,
            "stored": self.stored,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.names = list(state["names"])
        self.times = dict(state["times"])
        self.round_overhead_s = float(state.get("round_overhead_s", 1.0))  # older checkpoints
        self.masks = dict(state["masks"])
        self.importance = dict(state["importance"])
        self.stored = dict(state["stored"])
        self.history = list(state["history"])
        self.pending = dict(state["pending"])
        self.bytes_importance = int(state["bytes_importance"])
