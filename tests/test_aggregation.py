"""Aggregation and server optimizer, against hand-computed values (ALGORITHMS.md §1)."""

import torch
from torch import nn

from flip.federation import build_server_optimizer
from flip.federation.aggregation import average_buffers, client_weights, pseudo_gradient
from flip.federation.seeding import sample_clients


def test_client_weights_are_sample_fractions():
    assert client_weights([10, 30, 60]) == [0.1, 0.3, 0.6]


def test_pseudo_gradient_hand_computed():
    theta = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    clients = [
        {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0])},  # n = 1
        {"w": torch.tensor([2.0, 6.0]), "b": torch.tensor([-1.0])},  # n = 3
    ]
    delta = pseudo_gradient(theta, clients, client_weights([1, 3]))
    # Δ = ¼(θ − θ_1) + ¾(θ − θ_2) = ¼[1, 0] + ¾[−1, −4] = [−0.5, −3]
    torch.testing.assert_close(delta["w"], torch.tensor([-0.5, -3.0]))
    # b: ¼(0 − 1) + ¾(0 + 1) = 0.5
    torch.testing.assert_close(delta["b"], torch.tensor([0.5]))


def test_fedavg_server_step_is_weighted_average():
    """Clients whose weighted average is not θ, so a server that does nothing fails."""
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -1.0]]))
        net.bias.fill_(0.5)
    theta = {k: p.detach().clone() for k, p in net.named_parameters()}
    clients = [{"weight": torch.tensor([[3.0, 1.0]]), "bias": torch.tensor([2.0])},
               {"weight": torch.tensor([[-1.0, 5.0]]), "bias": torch.tensor([-2.0])}]
    opt = build_server_optimizer(lambda p: torch.optim.SGD(p, lr=1.0), net.parameters())
    delta = pseudo_gradient(theta, clients, [0.75, 0.25])
    for k, p in net.named_parameters():
        p.grad = delta[k]
    opt.step()
    # θ ← ¾θ_1 + ¼θ_2: weight [¾·3 − ¼, ¾·1 + ¼·5] = [2, 2]; bias ¾·2 − ¼·2 = 1
    torch.testing.assert_close(net.weight.detach(), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(net.bias.detach(), torch.tensor([1.0]))


def test_server_momentum_equals_paper_ema():
    """SGD(lr=1, momentum=β, dampening=β) with zeroed buffers is m ← βm + (1−β)Δ; θ ← θ − m."""
    beta = 0.9
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_server_optimizer(
        lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=beta, dampening=beta), [p]
    )
    theta, m = p.detach().clone(), torch.zeros(2)
    for delta in ([0.5, 1.0], [-1.0, 2.0], [3.0, 0.0]):
        d = torch.tensor(delta)
        p.grad = d.clone()
        opt.step()
        m = beta * m + (1 - beta) * d
        theta = theta - m
        torch.testing.assert_close(p.detach(), theta)


def test_server_momentum_first_step_is_tenth():
    p = nn.Parameter(torch.tensor([1.0]))
    opt = build_server_optimizer(
        lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9, dampening=0.9), [p]
    )
    p.grad = torch.tensor([1.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9]))


def test_average_buffers():
    bufs = [
        {"mean": torch.tensor([0.0]), "n": torch.tensor(3)},
        {"mean": torch.tensor([4.0]), "n": torch.tensor(5)},
    ]
    out = average_buffers(bufs, [0.25, 0.75])
    torch.testing.assert_close(out["mean"], torch.tensor([3.0]))
    assert int(out["n"]) == 5


def test_sample_clients_count_distinct_and_seeded():
    a = sample_clients(7, 3, 20, 0.25)
    assert len(a) == 5 and len(set(a)) == 5 and all(0 <= k < 20 for k in a)
    assert a == sample_clients(7, 3, 20, 0.25)
    assert sample_clients(7, 1, 20, 0.01) and len(sample_clients(7, 1, 20, 0.01)) == 1
    draws = {tuple(sample_clients(7, r, 20, 0.25)) for r in range(1, 11)}
    assert len(draws) > 1  # rounds draw different clients
