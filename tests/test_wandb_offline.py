"""W&B with no network and no login (flip/wandb_mode.py; issue 6): a run never waits, logs
offline and says once where the offline run is and how to upload it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from compose import compose_cfg
from fixtures_data import write_tiny_mnist

from flip.train import train
from flip.wandb_mode import wandb_mode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    """No W&B variables, an empty home (no ~/.netrc), W&B's host unroutable."""
    for key in list(os.environ):
        if key.startswith("WANDB_") or key == "NETRC":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # 10.255.255.1 is not routed: a connection attempt would hang until the test's timeout
    monkeypatch.setenv("WANDB_BASE_URL", "http://10.255.255.1:9")
    return tmp_path / "home"


def test_online_without_login_runs_offline_and_says_once_where_to_sync(no_login, tmp_path):
    root = write_tiny_mnist(tmp_path / "data", per_class_train=4, per_class_test=1)
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable, "-m", "flip", "debug=smoke", "data=mnist", f"data.root={root}",
            "data.download=false", "data.train_subset=1.0", "federation.rounds=1",
            "logger=wandb", "logger.wandb.offline=false", f"hydra.run.dir={run}",
        ],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert text.count("wandb sync") == 1 and "W&B is not logged in" in text
    sync_dir = Path(re.search(r"upload it with: wandb sync (\S+)", text).group(1))
    assert sync_dir.parent == run / "wandb" and list(sync_dir.glob("run-*.wandb"))
    assert "wandb:" not in text  # W&B's own console output is silenced; flip said it once


@pytest.mark.parametrize(
    "env,offline,expected",
    [
        ({"WANDB_MODE": "disabled"}, False, ("disabled", "")),
        ({"WANDB_MODE": "offline"}, False, ("offline", "WANDB_MODE=offline")),
        ({"WANDB_MODE": "dryrun"}, True, ("offline", "")),
        ({}, True, ("offline", "")),
        ({}, False, ("offline", "W&B is not logged in (run `wandb login` or set WANDB_API_KEY)")),
        ({"WANDB_MODE": "online"}, True, ("offline", "W&B is not logged in (run `wandb login` "
                                                    "or set WANDB_API_KEY)")),
        ({"WANDB_API_KEY": "0" * 40}, False, ("online", "")),
    ],
)
def test_mode(no_login, monkeypatch, env, offline, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert wandb_mode(offline) == expected


def test_a_netrc_entry_for_the_wandb_host_counts_as_logged_in(no_login, monkeypatch):
    no_login.mkdir()
    netrc = no_login / ".netrc"
    netrc.write_text("machine 10.255.255.1\n  login user\n  password " + "0" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode(False) == ("online", "")
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")  # no entry for that host
    assert wandb_mode(False)[0] == "offline"


def test_wandb_mode_disabled_is_honoured(no_login, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = write_tiny_mnist(tmp_path / "data", per_class_train=4, per_class_test=1)
    cfg = compose_cfg(
        ["debug=smoke", "data=mnist", f"data.root={root}", "data.download=false",
         "data.train_subset=1.0", "federation.rounds=1", "logger=wandb"],
        tmp_path / "run",
    )
    train(cfg)
    assert (tmp_path / "run" / "rounds.csv").is_file()
    assert not (tmp_path / "run" / "wandb").exists()
    assert os.environ["WANDB_MODE"] == "disabled"  # Lightning did not overwrite it
