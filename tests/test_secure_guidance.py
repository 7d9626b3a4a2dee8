"""AutoFLIP's exploration through Flower's SecAgg+ (``exploration.secure_aggregation``,
docs/robust-guidance.md): on flip's real ServerApp and ClientApp over the in-process Grid, the
server's D equals ``engine=local``'s mean of the D_k within SecAgg+'s quantisation step, with
and without private guidance; no explorer's reply carries an array the server could read; the
costs are those of the plain exploration; bad settings stop before training, the field named."""

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402
from compose import compose_cfg  # noqa: E402
from flower_helpers import SETTING, needs_fmnist, rows, run  # noqa: E402

from flip.algorithms import autoflip as autoflip_module  # noqa: E402
from flip.engines.flower import direct_grid  # noqa: E402
from flip.engines.flower.secure import QUANTIZATION_RANGE  # noqa: E402
from flip.errors import ConfigError, TrainingStopped  # noqa: E402
from flip.federation.executor import LocalExecutor  # noqa: E402
from flip.train import train  # noqa: E402

SECURE = ["algorithm=autoflip", "engine=flower", "engine.backend=inprocess",
          "exploration.secure_aggregation=true"]
RANGE = 0.01  # c: above every D_k entry of this setting (checked: over_range is 0)
PRIVATE = ["exploration.privacy.noise_multiplier=0.5", "exploration.privacy.clip=0.002"]


def captured_run(out, overrides, monkeypatch):
    """A run of ``overrides``; returns (summary, the D its guidance matrix was made from, the
    replies the server pulled from the Grid)."""
    seen, replies = {}, []
    real_matrix, real_pull = autoflip_module.guidance_matrix, direct_grid.DirectGrid.pull_messages

    def matrix(displacement):
        seen["D"] = {k: v.clone() for k, v in displacement.items()}
        return real_matrix(displacement)

    def pull(self, ids):
        got = real_pull(self, ids)
        replies.extend(got)
        return got

    monkeypatch.setattr(autoflip_module, "guidance_matrix", matrix)
    monkeypatch.setattr(direct_grid.DirectGrid, "pull_messages", pull)
    summary = run(out, overrides)
    monkeypatch.undo()
    return summary, seen["D"], replies


@needs_fmnist
@pytest.mark.parametrize("private", [False, True], ids=["plain", "private"])
def test_secure_mean_equals_the_plain_mean_within_one_quantisation_step(private, tmp_path,
                                                                        monkeypatch):
    extra = PRIVATE if private else [f"exploration.secure_clipping_range={RANGE}"]
    c = 0.002 if private else RANGE  # the private runs quantise over [-C, C]
    local, d_local, _ = captured_run(tmp_path / "local", ["algorithm=autoflip", *extra],
                                     monkeypatch)
    secure, d_secure, replies = captured_run(tmp_path / "secure", [*SECURE, *extra],
                                             monkeypatch)
    step = 2 * c / QUANTIZATION_RANGE  # stochastic rounding: under one step per explorer
    for name, d in d_local.items():
        err = float((d_secure[name].double() - d.double()).abs().max())
        assert err <= step * 1.001, (name, err, step)
    # the quantisation is not a no-op: the secure D is not bit-equal to the plain one
    assert any(not torch.equal(d_secure[k], d_local[k]) for k in d_local)
    info = secure["algorithm_info"]
    assert info["guidance_secure_aggregation"] is True
    assert local["algorithm_info"]["guidance_secure_aggregation"] is False
    assert info["guidance_epsilon"] == local["algorithm_info"]["guidance_epsilon"]
    for key in ("bytes_exploration", "train_flops_exploration", "exploration_samples",
                "exploration_clients"):
        assert secure["cost"][key] == local["cost"][key], key
    # SecAgg+'s replies: masked vectors as bytes in a ConfigRecord, never an array record
    sa = [r for r in replies if r.metadata.message_type == "train"]
    assert len(sa) == 4 * 6  # four stages x 6 explorers (K = 6, exploration.client_fraction 1)
    assert all(not rec for r in sa for rec in r.content.array_records.values())


