"""Flower Messages ↔ flip's jobs and updates (ENGINES.md §3 "Message").

A train request (message type :data:`TRAIN`) holds three records:

- ``arrays``: ArrayRecord, the state dict (parameters and buffers) of the network the client
  trains (the dense or compact global network, or an EFLPrune sub-model), each tensor as a
  NumPy ``.npy`` blob, so float32 values cross exactly;
- ``masks`` (only when the round has a mask): ConfigRecord, per parameter name the bool mask
  packed 8 entries a byte (``numpy.packbits``, row-major); the shapes are the state's;
- ``job``: ConfigRecord with the :class:`~flip.federation.executor.ClientJob` (client, seed,
  epochs, lr, batches (−1: all), callbacks as ``CallbackSpec.to_json`` strings) and
  ``removals``: the JSON of :func:`flip.pruning.removal_chain`, the compactions that turn the
  run's model into this architecture (the client replays them with
  :func:`flip.pruning.compact`).

The reply holds ``params`` and ``buffers`` (ArrayRecords), ``update`` (ConfigRecord: client,
num_samples, samples_processed, epoch_losses, extra_bytes_up) and the callbacks' extras:
numbers and strings in the ConfigRecord ``extras``, each dict of tensors (a gradient sum, a
mask) as the ArrayRecord ``extras.<key>``. Floats travel as IEEE doubles, tensors bit for bit.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from torch import Tensor

from flip.federation.callbacks import CallbackSpec
from flip.federation.executor import ClientJob, ClientUpdate

TRAIN = "train.flip"
"""Message type of a training job (the ClientApp's ``@app.train("flip")``)."""
HELLO = "query.hello"
"""Message type of the node query (the ClientApp's ``@app.query("hello")``)."""
EXTRAS_PREFIX = "extras."


def encode_state(state: Mapping[str, Tensor]) -> ArrayRecord:
    """An ArrayRecord of ``state`` (name → tensor of any shape and dtype), each tensor copied to
    the host as a NumPy array."""
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def decode_state(record: ArrayRecord, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The tensors of an ArrayRecord (name → tensor on ``device``, shapes and dtypes as sent)."""
    return {k: torch.from_numpy(a.numpy()).to(device) for k, a in record.items()}


def encode_masks(masks: Mapping[str, Tensor]) -> ConfigRecord:
    """Bool masks (True = kept) as bits: ``name → bytes`` of ``numpy.packbits`` of the
    flattened mask."""
    return ConfigRecord(
        {k: np.packbits(m.detach().cpu().numpy().astype(bool).reshape(-1)).tobytes()
         for k, m in masks.items()}
    )


def decode_masks(record: ConfigRecord, shapes: Mapping[str, torch.Size],
                 device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Bool masks from :func:`encode_masks`, each of ``shapes[name]``. Raises ``KeyError`` for
    a mask of a tensor the state does not hold."""
    out = {}
    for name, bits in record.items():
        n = int(np.prod(shapes[name], dtype=np.int64))
        flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n).astype(bool)
        out[name] = torch.from_numpy(flat.reshape(tuple(shapes[name]))).to(device)
    return out


def job_fields(job: ClientJob) -> dict:
    """A :class:`ClientJob` as plain values (client, seed, epochs, lr, batches with −1 for
    all, callbacks as ``CallbackSpec.to_json`` strings); :func:`job_from_fields` inverts it."""
    return {"client": int(job.client), "seed": int(job.seed), "epochs": int(job.epochs),
            "lr": float(job.lr), "batches": -1 if job.batches is None else int(job.batches),
            "callbacks": [spec.to_json() for spec in job.callbacks]}


def job_from_fields(rec: Mapping) -> ClientJob:
    """The :class:`ClientJob` of :func:`job_fields`' values (a ConfigRecord or a dict)."""
    return ClientJob(
        client=int(rec["client"]), seed=int(rec["seed"]), epochs=int(rec["epochs"]),
        lr=float(rec["lr"]),
        callbacks=tuple(CallbackSpec.from_json(s) for s in rec["callbacks"]),
        batches=None if int(rec["batches"]) < 0 else int(rec["batches"]),
    )


def train_request(arrays: ArrayRecord, masks: ConfigRecord | None, job: ClientJob,
                  removals: list[dict]) -> RecordDict:
    """The content of one :data:`TRAIN` message. ``arrays`` and ``masks`` are encoded once per
    cohort; each message gets its own copy of the records (the blobs are shared)."""
    content = RecordDict({
        "arrays": ArrayRecord.from_array_dict(dict(arrays)),
        "job": ConfigRecord({**job_fields(job),
                             "removals": json.dumps(removals, sort_keys=True)}),
    })
    if masks is not None:
        content["masks"] = ConfigRecord(dict(masks))
    return content


def parse_train_request(content: RecordDict, device: torch.device | str = "cpu"):
    """``(state, masks or None, job, removals)`` of a :func:`train_request`."""
    state = decode_state(content["arrays"], device)
    masks = None
    if "masks" in content:
        masks = decode_masks(content["masks"], {k: v.shape for k, v in state.items()}, device)
    rec = content["job"]
    return state, masks, job_from_fields(rec), json.loads(rec["removals"])


def _scalar(key: str, value):
    if isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"client extras[{key!r}]: {type(value).__name__} cannot be sent; "
                    "extras hold numbers, strings and dicts of tensors")


def encode_update(update: ClientUpdate) -> RecordDict:
    """The reply content of one trained job (module docstring). Raises ``TypeError`` for an
    extra that is neither a number/string nor a dict of tensors."""
    content = RecordDict({
        "params": encode_state(update.params),
        "buffers": encode_state(update.buffers),
        "update": ConfigRecord({
            "client": int(update.client), "num_samples": int(update.num_samples),
            "samples_processed": int(update.samples_processed),
            "epoch_losses": [float(x) for x in update.epoch_losses],
            "extra_bytes_up": int(update.extra_bytes_up),
        }),
    })
    scalars = {}
    for key, value in update.extras.items():
        if isinstance(value, Mapping):
            content[EXTRAS_PREFIX + key] = encode_state(value)
        else:
            scalars[key] = _scalar(key, value)
    content["extras"] = ConfigRecord(scalars)
    return content


def decode_update(content: RecordDict, device: torch.device | str = "cpu") -> ClientUpdate:
    """The :class:`ClientUpdate` of an :func:`encode_update` reply, tensors on ``device``."""
    rec = content["update"]
    extras = dict(content["extras"])
    for key, record in content.items():
        if key.startswith(EXTRAS_PREFIX):
            extras[key[len(EXTRAS_PREFIX):]] = decode_state(record, device)
    return ClientUpdate(
        client=int(rec["client"]),
        params=decode_state(content["params"], device),
        buffers=decode_state(content["buffers"], device),
        num_samples=int(rec["num_samples"]),
        samples_processed=int(rec["samples_processed"]),
        epoch_losses=[float(x) for x in rec["epoch_losses"]],
        extras=extras,
        extra_bytes_up=int(rec["extra_bytes_up"]),
    )
