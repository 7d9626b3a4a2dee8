"""AutoFLIP's federated loss exploration, unit by unit (ALGORITHMS.md §2.1): every explorer
starts from its own copy of θ_0, D is the unweighted mean of D_k, early stopping ends an
explorer, a failed explorer is left out, ``init_from=explored`` starts from the explorers'
mean."""

import torch
from federation_helpers import tiny_federation

from flip.algorithms import AutoFLIP
from flip.federation import ClientJob, ClientUpdate, Executor, LocalExecutor


class ShiftExecutor(Executor):
    """Client k returns θ_start + (k + 1) everywhere (a NaN for ``nan``, raises for
    ``broken``); records every starting network it was given."""

    def __init__(self, nan=(), broken=()):
        super().__init__("shift")
        self.nan, self.broken, self.starts = set(nan), set(broken), []

    def train(self, fed, net, masks, jobs):
        out = []
        for job in jobs:
            start = {k: p.detach().clone() for k, p in net.named_parameters()}
            self.starts.append(start)
            if job.client in self.broken:
                out.append(RuntimeError("device lost"))
                continue
            shift = float("nan") if job.client in self.nan else float(job.client + 1)
            params = {k: v + shift for k, v in start.items()}
            out.append(ClientUpdate(job.client, params, {}, 10, 10 * 2, [1.0, 0.9]))
        return out


def explore(tmp_path, executor, **kw):
    pruning = {"threshold": 0.3, "compact": False}
    algo = AutoFLIP(exploration={"epochs": 2, "patience": 1}, pruning=pruning, **kw)
    fed = tiny_federation(tmp_path, algo, rounds=1)
    fed.executor = executor
    theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
    return algo, fed, theta0


def test_every_explorer_starts_from_theta0_and_d_is_the_mean(tmp_path):
    algo, fed, theta0 = explore(tmp_path, ShiftExecutor())
    mean_d, explored = algo.explore(fed)
    assert len(fed.executor.starts) == 4  # all four clients explore (client_fraction 1)
    for start in fed.executor.starts:
        for k, v in start.items():
            assert torch.equal(v, theta0[k])
    # D_k = (k + 1)² everywhere: mean over k = 0..3 of 1, 4, 9, 16 = 7.5
    for k, d in mean_d.items():
        torch.testing.assert_close(d, torch.full_like(theta0[k], 7.5).cpu())
    for k, p in explored.items():  # the explorers' mean θ_k = θ_0 + 2.5
        torch.testing.assert_close(p, theta0[k] + 2.5)
    assert fed.ledger.setup["clients"] == 4 and fed.ledger.setup["samples"] == 4 * 20


def test_failed_explorers_are_left_out_of_the_mean(tmp_path):
    algo, fed, theta0 = explore(tmp_path, ShiftExecutor(nan=[1], broken=[2]))
    mean_d, explored = algo.explore(fed)
    # explorers 0 and 3 remain: D = (1 + 16) / 2; θ = θ_0 + (1 + 4) / 2
    for k, d in mean_d.items():
        torch.testing.assert_close(d, torch.full_like(theta0[k], 8.5).cpu())
        torch.testing.assert_close(explored[k], theta0[k] + 2.5)
    assert fed.ledger.setup["clients"] == 4  # every explorer was sent θ_0 and costs


def test_init_from_explored_starts_round_one_from_the_explorers_mean(tmp_path):
    algo, fed, theta0 = explore(tmp_path, ShiftExecutor(), init_from="explored")
    fed.setup()
    assert fed.layout is None  # pruning.compact=false: θ keeps the dense shapes
    for k, p in fed.net.named_parameters():
        expected = (theta0[k] + 2.5) * algo.masks[k].to(theta0[k])
        torch.testing.assert_close(p.detach(), expected)
    assert any(not m.all() for m in algo.masks.values())  # the mask does prune


def test_early_stopping_ends_an_explorer_without_improvement(tmp_path):
    """With a learning rate of 0 the model never changes: its epoch-mean loss moves only by
    float rounding, and patience 1 stops at the first epoch that does not improve on the best
    one, long before the 10 epochs allowed."""
    fed = tiny_federation(tmp_path, AutoFLIP(), rounds=1)
    spec = AutoFLIP(exploration={"patience": 1}).exploration
    from flip.federation.callbacks import CallbackSpec

    job = ClientJob(0, 1, 10, 0.0, (CallbackSpec("early_stopping", {"patience": spec.patience}),))
    [update] = LocalExecutor().train(fed, fed.net, None, [job])
    losses = update.epoch_losses
    # the callback watches the logged (float32) loss: the last epoch does not improve on the
    # best one by more than float32's rounding at ~2.3 (2.4e-7)
    assert 2 <= len(losses) < 10 and losses[-1] >= min(losses[:-1]) - 2.4e-7
    assert max(losses) - min(losses) < 1e-5  # the same model every epoch
    [longer] = LocalExecutor().train(fed, fed.net, None, [ClientJob(0, 1, 3, 0.0)])
    assert len(longer.epoch_losses) == 3  # without the callback all epochs run
