"""How configuration reaches code: frozen, validated parameter dataclasses and one check helper.

Every concern that has knobs (the federation, the client, each algorithm) gets a frozen
dataclass whose ``__post_init__`` validates each field with :func:`check`; constructors take
the dataclass (or build it from the Hydra node with :func:`from_node`). Bad input therefore
raises one kind of error, :class:`flip.errors.ConfigError`, naming the config field, the value
and the accepted values, before any data is read or any client trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flip.errors import ConfigError

T = TypeVar("T")

POS_INT = "an integer >= 1"
NONNEG_INT = "an integer >= 0"


def is_int(value) -> bool:
    """An int that is not a bool (YAML ``true`` would pass ``isinstance(v, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check(field: str, value, ok: bool | Callable[[Any], bool], accepted: str, hint: str = ""):
    """Return ``value`` if ``ok`` (a bool, or a predicate called on ``value``) holds.

    Raises:
        ConfigError: naming ``field`` (the config path, e.g. ``federation.rounds``), the value
            and ``accepted`` (the accepted values, in words), with an optional ``hint``. A
            predicate that raises ``TypeError``/``ValueError`` (a string where a number belongs)
            counts as not ok.
    """
    if callable(ok):
        try:
            ok = bool(ok(value))
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ConfigError(field, value, accepted, hint)
    return value


def check_bool(field: str, value) -> bool:
    """``value`` if it is a bool; ``ConfigError`` otherwise (``bool('sometimes')`` is True)."""
    return check(field, value, isinstance(value, bool), "true, false")


def check_choice(field: str, value, choices) -> Any:
    """``value`` if it is one of ``choices``; ``ConfigError`` listing them otherwise."""
    return check(field, value, value in tuple(choices), ", ".join(str(c) for c in choices))


def from_node(cls: type[T], node: Mapping | None, prefix: str, **overrides) -> T:
    """Build the parameter dataclass ``cls`` from a config mapping (a Hydra node as a dict).

    Keys of ``node`` that ``cls`` does not have raise ``ConfigError`` naming ``prefix.key`` and
    the accepted keys (a misspelt knob must not be silently ignored); missing keys take the
    dataclass defaults; ``overrides`` win over ``node``.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    values = dict(node or {})
    values.pop("_target_", None)
    for key in values:
        if key not in names:
            raise ConfigError(f"{prefix}.{key}", values[key], "one of the keys " + ", ".join(names))
    values.update(overrides)
    return cls(**values)


# ----- the federation and the client (ALGORITHMS.md §1) ----------------------------------------
CLIENT_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")


def optimizer_factory(spec: Mapping | Callable) -> Callable:
    """A ``torch.optim`` constructor taking ``(params, lr=...)``: ``spec`` itself if callable,
    else the Hydra node (``_target_`` + keywords) instantiated as a partial."""
    if callable(spec):
        return spec
    from hydra.utils import instantiate

    return instantiate({**dict(spec), "_partial_": True}, _convert_="all")


def clients_per_round(num_clients: int, participation: float) -> int:
    """m = max(1, round(C·K)), round half up (ALGORITHMS.md §1 step 1)."""
    return max(1, math.floor(participation * num_clients + 0.5))


@dataclass(frozen=True)
class FederationParams:
    """The round's budget and its failure rules (``federation.*``; ALGORITHMS.md §1).

    ``num_clients`` K, ``participation`` C (m = max(1, round(C·K)) clients a round),
    ``rounds`` R, ``local_epochs`` E, ``eval_every`` (evaluate every this many rounds and at
    the last), ``min_clients`` / ``max_round_retries`` / ``max_loss`` (failing clients and
    divergence, :mod:`flip.federation.failures`), ``server_optimizer``: a Hydra node of a
    ``torch.optim`` class or a constructor on θ (§1 step 4); ``buffers``: how floating buffers
    (batch-norm running statistics) are aggregated, ``average`` (the sample-weighted mean of
    the clients', default) or ``server_optimizer`` (through the same server optimizer step as
    the weights, e.g. the paper's EMA; ALGORITHMS.md §5). ``local_steps``: ``None`` (clients
    train E epochs) or S, the number of mini-batches a client trains per update instead (one
    epoch over S batches of a fresh shuffle; ASYNC.md §2 "E local steps or epochs");
    ``max_time_s``: ``None`` or a simulated-time budget in seconds: the run ends after the
    round that reaches it (ASYNC.md §1, to compare synchronous and asynchronous runs over
    the same simulated time); ``eval_every_s``: ``None`` or simulated seconds: also evaluate
    at the first round (or aggregation) past every multiple, so runs of both engines are
    evaluated on one time grid; ``val_every_s``: the same for the validation split alone
    (``val/*``, cheap: what "time to target" is read on, ALGORITHMS.md §5). Raises
    ``ConfigError`` naming the first invalid field.
    """

    num_clients: int
    participation: float
    rounds: int
    local_epochs: int
    eval_every: int = 1
    min_clients: int = 1
    max_round_retries: int = 2
    max_loss: float | None = 1e3
    server_optimizer: Any = dataclasses.field(
        default_factory=lambda: {"_target_": "torch.optim.SGD", "lr": 1.0}
    )
    buffers: str = "average"
    local_steps: int | None = None
    max_time_s: float | None = None
    eval_every_s: float | None = None
    val_every_s: float | None = None

    def __post_init__(self):
        for name in ("num_clients", "rounds", "local_epochs", "eval_every"):
            check(f"federation.{name}", getattr(self, name), is_int(getattr(self, name))
                  and getattr(self, name) >= 1, POS_INT)
        check("federation.participation", self.participation,
              is_number(self.participation) and 0 < self.participation <= 1,
              "a fraction C in (0, 1]")
        m = clients_per_round(self.num_clients, self.participation)
        check("federation.min_clients", self.min_clients,
              is_int(self.min_clients) and 1 <= self.min_clients <= m,
              f"an integer in 1..{m} (the clients sampled per round, m = round(C·K))")
        check("federation.max_round_retries", self.max_round_retries,
              is_int(self.max_round_retries) and self.max_round_retries >= 0, NONNEG_INT)
        check_choice("federation.buffers", self.buffers, ("average", "server_optimizer"))
        check("federation.max_loss", self.max_loss,
              self.max_loss is None or (is_number(self.max_loss) and self.max_loss > 0),
              "null or a number > 0")
        check("federation.local_steps", self.local_steps,
              self.local_steps is None or (is_int(self.local_steps) and self.local_steps >= 1),
              "null (local epochs) or an integer >= 1 (mini-batches per update)")
        for key in ("max_time_s", "eval_every_s", "val_every_s"):
            value = getattr(self, key)
            check(f"federation.{key}", value, value is None or (is_number(value) and value > 0),
                  "null or simulated seconds > 0")

    @property
    def clients_per_round(self) -> int:
        return clients_per_round(self.num_clients, self.participation)


@dataclass(frozen=True)
class ClientParams:
    """Local training (``client.*``; ALGORITHMS.md §1 steps 2 and 5): ``lr`` (round 1),
    ``lr_decay`` γ (round r trains at lr·γ^(r−1)), ``optimizer``: a Hydra node whose
    ``_target_`` is one of :data:`CLIENT_OPTIMIZERS`, or a constructor ``(params, lr=...)``.
    Raises ``ConfigError`` naming the invalid field."""

    lr: float
    lr_decay: float = 1.0
    optimizer: Any = dataclasses.field(default_factory=lambda: {"_target_": "torch.optim.Adam"})

    def __post_init__(self):
        check("client.lr", self.lr, is_number(self.lr) and self.lr > 0, "a learning rate > 0")
        check("client.lr_decay", self.lr_decay,
              is_number(self.lr_decay) and 0 < self.lr_decay <= 1, "a per-round factor γ in (0, 1]")
        if not callable(self.optimizer):
            target = dict(self.optimizer).get("_target_")
            check_choice("client.optimizer._target_", target, CLIENT_OPTIMIZERS)

    def lr_at(self, round_idx: int) -> float:
        """The client learning rate of round ``round_idx`` (1-based): lr·γ^(r−1)."""
        return self.lr * self.lr_decay ** (round_idx - 1)


@dataclass(frozen=True)
class CheckpointParams:
    """``checkpoint.*``: a checkpoint after every ``every``-th round and the last (0: none),
    the newest ``keep`` kept. Raises ``ConfigError`` naming the field."""

    every: int = 1
    keep: int = 2

    def __post_init__(self):
        check("checkpoint.every", self.every, is_int(self.every) and self.every >= 0,
              "an integer >= 0 (0: no checkpoints)")
        check("checkpoint.keep", self.keep, is_int(self.keep) and self.keep >= 1, POS_INT)


# ----- the asynchronous engine (ASYNC.md §2) ---------------------------------------------------
TRIGGERS = ("per_arrival", "buffer", "window")
STALENESS = ("poly", "constant")


@dataclass(frozen=True)
class AsyncParams:
    """The asynchronous engine's budget and rules (``async.*``; ASYNC.md §2).

    ``max_time_s``: simulated seconds after which no aggregation happens (``None``: no
    limit); ``max_aggregations``: aggregations at most; ``concurrency``: clients training at
    once (``None``: all K, as PR-FL; otherwise that many, each finished client replaced by
    one drawn uniformly among the idle ones); ``staleness``: s(τ) = τ^(−a) (``poly``, a =
    ``staleness_a``) or 1 (``constant``); ``restart``: when a client whose update arrived
    starts again, ``arrival`` (at once, with the server's current model: FedBuff) or
    ``aggregation`` (with the model of the next aggregation: PR-FL's windows); ``None``: the
    trigger's own. Evaluations follow ``federation.eval_every`` (aggregations) and
    ``federation.eval_every_s``. Raises ``ConfigError`` naming the first invalid field.
    """

    max_time_s: float | None = None
    max_aggregations: int = 1000
    concurrency: int | None = None
    staleness: str = "poly"
    staleness_a: float = 0.6
    restart: str | None = None

    def __post_init__(self):
        check("async.max_time_s", self.max_time_s,
              self.max_time_s is None or (is_number(self.max_time_s) and self.max_time_s > 0),
              "null or simulated seconds > 0")
        check("async.max_aggregations", self.max_aggregations,
              is_int(self.max_aggregations) and self.max_aggregations >= 1, POS_INT)
        check("async.concurrency", self.concurrency,
              self.concurrency is None or (is_int(self.concurrency) and self.concurrency >= 1),
              "null (all clients) or an integer >= 1")
        check_choice("async.staleness", self.staleness, STALENESS)
        check("async.staleness_a", self.staleness_a,
              is_number(self.staleness_a) and self.staleness_a >= 0, "an exponent a >= 0")
        check("async.restart", self.restart, self.restart in (None, "arrival", "aggregation"),
              "null (the trigger's own), arrival, aggregation")

    def weight(self, staleness: int) -> float:
        """s(τ): τ^(−a) (``poly``) or 1 (``constant``), for a staleness τ ≥ 1 (ASYNC.md §2)."""
        return 1.0 if self.staleness == "constant" else float(staleness) ** (-self.staleness_a)
