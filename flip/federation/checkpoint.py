"""Federated checkpoints: the whole run state after a round, written atomically and kept N deep,
and the checkpoint a resumed run continues from (issue 6; docs/resume-and-failures.md).

A checkpoint ``<run dir>/checkpoints/round_<r>.pt`` is one ``torch.save`` dict:

* ``federation``: :meth:`flip.federation.Federation.state_dict` (θ and buffers, masks, server
  optimizer state, the algorithm's state — AutoFLIP: guidance matrix, mask, τ —, cost totals
  with the exploration's, parameter counts, effective FLOPs per sample, the rows so far);
* ``rng``: every generator's state (Python ``random``, NumPy's global one, torch CPU and CUDA).
  flip itself draws nothing from them: client sampling, each client's data order and the
  exploration come from streams derived from (seed, round, client)
  (:mod:`flip.federation.seeding`), which is why a resumed run equals an uninterrupted one.
  They are saved and restored so that code added later that does use them resumes too;
* ``config`` (resolved), ``partition`` (each client's train/test positions), ``wandb_id``.

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then renamed
over the final name (``os.replace``, atomic on POSIX): a checkpoint is either complete or not
there. Temporary files start with ``.tmp-`` and are never read; one left by a killed process is
removed at the next save. Everything is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from flip.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FORMAT = 1
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^round_(\d+)\.pt$")

def checkpoint_path(directory: str | os.PathLike, round_idx: int) -> Path:
    """``directory/round_<round_idx, 4 digits>.pt``."""
    return Path(directory) / f"round_{round_idx:04d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints in ``directory`` as ``(round, path)``, oldest round first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


# ----- random generators --------------------------------------------------------------------
def rng_state() -> dict:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and
    every CUDA device's generator (an empty list without CUDA), as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping) -> None:
    """Restore :func:`rng_state`'s ``state`` (CUDA states only when as many devices exist)."""
    random.setstate(state["python"])
    npk = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npk["bit_generator"],
            "state": {"key": npk["key"].numpy().astype(np.uint32), "pos": npk["pos"]},
            "has_gauss": npk["has_gauss"],
            "gauss": npk["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda = list(state["cuda"])
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


# ----- writing ------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` so that ``path`` is the complete file or absent.

    Writes ``.tmp-<name>.<pid>`` in the same directory, flushes and fsyncs it, renames it to
    ``path`` (``os.replace``) and fsyncs the directory. Any exception while writing removes the
    temporary file and propagates; an earlier file at ``path`` is then untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


class Checkpointer:
    """Writes a checkpoint after every ``every``-th round and after the last one, keeping the
    newest ``keep``.

    Args:
        directory: where checkpoints go (``<run dir>/checkpoints``).
        every: rounds between checkpoints; 0 writes none.
        keep: how many checkpoints to keep (≥ 1); older ones are deleted after a write succeeds.
        extra: entries stored in every checkpoint besides the federation state and the random
            generators (``config``, ``partition``, ``wandb_id``), or a callable returning them.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int = 1,
        keep: int = 2,
        extra: Mapping | Callable[[], Mapping] | None = None,
    ):
        self.directory = Path(directory)
        self.every = int(every)
        self.keep = int(keep)
        self.extra = extra or {}

    def due(self, round_idx: int, rounds: int) -> bool:
        """Whether round ``round_idx`` of ``rounds`` ends with a checkpoint."""
        return self.every > 0 and (round_idx % self.every == 0 or round_idx == rounds)

    def after_round(self, fed, last: bool = False) -> Path | None:
        """Called by :meth:`Federation.fit` after each round: saves if :meth:`due`, or if
        ``last`` (the run ends here before round R, e.g. on its simulated-time budget) and
        checkpoints are on."""
        due = self.due(fed.round, fed.params.rounds) or (last and self.every > 0)
        return self.save(fed) if due else None

    def save(self, fed) -> Path:
        """Write the checkpoint of ``fed`` after round ``fed.round``, then rotate. Returns its
        path."""
        extra = self.extra() if callable(self.extra) else self.extra
        state = {
            "format": FORMAT,
            "round": fed.round,
            "federation": fed.state_dict(),
            "rng": rng_state(),
            **extra,
        }
        path = write_atomic(state, checkpoint_path(self.directory, fed.round))
        self.rotate()
        return path

    def rotate(self) -> None:
        """Delete all but the newest ``keep`` checkpoints and temporary files of other
        processes (left by a kill during a write)."""
        for _, path in list_checkpoints(self.directory)[: -self.keep]:
            path.unlink(missing_ok=True)
        for path in self.directory.glob(f"{TMP_PREFIX}*"):
            if not path.name.endswith(f".{os.getpid()}"):
                path.unlink(missing_ok=True)


# ----- reading ------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load one checkpoint on the CPU (``weights_only=True``).

    Raises:
        CheckpointError: unreadable, or not a flip checkpoint of this format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a flip checkpoint of format {FORMAT}")
    return state


def latest_checkpoint(directory: str | os.PathLike) -> tuple[Path, dict]:
    """The newest checkpoint in ``directory`` that loads; an unreadable one is skipped with a
    warning (the one before it is used).

    Raises:
        CheckpointError: none there, or none readable.
    """
    found = list_checkpoints(directory)
    for _, path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    what = "no readable checkpoint" if found else "no checkpoint (round_*.pt)"
    raise CheckpointError(f"{what} in {directory}")
