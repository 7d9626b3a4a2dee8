"""Resuming a run: which checkpoint a ``resume=`` value points to, and whether the run's config
and data still match it (issue 6; docs/resume-and-failures.md). Reading and writing
checkpoints is :mod:`flip.federation.checkpoint`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flip.errors import CheckpointError
from flip.federation.checkpoint import (
    CHECKPOINT_DIR,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)

RESUME_MAY_CHANGE = (
    "resume",
    "output_dir",
    "checkpoint",
    "progress",
    "logger",
    "trainer",
    "engine",
    "federation.rounds",
    "federation.max_time_s",
    "async.max_aggregations",
    "async.max_time_s",
    "federation.min_clients",
    "federation.max_round_retries",
    "federation.max_loss",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.debian_dir",
)
"""Config fields a resumed run may set differently from its checkpoint: where things are,
how it is shown and logged, the device and the engine (where clients train, ENGINES.md §1),
how many rounds (aggregations, simulated seconds) in all, and the failure limits. Any other
difference is refused (the run's results would come from two configs)."""



@dataclass
class Resume:
    """The checkpoint a run resumes from: its file, its run directory and its contents."""

    path: Path
    run_dir: Path
    state: dict

    @property
    def round(self) -> int:
        return int(self.state["round"])

    @property
    def wandb_id(self) -> str | None:
        return self.state.get("wandb_id")


def _run_dir_of(path: Path) -> Path:
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def find_resume(resume, out_dir: str | os.PathLike) -> Resume | None:
    """The checkpoint ``resume`` (the config value) points to.

    ``None``/``false``: none. ``true``: the newest checkpoint of the run directories next to
    ``out_dir`` (under the CLI: ``logs/runs/<experiment>/<algorithm>/*``), newest by file time.
    A path: a checkpoint file, a run directory or its ``checkpoints/`` directory (its newest).

    Raises:
        CheckpointError: nothing to resume there (the message names where it looked).
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        root = Path(out_dir).absolute().parent
        runs = [
            (found[-1][1].stat().st_mtime, d)
            for d in (root.iterdir() if root.is_dir() else [])
            if d.is_dir() and (found := list_checkpoints(d / CHECKPOINT_DIR))
        ]
        if not runs:
            raise CheckpointError(
                f"resume=true: no run with a checkpoint in {root}/*/{CHECKPOINT_DIR}/; pass "
                "resume=PATH (a run directory or a checkpoint file)"
            )
        directory = max(runs)[1] / CHECKPOINT_DIR
    else:
        target = Path(str(resume)).expanduser().absolute()
        if target.is_file():
            return Resume(target, _run_dir_of(target), load_checkpoint(target))
        if not target.is_dir():
            raise CheckpointError(f"resume={resume}: no such file or directory")
        directory = target if target.name == CHECKPOINT_DIR else target / CHECKPOINT_DIR
    path, state = latest_checkpoint(directory)
    return Resume(path, _run_dir_of(path), state)


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, Mapping):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def check_resume_config(config: Mapping, resume: Resume) -> None:
    """Refuse to resume with settings other than the checkpoint's, except
    :data:`RESUME_MAY_CHANGE`. ``config`` is the resolved config as plain containers.

    Raises:
        CheckpointError: naming the first differing field, both values and the checkpoint.
    """
    new, old = _flat(config), _flat(resume.state["config"])
    for field in sorted(set(new) | set(old)):
        if any(field == f or field.startswith(f"{f}.") for f in RESUME_MAY_CHANGE):
            continue
        if new.get(field) != old.get(field):
            raise CheckpointError(
                f"resume: {field}={new.get(field)!r} differs from the checkpoint's "
                f"{old.get(field)!r} ({resume.path}). A resumed run keeps the settings it "
                f"started with; only {', '.join(RESUME_MAY_CHANGE)} may change."
            )


def partition_state(partition: list[Mapping]) -> list[dict]:
    """Each client's train/test positions (``FederatedDataModule.partition_indices``) as int64
    tensors, for the checkpoint."""
    return [{k: torch.as_tensor(np.asarray(v), dtype=torch.int64) for k, v in c.items()}
            for c in partition]


def check_partition(partition: list[Mapping], resume: Resume) -> None:
    """Refuse to resume when the partition rebuilt from the data differs from the checkpoint's
    (the data files or the data settings changed since the run started).

    Raises:
        CheckpointError: naming the first client that differs.
    """
    saved = resume.state["partition"]
    now = partition_state(partition)
    if len(saved) != len(now):
        raise CheckpointError(
            f"resume: the data now gives {len(now)} clients, the checkpoint {resume.path} has "
            f"{len(saved)}"
        )
    for k, (a, b) in enumerate(zip(now, saved, strict=True)):
        if a.keys() != b.keys() or any(not torch.equal(a[s], b[s]) for s in a):
            raise CheckpointError(
                f"resume: client {k}'s data differs from the checkpoint's ({resume.path}): the "
                "data files or data settings changed since the run started"
            )
