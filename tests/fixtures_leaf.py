"""Writers of tiny LEAF data sets in LEAF's real JSON format (DATA.md "LEAF JSON").

- ``write_tiny_femnist``: ``<root>/all_data/all_data_<i>.json`` files, each
  ``{"users", "num_samples", "user_data": {u: {"x": [[784 floats]], "y": [ints]}}}``. Every
  input is constant, ``x = [code] * 784`` with ``code = (100·user + i) / 10⁴``, so a test can
  tell which sample a batch holds; ``y = (user + i) % 62``.
- ``write_tiny_shakespeare``: ``<root>/all_data/all_data.json`` with ``hierarchies`` (plays),
  each user's samples the 80-character windows of a text and their next characters.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = {
    "HAMLET_HAMLET": (
        "THE TRAGEDY OF HAMLET",
        "To be, or not to be, that is the question: Whether 'tis nobler in the mind to "
        "suffer The slings and arrows of outrageous fortune, Or to take arms against a sea "
        "of troubles And by opposing end them. "
        * 6,
    ),
    "HAMLET_HORATIO": (
        "THE TRAGEDY OF HAMLET",
        "Now cracks a noble heart. Good night, sweet prince, And flights of angels sing thee "
        "to thy rest! Why does the drum come hither? "
        * 5,
    ),
    "MACBETH_MACBETH": (
        "MACBETH",
        "Tomorrow, and tomorrow, and tomorrow, Creeps in this petty pace from day to day, To "
        "the last syllable of recorded time; And all our yesterdays have lighted fools The way "
        "to dusty death. Out, out, brief candle! "
        * 6,
    ),
}


def femnist_code(user: int, i: int) -> float:
    """The constant pixel value of sample ``i`` of user ``user`` in :func:`write_tiny_femnist`."""
    return (100 * user + i) / 1e4


def write_tiny_femnist(root, sizes=(12, 7, 20, 3), files: int = 2) -> Path:
    """Users ``f_0000 .. f_{U-1}`` with ``sizes[u]`` samples, dealt round-robin into ``files``
    LEAF JSON files under ``root/all_data``. Returns ``root``."""
    root = Path(root)
    out = root / "all_data"
    out.mkdir(parents=True, exist_ok=True)
    docs = [{"users": [], "num_samples": [], "user_data": {}} for _ in range(files)]
    for u, n in enumerate(sizes):
        doc = docs[u % files]
        name = f"f_{u:04d}"
        doc["users"].append(name)
        doc["num_samples"].append(n)
        doc["user_data"][name] = {
            "x": [[femnist_code(u, i)] * 784 for i in range(n)],
            "y": [(u + i) % 62 for i in range(n)],
        }
    for i, doc in enumerate(docs):
        (out / f"all_data_{i}.json").write_text(json.dumps(doc))
    return root


def shakespeare_windows(text: str) -> tuple[list[str], list[str]]:
    """All 80-character windows of ``text`` and the character after each (LEAF's samples)."""
    n = len(text) - 80
    return [text[i:i + 80] for i in range(n)], [text[i + 80] for i in range(n)]


def write_tiny_shakespeare(root, texts: dict | None = None) -> Path:
    """``root/all_data/all_data.json`` with one user per entry of ``texts``
    (``{user: (play, text)}``, default :data:`TEXTS`). Returns ``root``."""
    root = Path(root)
    out = root / "all_data"
    out.mkdir(parents=True, exist_ok=True)
    texts = texts or TEXTS
    doc = {"users": [], "hierarchies": [], "num_samples": [], "user_data": {}}
    for user, (play, text) in texts.items():
        x, y = shakespeare_windows(text)
        doc["users"].append(user)
        doc["hierarchies"].append(play)
        doc["num_samples"].append(len(y))
        doc["user_data"][user] = {"x": x, "y": y}
    (out / "all_data.json").write_text(json.dumps(doc))
    return root
