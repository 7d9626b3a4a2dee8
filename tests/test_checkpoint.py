"""Checkpoints (flip/federation/checkpoint.py): rotation, crashes during the write, random
generators, finding the run to resume, and an in-process resume that extends a run."""

import csv
import logging
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from compose import compose_cfg
from fixtures_data import write_tiny_mnist

from flip.errors import CheckpointError
from flip.federation import checkpoint as ckpt
from flip.federation.checkpoint import (
    Checkpointer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from flip.federation.resume import find_resume
from flip.train import train


def fake_fed(r: int, rounds: int = 10):
    """What the checkpointer reads from a Federation: the round and a state dict."""
    return SimpleNamespace(
        round=r, params=SimpleNamespace(rounds=rounds),
        state_dict=lambda: {"w": torch.full((1000,), float(r))},
    )


def rounds_on_disk(directory: Path) -> list[int]:
    return [r for r, _ in list_checkpoints(directory)]


def test_rotation_keeps_the_newest_n(tmp_path):
    c = Checkpointer(tmp_path, every=1, keep=2, extra={"config": {"seed": 1}})
    for r in range(1, 6):
        c.after_round(fake_fed(r))
        assert rounds_on_disk(tmp_path) == list(range(max(1, r - 1), r + 1))
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "round_0005.pt" and state["round"] == 5
    assert torch.equal(state["federation"]["w"], torch.full((1000,), 5.0))
    assert state["config"] == {"seed": 1} and state["format"] == ckpt.FORMAT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_0004.pt", "round_0005.pt"]


def test_every_n_rounds_and_the_last(tmp_path):
    c = Checkpointer(tmp_path, every=3, keep=10)
    for r in range(1, 8):
        c.after_round(fake_fed(r, rounds=7))
    assert rounds_on_disk(tmp_path) == [3, 6, 7]
    off = Checkpointer(tmp_path / "off", every=0)
    assert not any(off.due(r, 7) for r in range(1, 8))


def test_a_crash_during_the_write_leaves_the_previous_checkpoints(tmp_path, monkeypatch):
    c = Checkpointer(tmp_path, every=1, keep=2)
    for r in (1, 2):
        c.after_round(fake_fed(r))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # the temp file is partly written ...
        raise OSError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        c.after_round(fake_fed(3))
    monkeypatch.setattr(torch, "save", real_save)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp left
    path, state = latest_checkpoint(tmp_path)
    assert state["round"] == 2


def test_a_kill_during_the_write_is_never_visible_and_is_cleaned_up(tmp_path):
    c = Checkpointer(tmp_path, every=1, keep=2)
    for r in (1, 2):
        c.after_round(fake_fed(r))
    # what a SIGKILL in the middle of torch.save leaves: a partial temp file of another process
    full = tmp_path / "round_0002.pt"
    partial = tmp_path / f"{ckpt.TMP_PREFIX}round_0003.pt.99999999"
    partial.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert rounds_on_disk(tmp_path) == [1, 2]
    assert latest_checkpoint(tmp_path)[1]["round"] == 2
    c.after_round(fake_fed(3))
    assert not partial.exists() and rounds_on_disk(tmp_path) == [2, 3]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    c = Checkpointer(tmp_path, every=1, keep=3)
    for r in (1, 2):
        c.after_round(fake_fed(r))
    bad = tmp_path / "round_0003.pt"  # e.g. damaged on disk after it was written
    bad.write_bytes((tmp_path / "round_0002.pt").read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="flip.federation.checkpoint"):
        path, state = latest_checkpoint(tmp_path)
    assert state["round"] == 2 and "round_0003.pt is not a readable checkpoint" in caplog.text
    bad.write_bytes(b"junk")
    (tmp_path / "round_0001.pt").write_bytes(b"junk")
    (tmp_path / "round_0002.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        latest_checkpoint(tmp_path)


def test_every_random_generator_is_saved_and_restored(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    ckpt.write_atomic({"format": ckpt.FORMAT, "rng": rng_state()}, tmp_path / "round_0001.pt")
    first = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    np.random.randn()  # NumPy's cached Gaussian is part of its state
    set_rng_state(load_checkpoint(tmp_path / "round_0001.pt")["rng"])
    again = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    assert first[:3] == again[:3] and torch.equal(first[3], again[3])


def test_find_resume(tmp_path):
    runs = tmp_path / "logs" / "runs" / "exp" / "fedavg"
    older, newer, stub = runs / "2026-01-01_10-00-00", runs / "2026-01-02_10-00-00", runs / "now"
    for d, r in ((older, 5), (newer, 2)):
        Checkpointer(d / "checkpoints", keep=5).save(fake_fed(r))
    os.utime(list_checkpoints(older / "checkpoints")[-1][1], (1, 1))  # older by file time
    assert find_resume(None, stub) is None and find_resume(False, stub) is None
    found = find_resume(True, stub)  # the newest run next to this one
    assert (found.run_dir, found.round) == (newer, 2)
    assert find_resume(str(older), stub).round == 5
    assert find_resume(str(older / "checkpoints"), stub).run_dir == older
    file = older / "checkpoints" / "round_0005.pt"
    assert find_resume(str(file), stub).path == file
    with pytest.raises(CheckpointError, match="no such file"):
        find_resume(str(tmp_path / "nowhere"), stub)
    with pytest.raises(CheckpointError, match=r"no run with a checkpoint in .*autoflip/\*/check"):
        find_resume(True, tmp_path / "logs" / "runs" / "exp" / "autoflip" / "now")
    empty = runs / "2026-01-03_10-00-00"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint \(round_\*\.pt\)"):
        find_resume(str(empty), stub)


# ----- resuming a real (tiny) run in-process ------------------------------------------------
@pytest.fixture
def tiny_run(tmp_path):
    root = write_tiny_mnist(tmp_path / "data", per_class_train=12, per_class_test=2)
    common = [
        "debug=smoke", "data=mnist", f"data.root={root}", "data.download=false",
        "data.train_subset=1.0", "data.batch_size=16", "checkpoint.keep=5",
    ]
    return root, common


def test_resume_extends_a_finished_run_exactly(tiny_run, tmp_path, monkeypatch):
    """A 2-round run resumed to 3 rounds equals a 3-round run; W&B (offline) continues the
    same run id; a resume with another setting is refused before any training."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _, common = tiny_run
    common = [*common, "partition=iid"]
    wandb = ["logger=wandb"]
    train(compose_cfg([*common, "federation.rounds=3"], tmp_path / "straight"))
    train(compose_cfg([*common, *wandb, "federation.rounds=2"], tmp_path / "run"))
    assert rounds_on_disk(tmp_path / "run" / "checkpoints") == [1, 2]
    with pytest.raises(CheckpointError, match=r"client\.lr=0\.1 differs from the checkpoint's"):
        train(compose_cfg([*common, "client.lr=0.1", f"resume={tmp_path / 'run'}"],
                          tmp_path / "stub"))
    summary = train(
        compose_cfg([*common, *wandb, "federation.rounds=3", f"resume={tmp_path / 'run'}"],
                    tmp_path / "stub")
    )
    assert not (tmp_path / "stub").exists()  # the resumed run wrote into its own directory
    assert summary["rounds_completed"] == 3
    a, b = tmp_path / "straight", tmp_path / "run"
    assert (a / "rounds.csv").read_bytes() == (b / "rounds.csv").read_bytes()
    ma, mb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    with (b / "timings.csv").open() as f:
        assert [r["round"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    runs = sorted(p.name for p in (b / "wandb").glob("offline-run-*"))
    run_id = load_checkpoint(b / "checkpoints" / "round_0003.pt")["wandb_id"]
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs)


def test_resume_refuses_changed_data(tiny_run, tmp_path):
    root, common = tiny_run  # the pathological partition depends on the labels
    train(compose_cfg([*common, "federation.rounds=1"], tmp_path / "run"))
    write_tiny_mnist(root, per_class_train=12, per_class_test=2, seed=5)  # other labels
    with pytest.raises(CheckpointError, match="client 0's data differs from the checkpoint's"):
        train(compose_cfg([*common, "federation.rounds=2", f"resume={tmp_path / 'run'}"],
                          tmp_path / "stub"))


@pytest.mark.parametrize(
    "algorithm",
    [
        # PruneFL reconfigures after round 2, so the resumed round 3 needs its importance,
        # stored values and mask from the checkpoint
        ["algorithm=prunefl", "prunefl.interval=2", "prunefl.initial.enabled=false"],
        ["algorithm=eflprune"],
        ["algorithm=random", "random_pruning.density=0.5"],
    ],
    ids=["prunefl", "eflprune", "random"],
)
def test_baselines_resume_exactly(algorithm, tiny_run, tmp_path):
    """Each baseline's state (Algorithm.state_dict) makes a resumed run equal a straight one."""
    _, common = tiny_run
    common = [*common, "partition=iid", *algorithm]
    train(compose_cfg([*common, "federation.rounds=3"], tmp_path / "straight"))
    train(compose_cfg([*common, "federation.rounds=2"], tmp_path / "run"))
    train(compose_cfg([*common, "federation.rounds=3", f"resume={tmp_path / 'run'}"],
                      tmp_path / "stub"))
    a, b = tmp_path / "straight", tmp_path / "run"
    assert (a / "rounds.csv").read_bytes() == (b / "rounds.csv").read_bytes()
    ma, mb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
