"""Client partitions of a labelled data set: IID, pathological (shards) and Dirichlet.

Pure functions on a numpy integer label array; every random choice comes from the
``numpy.random.Generator`` passed in, so a seed fixes the partition. Each partition function
returns one sorted int64 index array per client (positions into ``labels``).
Source: ``/work/shared/spec/DATA.md``, section "Partitions (non-IID)".
"""

from __future__ import annotations

import numpy as np

from flip.errors import ConfigError


def _check_num_clients(labels: np.ndarray, num_clients: int) -> None:
    n = int(len(labels))
    if not 1 <= int(num_clients) <= n:
        raise ConfigError(
            "federation.num_clients",
            num_clients,
            f"1..{n}",
            hint=f"There are {n} training samples; every client needs at least one.",
        )


def _finish(parts) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition_iid(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """IID partition: shuffle all samples and split them evenly (``np.array_split``).

    Args:
        labels: int array (N,); only its length matters.
        num_clients: K, 1..N.
        rng: source of randomness.

    Returns:
        K sorted int64 index arrays; sizes differ by at most 1; together they cover 0..N-1 once.

    Raises:
        ConfigError: ``federation.num_clients`` outside 1..N.
    """
    labels = np.asarray(labels)
    _check_num_clients(labels, num_clients)
    return _finish(np.array_split(rng.permutation(len(labels)), int(num_clients)))


def _assign_classes(
    num_clients: int, classes: np.ndarray, c: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each client ``c`` distinct classes, each class held by floor/ceil(K*c/C) clients.

    Holder capacities sum to K*c. Clients are served one by one, each taking the ``c`` classes
    with the largest remaining capacity (ties broken at random). Invariant: every capacity is at
    most the number of clients still to serve, and the capacities sum to c times that number, so
    at least ``c`` classes have capacity left and those that every remaining client must take are
    among the top ``c``: the greedy never gets stuck (a Havel-Hakimi style argument).
    """
    num_classes = len(classes)
    slots = num_clients * c
    capacity = np.full(num_classes, slots // num_classes, dtype=np.int64)
    capacity[rng.permutation(num_classes)[: slots % num_classes]] += 1
    held = []
    for remaining in range(num_clients, 0, -1):
        assert capacity.max() <= remaining
        order = np.lexsort((rng.random(num_classes), -capacity))
        take = order[:c]
        assert np.all(capacity[take] > 0)
        capacity[take] -= 1
        held.append(np.sort(classes[take]))
    return held


def partition_patho(
    labels: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Pathological non-IID partition (McMahan et al. 2017, "shards"; DATA.md ``patho``).

    Every client holds exactly ``classes_per_client`` (c) distinct classes. With K clients there
    are K*c (client, class) slots; each class present in ``labels`` is held by floor or ceil of
    K*c/num_classes clients (see :func:`_assign_classes`). Each class's samples are shuffled and
    split evenly (``np.array_split``) among its holders.

    If K*c < num_classes some classes are held by no client and their samples are left out of
    the partition (allowed: the paper's setting has K*c >= num_classes, small demos may not).
    Otherwise every sample goes to exactly one client.

    Args:
        labels: int array (N,) of class ids; ``num_classes`` is the number of distinct labels.
        num_clients: K, 1..N.
        classes_per_client: c, 1..num_classes.
        rng: source of randomness.

    Returns:
        K sorted int64 index arrays.

    Raises:
        ConfigError: ``partition.classes_per_client`` outside 1..num_classes;
            ``federation.num_clients`` outside 1..N, or so large that a class has fewer samples
            than clients holding it.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    num_classes = len(classes)
    c = int(classes_per_client)
    if not 1 <= c <= num_classes:
        raise ConfigError("partition.classes_per_client", classes_per_client, f"1..{num_classes}")
    _check_num_clients(labels, num_clients)
    held = _assign_classes(int(num_clients), classes, c, rng)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in classes:
        holders = [k for k, h in enumerate(held) if cls in h]
        if not holders:
            continue
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) < len(holders):
            raise ConfigError(
                "federation.num_clients",
                num_clients,
                "fewer clients",
                hint=f"Class {cls} has {len(idx)} samples but {len(holders)} clients hold it; "
                f"use fewer clients, fewer classes per client or more data.",
            )
        for k, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[k].append(chunk)
    return _finish(np.concatenate(p) for p in parts)


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_samples: int,
    rng: np.random.Generator,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Dirichlet non-IID partition (Hsu et al. 2019; DATA.md ``dirichlet``).

    For every class, proportions p ~ Dir(alpha * 1_K) are drawn and the class's shuffled samples
    are cut at ``floor(cumsum(p) * n_class)``. The whole draw is repeated until every client holds
    at least ``min_samples`` samples, at most ``max_tries`` times. Small alpha gives few classes
    per client; large alpha approaches IID. Every sample goes to exactly one client.

    Args:
        labels: int array (N,) of class ids.
        num_clients: K, 1..N.
        alpha: concentration, > 0 (the paper's CIFAR-100 runs use 1).
        min_samples: smallest client size accepted, >= 0.
        rng: source of randomness.
        max_tries: number of draws before giving up, >= 1.

    Returns:
        K sorted int64 index arrays.

    Raises:
        ConfigError: ``partition.alpha`` <= 0; ``partition.min_samples`` < 0 or not reached in
            ``max_tries`` draws (message suggests a larger alpha or a smaller min_samples);
            ``partition.max_tries`` < 1; ``federation.num_clients`` outside 1..N.
    """
    labels = np.asarray(labels)
    if not alpha > 0:
        raise ConfigError("partition.alpha", alpha, "a number > 0")
    if int(min_samples) < 0:
        raise ConfigError("partition.min_samples", min_samples, "an integer >= 0")
    if int(max_tries) < 1:
        raise ConfigError("partition.max_tries", max_tries, "an integer >= 1")
    _check_num_clients(labels, num_clients)
    k, n = int(num_clients), len(labels)
    hint = (
        f"No Dirichlet draw (partition.alpha={alpha}) in {max_tries} tries gave all {k} clients "
        f"at least {min_samples} of the {n} samples; use a larger partition.alpha or a smaller "
        "partition.min_samples (or fewer clients)."
    )
    accepted = f"at most {n // k} (N / num_clients), and reachable with partition.alpha={alpha}"
    if int(min_samples) * k > n:
        raise ConfigError("partition.min_samples", min_samples, accepted, hint=hint)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(int(max_tries)):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(k, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        sizes = [sum(len(c) for c in p) for p in parts]
        if min(sizes) >= int(min_samples):
            return _finish(np.concatenate(p) for p in parts)
    raise ConfigError("partition.min_samples", min_samples, accepted, hint=hint)


def split_train_test(
    indices: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's indices into local train and local test sets (DATA.md "Partitions").

    The indices are shuffled; the test set gets ``round(test_fraction * n)`` of them (Python
    rounding), the train set the rest.

    Args:
        indices: int array (n,) of one client's sample positions.
        test_fraction: in [0, 1) (the paper: 0.2 for images).
        rng: source of randomness.

    Returns:
        ``(train_idx, test_idx)``, both sorted int64.

    Raises:
        ConfigError: ``data.test_fraction`` outside [0, 1).
    """
    if not 0 <= test_fraction < 1:
        raise ConfigError("data.test_fraction", test_fraction, "a number in [0, 1)")
    perm = rng.permutation(np.asarray(indices, dtype=np.int64))
    n_test = int(round(test_fraction * len(perm)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def class_histogram(labels: np.ndarray, parts, num_classes: int) -> np.ndarray:
    """Per-client class counts.

    Args:
        labels: int array (N,) of class ids in 0..num_classes-1.
        parts: K index arrays into ``labels``.
        num_classes: number of columns.

    Returns:
        int64 array (K, num_classes); entry [k, c] counts client k's samples of class c.
    """
    labels = np.asarray(labels)
    hist = np.zeros((len(parts), int(num_classes)), dtype=np.int64)
    for k, p in enumerate(parts):
        hist[k] = np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes)
    return hist
