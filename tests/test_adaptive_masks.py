"""AutoFLIP's adaptive masks (``pruning.adaptive: per_round``, ALGORITHMS.md §2.4) on a real
tiny federation: with every client in every round the per-round mask is the fixed mask; a
round's clients never train what its mask prunes; a pruned entry keeps its last global value
and comes back with it; Tp = 0 is FedAvg; bad settings stop before training."""

import pytest
import torch
from federation_helpers import tiny_federation

from flip.algorithms import AutoFLIP, FedAvg
from flip.errors import ConfigError
from flip.federation import LocalExecutor
from flip.pruning import kept_positions
from flip.pruning.compaction import float_tensors

EXPLORATION = {"epochs": 2, "patience": 1}


def autoflip(tp=0.3, compact=True, adaptive="per_round"):
    return AutoFLIP(exploration=EXPLORATION,
                    pruning={"threshold": tp, "compact": compact, "adaptive": adaptive})


class Recording(LocalExecutor):
    """The local engine, keeping what each round's clients were sent and what they returned."""

    def __init__(self):
        super().__init__()
        self.sent, self.returned = [], []

    def train(self, fed, net, masks, jobs):
        out = super().train(fed, net, masks, jobs)
        if masks is not None:  # a round, not the exploration
            self.sent.append(({n: p.detach().clone() for n, p in net.named_parameters()},
                              masks))
            self.returned.append([{n: t.clone() for n, t in u.params.items()} for u in out])
        return out


def test_per_round_mask_is_the_fixed_mask_when_every_client_takes_part(tmp_path):
    fixed = autoflip(adaptive="none")
    tiny_federation(tmp_path / "a", fixed, participation=1.0, hidden=8).setup()
    adaptive = autoflip()
    fed = tiny_federation(tmp_path / "b", adaptive, participation=1.0, hidden=8)
    fed.setup()
    assert fed.masks is None  # θ stays dense
    for r in (1, 2):
        adaptive.client_model(fed, r)
        parts = adaptive.adaptive.parts
        assert parts.removal == fixed.removal and parts.removal  # units are removed
        assert parts.masks.keys() == fixed.masks.keys()
        assert all(torch.equal(parts.masks[n], fixed.masks[n]) for n in fixed.masks)
        assert adaptive.adaptive.history[-1]["clients"] == [0, 1, 2, 3]


@pytest.mark.parametrize("compact", [True, False])
def test_clients_train_under_the_round_mask_and_pruned_entries_keep_their_value(
        tmp_path, compact):
    algo = autoflip(compact=compact)
    fed = tiny_federation(tmp_path, algo, rounds=3, participation=0.5, hidden=8)
    fed.executor = rec = Recording()
    fed.setup()
    pruned_before, came_back, masks_seen = None, 0, []
    for r in (1, 2, 3):
        before = {n: t.detach().clone() for n, t in float_tensors(fed.net).items()}
        fed.run_round(r)
        parts, index = algo.adaptive.parts, algo.adaptive.index
        assert (index is not None) == compact and parts.removal  # units removed this round
        sent, masks = rec.sent[-1]
        masks_seen.append(parts.masks)
        trained_now = {}
        for name, p in fed.net.named_parameters():
            held = (kept_positions(p.shape, index[name]) if compact
                    else torch.ones_like(p, dtype=torch.bool))
            trained = trained_now[name] = held & parts.masks[name]
            # sent: θ before the round where the mask keeps, zero where it prunes
            start = (before[name].reshape(-1)[index[name].reshape(-1)].view_as(sent[name])
                     if compact else before[name])
            assert torch.equal(sent[name], start * masks[name]), (r, name)
            for update in rec.returned[-1]:  # never trained what the mask prunes
                assert not update[name][~masks[name]].any(), (r, name)
            # pruned this round: the last global value, whatever the server optimizer did
            assert torch.equal(p[~trained], before[name][~trained]), (r, name)
            if pruned_before is not None:  # pruned in r − 1, kept in r: sent with that value
                came_back += int((pruned_before[name] & trained).sum())
        pruned_before = {n: ~t for n, t in trained_now.items()}
    assert came_back > 0
    assert any(not torch.equal(masks_seen[0][n], masks_seen[1][n]) for n in masks_seen[0])
    assert [h["round"] for h in algo.adaptive.history] == [1, 2, 3]
    info = algo.info(fed)
    assert info["adaptive"] == "per_round"
    assert info["density_hybrid"] == pytest.approx(
        sum(h["density"] for h in algo.adaptive.history) / 3)


def test_tp_zero_per_round_is_fedavg(tmp_path):
    """Tp = 0 prunes nothing in any round: θ after each round is FedAvg's, bit for bit."""
    algo = autoflip(tp=0.0)
    fed = tiny_federation(tmp_path / "a", algo, rounds=2, hidden=8)
    ref = tiny_federation(tmp_path / "b", FedAvg(), rounds=2, hidden=8)
    fed.setup()
    ref.setup()
    for r in (1, 2):
        fed.run_round(r)
        ref.run_round(r)
        for (n, p), (_, q) in zip(fed.net.named_parameters(), ref.net.named_parameters(),
                                  strict=True):
            assert torch.equal(p, q), (r, n)
    assert algo.adaptive.history[-1]["density"] == 1.0


@pytest.mark.parametrize("kw, field", [
    ({"exploration": {"client_fraction": 0.5}}, "pruning.adaptive"),
    ({"exploration": {"privacy": {"noise_multiplier": 1.0, "clip": 0.1}}}, "pruning.adaptive"),
    ({"pruning": {"adaptive": "per_round", "target_density": 0.5}}, "pruning.adaptive"),
    ({"pruning": {"adaptive": "each_round"}}, "pruning.adaptive"),
])
def test_bad_adaptive_settings_name_the_field(kw, field):
    pruning = {"adaptive": "per_round", **kw.get("pruning", {})}
    with pytest.raises(ConfigError, match=field):
        AutoFLIP(pruning=pruning, exploration=kw.get("exploration"))


def test_resumed_per_round_run_equals_an_uninterrupted_one(tmp_path):
    """The explorers' reports travel in the checkpoint (loaded with ``weights_only=True``):
    rounds 2–3 after a resume give the uninterrupted run's θ and masks."""
    straight = autoflip()
    a = tiny_federation(tmp_path / "a", straight, rounds=3, hidden=8)
    a.setup()
    for r in (1, 2, 3):
        a.run_round(r)
    first = tiny_federation(tmp_path / "b", autoflip(), rounds=3, hidden=8)
    first.setup()
    first.run_round(1)
    first.round = 1
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = autoflip()
    b = tiny_federation(tmp_path / "c", resumed, rounds=3, hidden=8)
    b.setup(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    for r in (2, 3):
        b.run_round(r)
    for (n, p), (_, q) in zip(a.net.named_parameters(), b.net.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert resumed.adaptive.history == straight.adaptive.history
