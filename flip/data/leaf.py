"""LEAF data: a reader and writer of LEAF JSON and LEAF's sampling, filtering and splitting.

LEAF (Caldas et al. 2018, https://leaf.cmu.edu) stores a federated data set as JSON files
``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}`` with
an optional ``"hierarchies"`` list (Shakespeare: the play of each user). Its ``preprocess.sh``
runs, in this order, on ``data/all_data/*.json``:

1. ``sample.py --niid --fraction f`` (``-s niid --sf f``): per file, shuffle the users and take
   them until ``int(f·total)`` samples are reached, the last user cut to what is missing;
2. ``remove_users.py --min_samples k`` (``-k k``): keep users with MORE than ``k`` samples
   (its code keeps ``num_samples > k``, although its help text says "less than k are
   discarded");
3. ``split_data.py --by_sample | --by_user --frac t`` (``-t sample|user --tf t``).

The functions here re-implement steps 1-3 on data in memory with ``random.Random(seed)``, so a
run can start from ``all_data`` with any of LEAF's options, and :func:`read_leaf_dir` reads
LEAF's finished ``train/`` and ``test/`` directories as they are. Every file problem is a
:class:`~flip.errors.DataNotFoundError` naming the file (and the user) before any training.
Source: ``/work/shared/spec/DATA.md`` ("LEAF JSON"); LEAF's ``data/utils/*.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from flip.errors import ConfigError, DataNotFoundError

SHAKESPEARE_VOCAB = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
"""LEAF's Shakespeare alphabet, ``ALL_LETTERS`` of LEAF's ``models/utils/language_utils.py``:
80 characters; a character's class / input index is its position here."""

SEQ_LEN = 80
"""Characters in one Shakespeare input window (LEAF's ``seq_length``)."""


@dataclass
class LeafSet:
    """LEAF data held in memory, users in order.

    Attributes:
        users: user ids, in file order (files sorted by name).
        data: ``{user: {"x": list, "y": list}}`` (``len(x) == len(y) >= 1``).
        hierarchies: ``{user: group}`` (Shakespeare: the play); empty if the files have none.
        files: ``{user: path of the JSON file it came from}`` (for messages and per-file steps).
    """

    users: list[str]
    data: dict[str, dict]
    hierarchies: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def num_samples(self, user: str) -> int:
        return len(self.data[user]["y"])

    def total(self) -> int:
        """Number of samples over all users."""
        return sum(self.num_samples(u) for u in self.users)

    def subset(self, users: list[str], data: dict[str, dict] | None = None) -> LeafSet:
        """The same set restricted to ``users`` (in that order), optionally with new data."""
        data = data if data is not None else self.data
        return LeafSet(
            list(users),
            {u: data[u] for u in users},
            {u: self.hierarchies[u] for u in users if u in self.hierarchies},
            {u: self.files[u] for u in users if u in self.files},
        )


def _bad(path, what: str) -> DataNotFoundError:
    return DataNotFoundError(f"LEAF file {path}: {what}")


