"""PruneFL's reconfiguration: magnitude-protected core, greedy importance-per-time selection,
regrowth with stored values (ALGORITHMS.md §3.1, Jiang et al., TNNLS 2022, arXiv 1909.12326).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def decrease_fraction(round_idx: int, max_decrease: float = 0.3, half_life: float = 10000) -> float:
    """dtp of a reconfiguration at round ``round_idx``: ``max_decrease · 0.5^(r/half_life)``,
    the fraction of a layer's active weights that may leave the protected core (§3.1 step 3)."""
    return max_decrease * 0.5 ** (round_idx / half_life)


def magnitude_core(weight: Tensor, mask: Tensor, dtp: float) -> Tensor:
    """The protected core of one layer: its ``n − ⌊dtp·n⌋`` largest-|w| active weights, where
    ``n`` = number of active entries of ``mask``. Ties in |w| are broken by position (first
    wins), so the core has exactly that many entries. ``weight`` and ``mask`` (bool) share a
    shape; returns a bool tensor of that shape. Source: ALGORITHMS.md §3.1 step 3.
    """
    active = mask.reshape(-1).bool()
    n = int(active.sum())
    keep = n - int(dtp * n)
    core = torch.zeros_like(active)
    if keep > 0:
        score = weight.detach().reshape(-1).abs().double().masked_fill(~active, -1.0)
        order = torch.sort(score, descending=True, stable=True).indices
        core[order[:keep]] = True
    return core.view_as(mask)


def greedy_select(
    values: Sequence[Tensor], costs: Sequence[float], base_importance: float, base_time: float
) -> list[Tensor]:
    """The candidates the greedy importance-per-time search adds, per layer.

    ``values[l]``: importance z ≥ 0 of layer l's candidates (1-D, any order); ``costs[l]``: the
    time one parameter of layer l costs per round, c_l > 0 (seconds); ``base_importance`` /
    ``base_time``: Σz and T0 + Σc of what is kept anyway (the protected cores; T0 > 0).
    Candidates are taken in descending z/c_l while ``z_j/c_l > Σz / Σc`` of the selection so
    far (each addition raises that ratio, so the first candidate that fails ends the search:
    every later one has a lower z/c). Ties in z/c are taken in layer order, then position.
    Returns one bool tensor per layer, True where a candidate is added; within a layer the
    added ones are those with the largest z. Source: ALGORITHMS.md §3.1 step 3 (PruneFL's
    ``architecture_search``, which merges the layers' sorted lists with a heap).
    Raises ``ValueError`` for a cost ≤ 0 or a base time ≤ 0.
    """
    if base_time <= 0 or any(c <= 0 for c in costs):
        raise ValueError(f"times must be > 0: base {base_time}, costs {list(costs)}")
    sizes = [v.numel() for v in values]
    z = torch.cat([v.detach().reshape(-1).double().cpu() for v in values])
    c = torch.cat([torch.full((n,), float(c)) for n, c in zip(sizes, costs, strict=True)])
    c = c.double()
    order = torch.sort(z / c, descending=True, stable=True).indices
    zs, cs = z[order], c[order]
    num = base_importance + torch.cumsum(zs, 0) - zs  # Σz of the selection before candidate i
    den = base_time + torch.cumsum(cs, 0) - cs
    fails = torch.nonzero(zs / cs <= num / den)
    taken = int(fails[0]) if fails.numel() else zs.numel()
    chosen = torch.zeros(z.numel(), dtype=torch.bool)
    chosen[order[:taken]] = True
    return list(chosen.split(sizes))


