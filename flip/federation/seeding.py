"""Independent random streams derived from the run seed (ALGORITHMS.md §2.3).

Every random draw of a run comes from a stream keyed by (seed, purpose, round, client), so
client sampling, each client's data order and the exploration never consume one another's
numbers: an AutoFLIP run with Tp = 0 repeats FedAvg's rounds exactly, and a round can be
replayed from its keys alone.
"""

import math

import numpy as np

SAMPLING, TRAINING, EXPLORATION, INIT = 1, 2, 3, 4


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed for the stream ``(seed, *keys)`` (NumPy ``SeedSequence`` hashing)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] & 0x7FFFFFFF)


def sample_clients(
    seed: int, round_idx: int, num_clients: int, fraction: float, attempt: int = 0
) -> list[int]:
    """The m = max(1, round(C·K)) clients of round ``round_idx``, uniformly without replacement,
    sorted. Source: ALGORITHMS.md §1 step 1. ``attempt`` > 0 draws the sample of a retried round
    (too few clients succeeded, :mod:`flip.federation.failures`) from its own stream."""
    m = max(1, math.floor(fraction * num_clients + 0.5))  # round half up
    rng = np.random.default_rng([seed, SAMPLING, round_idx, *([attempt] if attempt else [])])
    return sorted(int(k) for k in rng.choice(num_clients, size=m, replace=False))


def client_seed(seed: int, round_idx: int, client: int, attempt: int = 0) -> int:
    """The seed of client ``client``'s data order and augmentations in round ``round_idx``
    (``attempt`` > 0: a retried round, its own stream)."""
    return derive_seed(seed, TRAINING, round_idx, client, *([attempt] if attempt else []))