def read_leaf_json(path: str | os.PathLike) -> LeafSet:
    """Read and check one LEAF JSON file.

    Only users listed in ``"users"`` are read (LEAF's own ``split_data.py`` leaves empty
    ``user_data`` entries for users it dropped). Checked: valid JSON (a truncated or corrupt file
    is named with the parser's position), the keys ``users``/``user_data``, every listed user
    present in ``user_data`` with lists ``x`` and ``y`` of equal, non-zero length, ``num_samples``
    (if present) equal to those lengths, ``hierarchies`` (if present) as long as ``users``, no
    user listed twice.

    Raises:
        DataNotFoundError: naming ``path`` (and the user) for any of the problems above.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as err:
        raise _bad(path, f"not valid JSON (truncated or corrupt?): {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _bad(path, f"cannot be read: {err}") from None
    if not isinstance(doc, dict) or not {"users", "user_data"} <= set(doc):
        raise _bad(path, 'not in LEAF format: expected an object with "users" and "user_data"')
    users, user_data = doc["users"], doc["user_data"]
    if not isinstance(users, list) or not isinstance(user_data, dict):
        raise _bad(path, '"users" must be a list and "user_data" an object')
    if len(set(users)) != len(users):
        dup = next(u for u in users if users.count(u) > 1)
        raise _bad(path, f"user {dup!r} is listed twice in \"users\"")
    num_samples = doc.get("num_samples")
    if num_samples is not None and len(num_samples) != len(users):
        raise _bad(path, f'"num_samples" has {len(num_samples)} entries for {len(users)} users')
    hier = doc.get("hierarchies")
    if hier is not None and len(hier) != len(users):
        raise _bad(path, f'"hierarchies" has {len(hier)} entries for {len(users)} users')
    data = {}
    for i, user in enumerate(users):
        entry = user_data.get(user)
        if not isinstance(entry, dict) or not isinstance(entry.get("x"), list) or not isinstance(
            entry.get("y"), list
        ):
            raise _bad(path, f'user {user!r} has no "x" and "y" lists in "user_data"')
        n = len(entry["y"])
        if len(entry["x"]) != n:
            raise _bad(path, f'user {user!r} has {len(entry["x"])} inputs "x" but {n} labels "y"')
        if n == 0:
            raise _bad(
                path,
                f"user {user!r} has no samples (empty \"x\" and \"y\"); LEAF lists only users "
                'with data: remove the user from "users" or regenerate the file',
            )
        if num_samples is not None and num_samples[i] != n:
            raise _bad(path, f'user {user!r}: "num_samples" says {num_samples[i]}, "y" has {n}')
        data[user] = {"x": entry["x"], "y": entry["y"]}
    return LeafSet(
        list(users),
        data,
        {u: h for u, h in zip(users, hier, strict=True)} if hier is not None else {},
        dict.fromkeys(users, str(path)),
    )


def read_leaf_dir(directory: str | os.PathLike) -> LeafSet:
    """All ``*.json`` files of ``directory`` (sorted by name) as one :class:`LeafSet`.

    Raises:
        DataNotFoundError: the directory is missing or holds no JSON file; any file problem of
            :func:`read_leaf_json`; a user present in two files.
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if not files:
        raise DataNotFoundError(f"no LEAF JSON files (*.json) in {directory}")
    out = LeafSet([], {})
    for path in files:
        part = read_leaf_json(path)
        for user in part.users:
            if user in out.data:
                raise _bad(path, f"user {user!r} is also in {out.files[user]}")
        out.users += part.users
        out.data.update(part.data)
        out.hierarchies.update(part.hierarchies)
        out.files.update(part.files)
    return out


