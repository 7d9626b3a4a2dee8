"""engine=flower through an in-process Grid (no Ray): flip's real ServerApp and ClientApp, every
Message serialised to Flower's protobuf and back (ENGINES.md §3 "Tests").

After 2 rounds on a small real Fashion-MNIST setting, the global model is ``torch.equal`` to
``engine=local``'s for FedAvg, AutoFLIP (compacted), PruneFL and EFLPrune, and every
``rounds.csv`` value but the times is the same string; a client whose data loader raises is
counted in ``clients/failed`` as on ``engine=local``; a local run resumes on Flower.
"""

import shutil

import pytest

pytest.importorskip("flwr")

from compose import compose_cfg  # noqa: E402
from flower_helpers import (  # noqa: E402
    ALGORITHMS,
    SETTING,
    needs_fmnist,
    rows,
    run,
    unequal_columns,
    unequal_tensors,
)

from flip.engines.flower import client_side  # noqa: E402
from flip.federation.seeding import sample_clients  # noqa: E402

pytestmark = needs_fmnist
INPROCESS = ["engine=flower", "engine.backend=inprocess"]
CHECKPOINTS = ["checkpoint.every=1"]  # the resume test starts from the local run's round 1


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """``engine=local`` runs of this module, each made once: ``local_run(algorithm)``."""
    done = {}

    def get(algorithm):
        if algorithm not in done:
            out = tmp_path_factory.mktemp(f"local-{algorithm}")
            run(out, [f"algorithm={algorithm}", *ALGORITHMS[algorithm], *CHECKPOINTS])
            done[algorithm] = out
        return done[algorithm]

    return get


def flower_run(out, overrides):
    """A run on the in-process Grid; returns the ClientApp side that trained its clients."""
    client_side._SIDES.clear()
    run(out, [*overrides, *INPROCESS])
    [side] = client_side._SIDES.values()
    return side


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_global_model_equals_local(algorithm, tmp_path, local_run):
    extra = [f"algorithm={algorithm}", *ALGORITHMS[algorithm], *CHECKPOINTS]
    local, flower = local_run(algorithm), tmp_path / "flower"
    side = flower_run(flower, extra)
    assert side.cfg.algorithm.name == algorithm  # the ClientApp trained this run's clients
    assert unequal_tensors(local / "model.pt", flower / "model.pt") == []
    assert unequal_columns(local, flower) == {}
    rebuilt = [key for key in side.networks if key != "[]"]  # architectures replayed
    if algorithm == "autoflip":  # clients rebuilt and trained the compact network
        assert rebuilt, "AutoFLIP compacted nothing: the test would not cover compaction"
        assert unequal_tensors(local / "model_compact.pt", flower / "model_compact.pt") == []
    if algorithm == "eflprune":  # a sub-model per round, rebuilt from its removal
        assert len(rebuilt) >= 1
        assert (local / "eflprune.json").read_text() == (flower / "eflprune.json").read_text()
    if algorithm == "prunefl":  # initial pruning (a callback with extras) and gradient sums
        assert unequal_tensors(local / "mask.pt", flower / "mask.pt", "masks") == []
        assert (local / "prunefl.json").read_text() == (flower / "prunefl.json").read_text()
    if algorithm == "fedavg":
        assert rebuilt == []


def test_raising_client_is_counted_in_clients_failed(tmp_path):
    seed = compose_cfg(SETTING).seed
    k = sample_clients(seed, 1, 6, 0.5)[0]
    faulty = ["data._target_=fixtures_failures.FaultyClientData", f"+data.raise_clients=[{k}]"]
    local, flower = tmp_path / "local", tmp_path / "flower"
    run(local, faulty)
    flower_run(flower, faulty)
    assert rows(flower)[0]["clients/failed"] == "1"
    assert unequal_columns(local, flower) == {}
    assert unequal_tensors(local / "model.pt", flower / "model.pt") == []


def test_local_run_resumes_on_flower(tmp_path, local_run):
    local, resumed = local_run("fedavg"), tmp_path / "resumed"
    shutil.copytree(local, resumed)
    (resumed / "model.pt").unlink()
    (resumed / "checkpoints" / "round_0002.pt").unlink()
    checkpoint = resumed / "checkpoints" / "round_0001.pt"
    flower_run(resumed, ["checkpoint.every=1", f"resume={checkpoint}"])
    assert unequal_tensors(local / "model.pt", resumed / "model.pt") == []
    assert unequal_columns(local, resumed) == {}
    assert (resumed / "checkpoints" / "round_0002.pt").is_file()
