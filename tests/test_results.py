"""``python -m flip.results``: the driver that makes a published comparison under ``results/``
(issue 11, item 6): finished runs are skipped, unfinished ones resumed, the kept files collected,
the provenance recorded, and a re-analysis keeps the record of the commit that made the runs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml
from fixtures_runs import write_run

from flip import results


@pytest.fixture
def comparison(tmp_path, monkeypatch):
    """A results folder whose spec names two labels x two seeds, and their finished runs under
    ``logs/results`` (hand-written; nothing trains)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results" / "demo"
    folder.mkdir(parents=True)
    spec = {"title": "t", "base": ["experiment=fmnist_patho"], "seeds": [1, 2],
            "runs": {"fedavg": ["algorithm=fedavg"], "autoflip": ["algorithm=autoflip"]}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    for seed in (1, 2):
        for label in ("fedavg", "autoflip"):
            write_run(results.LOGS / "demo" / f"{label}_seed{seed}", label, seed,
                      test=[0.2, 0.4, 0.5], val=[0.25, 0.45, 0.4])
    return folder.relative_to(tmp_path)  # as typed: python -m flip.results results/demo


@pytest.fixture
def calls(monkeypatch):
    """The commands the driver starts (training runs, the analysis), recorded, not run; git
    (for the provenance) still runs."""
    started, real = [], subprocess.run

    def fake(cmd, **kw):
        if cmd[0] == "git":
            return real(cmd, **kw)
        started.append(cmd)

    monkeypatch.setattr(subprocess, "run", fake)
    return started


def test_finished_runs_are_skipped_and_collected(comparison, calls):
    results.make(comparison)
    assert all(cmd[2] == "flip.analysis.compare" for cmd in calls)  # no training run started
    assert len(calls) == 1 and calls[0][3:6] == [str(comparison / "runs"), "--out",
                                                   str(comparison)]
    kept = sorted(p.relative_to(comparison / "runs").as_posix()
                  for p in (comparison / "runs").rglob("*") if p.is_file())
    assert kept == sorted(f"{label}_seed{s}/{name}" for label in ("fedavg", "autoflip")
                          for s in (1, 2) for name in results.KEPT)
    record = json.loads((comparison / "provenance.json").read_text())
    assert record["runs"] == sorted(["fedavg_seed1", "fedavg_seed2", "autoflip_seed1",
                                     "autoflip_seed2"])
    assert record["command"] == "python -m flip.results results/demo"
    assert {"commit", "dirty", "machine", "cpu", "torch"} <= set(record)


def test_unfinished_run_is_resumed_from_its_checkpoint(comparison, calls):
    out = results.LOGS / "demo" / "fedavg_seed2"
    (out / "summary.json").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "round_2.pt").write_bytes(b"")
    results.run_one("demo", "fedavg", 2, ["algorithm=fedavg"])
    (cmd,) = calls
    assert cmd[1:3] == ["-m", "flip"] and f"resume={out}" in cmd and "seed=2" in cmd


def test_saved_unfinished_run_continues_on_a_fresh_clone(comparison, calls):
    """``--save-unfinished`` copies only the newest checkpoint (with rounds.csv, config.yaml) of
    a run that has not finished; with the logs gone (a fresh clone) the driver copies it back
    and resumes from it, and drops the copy once the run has finished."""
    out = results.LOGS / "demo" / "fedavg_seed2"
    (out / "summary.json").unlink()
    (out / "checkpoints").mkdir()
    for r in (3, 4):
        (out / "checkpoints" / f"round_{r:04d}.pt").write_bytes(bytes([r]))
    results.main([str(comparison), "--save-unfinished"])
    saved = comparison / results.UNFINISHED / "fedavg_seed2"
    kept = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file())
    assert kept == ["checkpoints/round_0004.pt", "config.yaml", "rounds.csv"]
    assert not calls  # nothing ran
    assert sorted(p.name for p in (comparison / results.UNFINISHED).iterdir()) == [
        "fedavg_seed2"]  # finished runs are not saved
    shutil.rmtree(results.LOGS / "demo" / "fedavg_seed2")  # a fresh clone: no logs
    results.run_one("demo", "fedavg", 2, ["algorithm=fedavg"], comparison / results.UNFINISHED)
    (cmd,) = calls
    assert f"resume={out}" in cmd
    assert (out / "checkpoints" / "round_0004.pt").read_bytes() == bytes([4])

    shutil.rmtree(out)
    write_run(out, "fedavg", 2, test=[0.2, 0.4], val=[0.3, 0.5])  # the run finishes
    results.make(comparison)
    assert not saved.exists() and (comparison / "runs" / "fedavg_seed2" / "summary.json").is_file()


def test_reanalysis_keeps_the_runs_record(comparison, calls):
    results.make(comparison)
    made = comparison / "provenance.json"
    first = json.loads(made.read_text())
    first["commit"] = "0" * 40  # as if the runs were made at another commit
    made.write_text(json.dumps(first))
    results.make(comparison, analyse_only=True)
    again = json.loads(made.read_text())
    assert again["commit"] == "0" * 40 and again["runs"] == first["runs"]
    assert again["analysed"]["command"].endswith("--analyse-only")
    assert "commit" in again["analysed"]


def test_reuse_takes_the_committed_runs_of_another_spec(comparison, calls):
    """A reused run comes from ``results/OTHER/runs/`` (committed, on any clone) when it is
    there, and the logs are not needed; without a committed copy it falls back to the logs."""
    other = comparison.parent / "other" / "runs" / "fedavg_seed1"
    write_run(other, "fedavg", 1, test=[0.1, 0.9, 0.3], val=[0.1, 0.2, 0.3])
    assert results.reused_run(comparison.parent, "other/fedavg", 1) == other
    assert results.reused_run(comparison.parent, "other/fedavg", 2) == (
        results.LOGS / "other" / "fedavg_seed2")
    spec = yaml.safe_load((comparison / "spec.yaml").read_text())
    spec["reuse"] = {"old": "other/fedavg"}
    spec["seeds"] = [1]
    (comparison / "spec.yaml").write_text(yaml.safe_dump(spec))
    results.make(comparison)
    copied = json.loads((comparison / "runs" / "old_seed1" / "summary.json").read_text())
    assert copied == json.loads((other / "summary.json").read_text())
    with pytest.raises(SystemExit, match="NAME/label"):
        results.reused_run(comparison.parent, "fedavg", 1)