def reconfigure(
    weights: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    importance: Mapping[str, Tensor],
    costs: Mapping[str, float],
    dtp: float,
    base_importance: float,
    base_time: float,
) -> dict[str, Tensor]:
    """PruneFL's new masks for the prunable tensors ``weights`` (ALGORITHMS.md §3.1 step 3).

    Per tensor: keep its :func:`magnitude_core` at ``dtp``; every other entry (pruned ones and
    the weakest ``dtp`` of the active ones) is a candidate ranked by its importance z
    (``importance``, same shape, e.g. Σ n_k·(Σ g)²); :func:`greedy_select` adds candidates
    across all tensors, each costing ``costs[name]`` seconds, starting from
    Σz = ``base_importance`` + z of the cores and Σc = ``base_time`` + c of the cores
    (``base_*`` cover what is always kept: T0 and the tensors that are not prunable).
    Returns one bool tensor per name of ``weights`` (its shape, True = kept).
    """
    names = list(weights)
    cores, cand_values, cand_index, layer_costs = {}, [], [], []
    num, den = float(base_importance), float(base_time)
    for name in names:
        core = magnitude_core(weights[name], masks[name], dtp)
        z = importance[name].detach().reshape(-1).double().to(core.device)
        flat = core.reshape(-1)
        num += float(z[flat].sum())
        den += costs[name] * int(flat.sum())
        idx = torch.nonzero(~flat).flatten()
        cores[name] = core
        cand_values.append(z[idx])
        cand_index.append(idx)
        layer_costs.append(costs[name])
    chosen = greedy_select(cand_values, layer_costs, num, den)
    out = {}
    for name, idx, pick in zip(names, cand_index, chosen, strict=True):
        mask = cores[name].clone().reshape(-1)
        mask[idx[pick.to(idx.device)]] = True
        out[name] = mask.view_as(cores[name])
    return out


@torch.no_grad()
def swap_pruned(param: Tensor, stored: Tensor, old: Tensor, new: Tensor) -> None:
    """Apply a mask change to one tensor in place, PruneFL's regrowth (§3.1 step 3).

    Entries pruned now (``old & ~new``) have their current value saved in ``stored``; entries
    regrown (``~old & new``) get back the value ``stored`` holds for them, i.e. the value they
    had when they were last pruned; every pruned entry of ``param`` is then 0. ``param``,
    ``stored`` (same shape and dtype) and the bool masks ``old``/``new`` share a shape.
    """
    old, new = old.bool().to(param.device), new.bool().to(param.device)
    dropped, regrown = old & ~new, ~old & new
    stored[dropped] = param[dropped]
    param[regrown] = stored[regrown]
    param[~new] = 0


def reconfigure_network(
    net, masks: Mapping[str, Tensor], importance: Mapping[str, Tensor],
    times: Mapping[str, float], stored: Mapping[str, Tensor], dtp: float, round_overhead_s: float,
) -> dict[str, Tensor]:
    """One PruneFL reconfiguration of ``net`` (an ``nn.Module``) under ``masks`` (bool per
    prunable tensor), in place (ALGORITHMS.md §3.1 step 3).

    ``importance``: z per parameter name (tensors missing from it count as 0); ``times``:
    seconds one parameter of each tensor costs per round (:func:`flip.metrics.time_model.
    parameter_times`); ``round_overhead_s``: T0. The tensors that are not in ``masks`` are
    always kept: their z and their time start the greedy search. Returns the new masks;
    :func:`swap_pruned` applies them to ``net``, regrown entries taking back their value from
    ``stored`` and newly pruned ones saving theirs there.
    """
    params = dict(net.named_parameters())
    fixed = [n for n in params if n not in masks]
    base_importance = sum(float(importance[n].sum()) for n in fixed if n in importance)
    base_time = round_overhead_s + sum(times[n] * params[n].numel() for n in fixed)
    zeros = {n: torch.zeros_like(params[n]) for n in masks if n not in importance}
    new = reconfigure(
        {n: params[n] for n in masks},
        masks,
        {**importance, **zeros},
        times,
        dtp,
        base_importance,
        base_time,
    )
    for n, m in new.items():
        swap_pruned(params[n].data, stored[n], masks[n], m)
    return new
