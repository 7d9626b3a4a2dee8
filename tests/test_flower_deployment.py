"""engine=flower deployed (slow): the commands of docs/engines.md on one machine, loopback only.

``python -m flip.engines.flower.export DIR``, a ``flower-superlink``, two ``flower-supernode``
processes (``partition-id`` 0 and 1) and ``flwr run DIR``: after 2 rounds the global model the
ServerApp wrote is ``torch.equal`` to ``engine=local``'s, and every process is stopped.
Run with ``pytest -m slow tests/test_flower_deployment.py``.
"""

import subprocess
import sys

import pytest

pytest.importorskip("flwr")

from flower_helpers import (  # noqa: E402
    SETTING,
    needs_fmnist,
    now_ticks,
    run,
    unequal_columns,
    unequal_tensors,
    wait_gone,
)

from flip.engines.flower.processes import (  # noqa: E402
    LOOPBACK,
    executable,
    flower_env,
    free_port,
    started,
    superlink_cmd,
    wait_healthy,
    write_connection,
)

pytestmark = [pytest.mark.slow, needs_fmnist]
K4 = ["federation.num_clients=4"]


def test_superlink_two_supernodes_and_flwr_run(tmp_path):
    local, app, out = tmp_path / "local", tmp_path / "app", tmp_path / "run"
    run(local, K4)
    env = flower_env(tmp_path / "home")
    started_at = now_ticks()
    subprocess.run([sys.executable, "-m", "flip.engines.flower.export", str(app), *SETTING,
                    *K4, "engine.num_supernodes=2", f"output_dir={out}"],
                   env=env, check=True, timeout=120)
    port = free_port()
    write_connection(tmp_path / "home", "local", f"{LOOPBACK}:{port}")
    link_log = tmp_path / "superlink.log"
    with started(superlink_cmd(port, simulation=False), env, link_log) as link:
        wait_healthy(port, link, link_log)
        nodes = [
            [executable("flower-supernode"), "--insecure", "--superlink", f"{LOOPBACK}:{port}",
             "--node-config", f"partition-id={i} num-partitions=2",
             "--host", LOOPBACK, "--port", str(free_port())]
            for i in range(2)
        ]
        with started(nodes[0], env, tmp_path / "node0.log"), \
                started(nodes[1], env, tmp_path / "node1.log"):
            done = subprocess.run([executable("flwr"), "run", str(app), "local", "--stream"],
                                  env=env, timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_gone(started_at) == []
    assert unequal_tensors(local / "model.pt", out / "model.pt") == []
    assert unequal_columns(local, out) == {}
