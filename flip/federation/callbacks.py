"""Client callbacks as declarative specs, and the callbacks flip's algorithms use (ENGINES.md §1).

An algorithm asks for client callbacks with :class:`CallbackSpec` (a registered ``kind`` plus
JSON-serialisable ``args``); the executor rebuilds the Lightning callback with
:func:`build_callback`, in this process or in another one. A callback with a
``client_extras(module)`` method reports what it collected: the executor puts that dict into
the client's :class:`~flip.federation.executor.ClientUpdate` as ``extras``.

Kinds: ``gradient_sum`` (:class:`GradientSum`, PruneFL's importance), ``early_stopping``
(Lightning's ``EarlyStopping`` on the epoch-mean training loss, AutoFLIP's exploration); an
algorithm registers its own with :func:`register_callback` (PruneFL's initial pruning).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor

from flip.errors import ConfigError

CALLBACKS: dict[str, Callable[..., L.Callback]] = {}
"""Registered callback kinds: ``kind`` → constructor taking the spec's ``args`` as keywords."""


@dataclass(frozen=True)
class CallbackSpec:
    """A client callback described by data: ``kind`` (a key of :data:`CALLBACKS`) and the
    keyword ``args`` of its constructor (numbers, strings, lists and dicts only)."""

    kind: str
    args: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "args": self.args}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CallbackSpec:
        doc = json.loads(text)
        return cls(doc["kind"], doc.get("args", {}))


def register_callback(kind: str):
    """Class decorator (or call with a factory) registering ``kind`` in :data:`CALLBACKS`."""

    def add(factory):
        CALLBACKS[kind] = factory
        return factory

    return add


def build_callback(spec: CallbackSpec) -> L.Callback:
    """The Lightning callback of ``spec``.

    Raises:
        ConfigError: ``spec.kind`` is not registered (names the accepted kinds).
    """
    if spec.kind not in CALLBACKS:
        raise ConfigError("callback kind", spec.kind, ", ".join(sorted(CALLBACKS)))
    return CALLBACKS[spec.kind](**spec.args)


@register_callback("early_stopping")
def early_stopping(patience: int, monitor: str = "train/loss") -> EarlyStopping:
    """Stop a client's training when its epoch-mean ``monitor`` has not decreased for
    ``patience`` epochs (checked at the end of each training epoch; ALGORITHMS.md §2.1)."""
    return EarlyStopping(monitor, patience=patience, mode="min", check_on_train_epoch_end=True)


@register_callback("gradient_sum")
class GradientSum(L.Callback):
    """Σ over a client's local optimizer steps of the raw gradient g of every parameter,
    including masked (pruned) positions: it reads ``p.grad`` in ``on_before_optimizer_step``,
    which Lightning calls on callbacks before the module's own hook zeroes masked gradients.

    ``squared=True`` accumulates Σ g² instead (PruneFL's initial pruning, ALGORITHMS.md §3.1
    step 1). Keys are the names of ``pl_module.net``'s parameters; tensors have the parameter's
    shape, float32, on its device. ``client_extras()`` returns ``{"grad_sum": {...}}`` (or
    ``"grad_sq_sum"``) and the number of steps under ``"grad_steps"``.
    """

    def __init__(self, squared: bool = False):
        self.squared = squared
        self.sums: dict[str, Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for name, p in pl_module.net.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            g = g * g if self.squared else g
            if name in self.sums:
                self.sums[name].add_(g)
            else:
                self.sums[name] = g.clone()
        self.steps += 1

    def reset(self) -> None:
        """Forget what was accumulated (PruneFL resets importance after a reconfiguration)."""
        self.sums = {}
        self.steps = 0

    def client_extras(self, module=None) -> dict:
        key = "grad_sq_sum" if self.squared else "grad_sum"
        return {key: self.sums, "grad_steps": self.steps}
