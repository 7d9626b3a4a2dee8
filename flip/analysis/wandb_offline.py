"""Read a W&B offline run folder (``wandb/offline-run-*/run-*.wandb``) without a W&B server.

The ``.wandb`` file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1,
version) then LevelDB-log records (32 KiB blocks; each record a 7-byte header: CRC-32 seeded
with the record type, length, type FULL/FIRST/MIDDLE/LAST) holding protobuf ``Record``
messages of ``wandb.proto.wandb_internal_pb2``. flip reads the run's config, its history
(one row per round, the ``rounds.csv`` keys) and its summary (flip writes the run summary
there, flattened: ``cost/gb_total``, ``final/global/acc1``, ...). A record whose checksum
fails ends the read (a run killed mid-write).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_CRC_SEED = [zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in range(LAST + 1)]
SUMMARY_GROUPS = (
    "final",
    "best",
    "best_test_optimistic",
    "cost",
    "data",
    "algorithm_info",
    "provenance",
)
"""Top-level keys of flip's ``summary.json`` that hold dicts (flattened one level in W&B)."""


def offline_run_files(run_dir: str | Path) -> list[Path]:
    """The ``.wandb`` files of the offline runs under ``run_dir/wandb/``, oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))


def _payloads(path: Path) -> Iterator[bytes]:
    raw = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(raw, 0) if len(raw) >= HEADER.size else (b"", 0, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {raw[:7]!r})")
    pos, pending = HEADER.size, b""
    while pos + RECORD.size <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:  # block trailer padding
            pos += left
            continue
        crc, length, kind = RECORD.unpack_from(raw, pos)
        pos += RECORD.size
        data = raw[pos : pos + length]
        pos += length
        if kind == 0 or kind > LAST or len(data) < length:
            return
        if zlib.crc32(data, _CRC_SEED[kind]) & 0xFFFFFFFF != crc:
            return
        if kind == FULL:
            yield data
        elif kind == FIRST:
            pending = data
        elif kind == MIDDLE:
            pending += data
        else:
            yield pending + data
            pending = b""


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_offline_run(path: str | Path) -> dict:
    """One ``.wandb`` file as ``{"config", "history", "summary", "group", "job_type"}``.

    ``config``: the logged hyperparameters (flip logs its resolved Hydra config);
    ``history``: one dict per ``log`` call, with ``round`` taken from Lightning's
    ``trainer/global_step`` (flip logs with step = round); ``summary``: the last value of
    every summary key, flat. Raises ``ValueError`` if the file is not a W&B log.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"config": {}, "history": [], "summary": {}, "group": None, "job_type": None}
    for data in _payloads(Path(path)):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["job_type"] = rec.run.run_group, rec.run.job_type
            out["config"].update(_items(rec.run.config.update))
        elif kind == "config":
            out["config"].update(_items(rec.config.update))
        elif kind == "history":
            row = _items(rec.history.item)
            if "trainer/global_step" in row:
                row["round"] = int(row["trainer/global_step"])
            out["history"].append(row)
        elif kind == "summary":
            out["summary"].update(_items(rec.summary.update))
    return out


def nested_summary(flat: dict) -> dict:
    """flip's ``summary.json`` layout from a flat W&B summary: ``cost/gb_total`` →
    ``{"cost": {"gb_total": ...}}``, ``final/global/acc1`` → ``{"final": {"global/acc1":
    ...}}`` (each of :data:`SUMMARY_GROUPS`); W&B's own keys (``_runtime``, ...) and
    per-round keys are dropped."""
    out: dict = {}
    for key, value in flat.items():
        head, _, rest = key.partition("/")
        if head in SUMMARY_GROUPS and rest:
            out.setdefault(head, {})[rest] = value
        elif "/" not in key and not key.startswith("_"):
            out[key] = value
    return out
