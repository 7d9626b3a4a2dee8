"""engine=flower in Flower's simulation runtime on Ray (``engine.backend=ray``, the default):
``flwr run`` against a local SuperLink on 127.0.0.1, K = 4 virtual SuperNodes, ClientApps on
2 Ray workers (1 CPU each, CI's 2 cores). Its ``rounds.csv`` matches ``engine=local``'s within
1e-6 (a worker trains with 1 torch thread, the local run with the machine's, so float sums
may round differently), its counts and costs exactly; every process it started is gone
afterwards (ENGINES.md §3 "Tests")."""

import math

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flower_helpers import (  # noqa: E402
    needs_fmnist,
    now_ticks,
    rows,
    run,
    wait_gone,
)

from flip.pruning.masks import mask_jaccard  # noqa: E402

pytestmark = needs_fmnist
K4 = ["federation.num_clients=4", "federation.eval_every=1", "checkpoint.every=1"]
EXACT = ("round", "clients/", "round/", "lr/", "model/", "cost/")


def test_ray_simulation_matches_local(tmp_path):
    local, flower = tmp_path / "local", tmp_path / "flower"
    run(local, K4)
    started = now_ticks()
    summary = run(flower, [*K4, "engine=flower", "engine.client_resources.num_cpus=1",
                           "engine.client_resources.num_gpus=0"])
    assert wait_gone(started) == []
    assert summary["rounds_completed"] == 2
    got, want = rows(flower), rows(local)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for key in w:
            if key.startswith(EXACT) or "" in (g[key], w[key]):  # empty: asynchronous columns
                assert g[key] == w[key], (w["round"], key)
            elif not key.startswith("time/"):
                assert math.isclose(float(g[key]), float(w[key]), rel_tol=0, abs_tol=1e-6), \
                    (w["round"], key, g[key], w[key])
    assert all(r["global/acc1"] and r["local/acc1_mean"] for r in got)  # evaluated each round
    assert sorted(p.name for p in (flower / "checkpoints").iterdir()) == \
        ["round_0001.pt", "round_0002.pt"]


def test_secure_exploration_runs_on_ray(tmp_path):
    """AutoFLIP's SecAgg+ exploration across Ray's processes gives the mask of the in-process
    protocol (the explorers train with 1 torch thread there, so D may differ in its last bits:
    masks compared by Jaccard index)."""
    secure = [*K4, "algorithm=autoflip", "engine=flower", "exploration.secure_aggregation=true",
              "exploration.secure_clipping_range=0.01"]
    inprocess = run(tmp_path / "inprocess", [*secure, "engine.backend=inprocess"])
    started = now_ticks()
    ray = run(tmp_path / "ray", [*secure, "engine.client_resources.num_cpus=1",
                                 "engine.client_resources.num_gpus=0"])
    assert wait_gone(started) == []
    assert ray["algorithm_info"]["guidance_secure_aggregation"] is True
    assert ray["cost"]["exploration_clients"] == 4
    masks = [torch.load(tmp_path / name / "mask.pt")["masks"] for name in ("inprocess", "ray")]
    assert mask_jaccard(*masks) >= 0.999
    assert math.isclose(ray["algorithm_info"]["density_hybrid"],
                        inprocess["algorithm_info"]["density_hybrid"], abs_tol=1e-3)