def write_leaf_json(path: str | os.PathLike, leaf: LeafSet) -> Path:
    """Write ``leaf`` as one LEAF JSON file (``hierarchies`` when every user has one).

    The write goes to a temporary file renamed at the end, so a reader never sees half a file.
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict = {"users": list(leaf.users)}
    if leaf.users and all(u in leaf.hierarchies for u in leaf.users):
        doc["hierarchies"] = [leaf.hierarchies[u] for u in leaf.users]
    doc["num_samples"] = [leaf.num_samples(u) for u in leaf.users]
    doc["user_data"] = {u: leaf.data[u] for u in leaf.users}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    tmp.replace(path)
    return path


def _by_file(leaf: LeafSet) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for u in leaf.users:
        groups.setdefault(leaf.files.get(u, ""), []).append(u)
    return list(groups.values())


def sample_niid(leaf: LeafSet, fraction: float, rng: random.Random) -> LeafSet:
    """LEAF's non-IID sampling (``sample.py --niid --fraction``), per source file.

    Per file: shuffle its users with ``rng``, then take users until ``int(fraction · total)``
    samples are reached; the last user keeps only the samples still missing (its first ones,
    in order: LEAF also permutes them, which would break Shakespeare's sequential split).
    ``fraction >= 1`` returns ``leaf`` unchanged (LEAF would still reorder the users).

    Raises:
        ConfigError: ``data.fraction`` outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ConfigError("data.fraction", fraction, "a fraction of the samples in (0, 1]")
    if fraction >= 1:
        return leaf
    users, data = [], {}
    for group in _by_file(leaf):
        order = list(group)
        rng.shuffle(order)
        target = int(fraction * sum(leaf.num_samples(u) for u in group))
        taken = 0
        for u in order:
            if taken >= target:
                break
            n = min(leaf.num_samples(u), target - taken)
            d = leaf.data[u]
            data[u] = d if n == len(d["y"]) else {"x": d["x"][:n], "y": d["y"][:n]}
            users.append(u)
            taken += n
    return leaf.subset(users, data)


def remove_users(leaf: LeafSet, min_samples: int) -> LeafSet:
    """LEAF's ``remove_users.py --min_samples k``: keep users with more than ``k`` samples.

    Raises:
        ConfigError: ``data.min_samples`` < 0.
    """
    if min_samples < 0:
        raise ConfigError("data.min_samples", min_samples, "an integer >= 0")
    return leaf.subset([u for u in leaf.users if leaf.num_samples(u) > min_samples])


def _take(d: dict, idx) -> dict:
    return {"x": [d["x"][i] for i in idx], "y": [d["y"][i] for i in idx]}


def split_by_sample(
    leaf: LeafSet, train_fraction: float, rng: random.Random, sequential: bool = False
) -> tuple[LeafSet, LeafSet]:
    """LEAF's ``split_data.py --by_sample --frac t``: each user's samples into train and test.

    A user with n >= 2 samples gets ``n_train = max(1, int(t·n))`` (1 if n = 2) training
    samples: a random subset drawn with ``rng.sample`` (kept in their original order), or, with
    ``sequential`` (LEAF's Shakespeare rule), the first ``n_train``; the test samples are the
    others, except that with ``sequential`` they start at ``n_train + 80 − 1``, after the last
    training window, so no test input overlaps a training input. Users with fewer than 2
    samples, or left without a training or a test sample, are dropped (as LEAF does).

    Returns:
        ``(train, test)`` with the same users, in order.

    Raises:
        ConfigError: ``data.train_fraction`` outside (0, 1).
    """
    if not 0 < train_fraction < 1:
        raise ConfigError("data.train_fraction", train_fraction, "a fraction in (0, 1)")
    keep, train, test = [], {}, {}
    for u in leaf.users:
        d = leaf.data[u]
        n = len(d["y"])
        if n < 2:
            continue
        n_train = 1 if n == 2 else max(1, int(train_fraction * n))
        if sequential:
            tr, te = range(n_train), range(n_train + SEQ_LEN - 1, n)
        else:
            chosen = set(rng.sample(range(n), n_train))
            tr = [i for i in range(n) if i in chosen]
            te = [i for i in range(n) if i not in chosen]
        if len(tr) >= 1 and len(te) >= 1:
            keep.append(u)
            train[u], test[u] = _take(d, tr), _take(d, te)
    return leaf.subset(keep, train), leaf.subset(keep, test)


def split_by_user(
    leaf: LeafSet, train_fraction: float, rng: random.Random
) -> tuple[LeafSet, LeafSet]:
    """LEAF's ``split_data.py --by_user --frac t``: ``int(t·U)`` users drawn with
    ``rng.sample`` hold training data, the others test data (both in their original order).

    Raises:
        ConfigError: ``data.train_fraction`` outside (0, 1).
    """
    if not 0 < train_fraction < 1:
        raise ConfigError("data.train_fraction", train_fraction, "a fraction in (0, 1)")
    chosen = set(rng.sample(range(len(leaf.users)), int(train_fraction * len(leaf.users))))
    train = [u for i, u in enumerate(leaf.users) if i in chosen]
    test = [u for i, u in enumerate(leaf.users) if i not in chosen]
    return leaf.subset(train), leaf.subset(test)


def size_summary(counts: list[int]) -> dict:
    """Users, samples and the per-user size distribution (min, quartiles, max, mean, std)."""
    if not counts:
        return {"users": 0, "samples": 0}
    s = sorted(counts)

    def q(p: float) -> float:  # linear interpolation, as numpy's default
        pos = p * (len(s) - 1)
        lo = math.floor(pos)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)

    mean = sum(s) / len(s)
    return {
        "users": len(s),
        "samples": sum(s),
        "min": s[0],
        "p25": q(0.25),
        "median": q(0.5),
        "p75": q(0.75),
        "max": s[-1],
        "mean": mean,
        "std": math.sqrt(sum((c - mean) ** 2 for c in s) / len(s)),
    }