@needs_fmnist
def test_an_explorer_that_fails_drops_out_and_the_rest_are_summed(tmp_path, monkeypatch):
    """An explorer whose training raises drops out of SecAgg+; the other explorers' sum is
    recovered from their key shares and equals ``engine=local``'s mean without the failed
    explorer (left out there too), whose cost is its download only on both engines."""
    real = LocalExecutor.train_one

    def train_or_fail(self, fed, net, masks, job):
        if job.client == 0:
            raise RuntimeError("client 0 broke")
        return real(self, fed, net, masks, job)

    extra = [f"exploration.secure_clipping_range={RANGE}", "exploration.client_fraction=1.0"]
    runs = {}
    for name, overrides in (("local", ["algorithm=autoflip", *extra]),
                            ("secure", [*SECURE, *extra])):
        monkeypatch.setattr(LocalExecutor, "train_one", train_or_fail)
        runs[name] = captured_run(tmp_path / name, overrides, monkeypatch)
    (local, d_local, _), (secure, d_secure, _) = runs["local"], runs["secure"]
    step = 2 * RANGE / QUANTIZATION_RANGE
    for name, d in d_local.items():
        assert float((d_secure[name].double() - d.double()).abs().max()) <= step * 1.001
    for key in ("bytes_exploration", "train_flops_exploration", "exploration_samples",
                "exploration_clients"):
        assert secure["cost"][key] == local["cost"][key], key
    assert secure["cost"]["exploration_samples"] > 0


def test_secure_aggregation_with_engine_local_stops_before_the_data(tmp_path):
    cfg = compose_cfg([*SETTING, "algorithm=autoflip", "exploration.secure_aggregation=true",
                       f"exploration.secure_clipping_range={RANGE}",
                       "data.root=/nonexistent", "data.debian_dir=/nonexistent"],
                      tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert err.value.field == "exploration.secure_aggregation"
    assert "engine=flower" in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written, no data read


@pytest.mark.parametrize("overrides, field", [
    (["exploration.aggregate=median"], "exploration.aggregate"),
    (["exploration.attack=scaled", "exploration.attack_fraction=0.2"], "exploration.attack"),
    (["exploration.secure_clipping_range=null"], "exploration.secure_clipping_range"),
    (["exploration.secure_clipping_range=-1"], "exploration.secure_clipping_range"),
    (["pruning.adaptive=per_round"], "exploration.secure_aggregation"),
    (["algorithm.init_from=explored"], "exploration.secure_aggregation"),
    (["exploration.secure_aggregation=sometimes"], "exploration.secure_aggregation"),
])
def test_what_secure_aggregation_cannot_go_with(overrides, field, tmp_path):
    cfg = compose_cfg([*SETTING, *SECURE, f"exploration.secure_clipping_range={RANGE}",
                       *overrides], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert err.value.field == field, str(err.value)
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_one_explorer_or_two_on_one_supernode_is_refused(tmp_path):
    one = compose_cfg([*SETTING, *SECURE, f"exploration.secure_clipping_range={RANGE}",
                       "exploration.client_fraction=0.1"], tmp_path / "one")
    with pytest.raises(ConfigError) as err:
        train(one)
    assert err.value.field == "exploration.secure_aggregation"
    shared = compose_cfg([*SETTING, *SECURE, f"exploration.secure_clipping_range={RANGE}",
                          "exploration.client_fraction=1.0", "engine.num_supernodes=3"],
                         tmp_path / "shared")
    with pytest.raises(ConfigError) as err:
        train(shared)
    assert err.value.field == "engine.num_supernodes"
    assert rows(tmp_path / "shared") == []  # stopped before round 1


@needs_fmnist
def test_too_few_explorers_left_stops_the_run_with_a_flip_error(tmp_path, monkeypatch):
    """With 4 of 6 explorers failing, 2 are left: fewer than SecAgg+'s reconstruction
    threshold (3 of 6 shares), so no sum can be unmasked and the run stops before round 1."""
    real = LocalExecutor.train_one

    def train_or_fail(self, fed, net, masks, job):
        if job.client < 4:
            raise RuntimeError(f"client {job.client} broke")
        return real(self, fed, net, masks, job)

    monkeypatch.setattr(LocalExecutor, "train_one", train_or_fail)
    with pytest.raises(TrainingStopped, match="SecAgg"):
        run(tmp_path, [*SECURE, f"exploration.secure_clipping_range={RANGE}",
                       "exploration.client_fraction=1.0"])
    assert rows(tmp_path) == []
