"""LSTM hidden units (ALGORITHMS.md §2.2): unit scores by hand, the masked dense NextCharLSTM vs
its physically compacted copy (forward, a training step, the dense ↔ compact round trip), the
compact model's fvcore FLOPs by hand, and the bad removals."""

import copy
import warnings

import pytest
import torch
from torch import nn

from flip.metrics.costs import profile_flops
from flip.models import NextCharLSTM
from flip.pruning import (
    CompactLSTM,
    apply_masks,
    gate_rows,
    lstm_consumers,
    lstm_unit_masks,
    lstm_unit_scores,
    prune_lstm_units,
)

T, B, VOCAB = 80, 4, 80


class TinyLSTM(nn.Module):
    def __init__(self, num_layers=1):
        super().__init__()
        self.lstm = nn.LSTM(2, 2, num_layers=num_layers)
        self.fc = nn.Linear(2, 3)


def test_unit_scores_by_hand():
    model = TinyLSTM()
    g_ih = torch.arange(16.0).reshape(8, 2) / 16  # row r holds (2r, 2r+1) / 16
    g_hh = torch.ones(8, 2)
    scores = lstm_unit_scores(model, {"lstm.weight_ih_l0": g_ih, "lstm.weight_hh_l0": g_hh})
    # unit 0 = rows 0, 2, 4, 6: ih sums (0+1 + 4+5 + 8+9 + 12+13)/16 = 52/16 = 3.25,
    # hh sums 4 rows × 2 ones = 8; mean over 4·(2 + 2) = 16 weights → 11.25/16 = 0.703125.
    # unit 1 = rows 1, 3, 5, 7: ih (2+3 + 6+7 + 10+11 + 14+15)/16 = 4.25 → 12.25/16 = 0.765625.
    assert list(scores) == ["lstm.l0"]
    assert scores["lstm.l0"].dtype == torch.float64
    assert scores["lstm.l0"].tolist() == [0.703125, 0.765625]


def test_unit_scores_second_layer_reads_the_first_layers_units():
    model = TinyLSTM(num_layers=2)
    guidance = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    guidance["lstm.weight_ih_l1"][5] = 1.0  # H = 2: row 5 = cell gate g of unit 1
    guidance["lstm.weight_hh_l1"][0, 1] = 1.0  # row 0 = input gate of unit 0
    scores = lstm_unit_scores(model, guidance)
    # layer 1 fan-in: I = 2 (layer 0's units) + H = 2 per gate row, 4 rows → 16 weights.
    # unit 1 has the two ones of row 5 → 2/16; unit 0 the one at (0, 1) → 1/16.
    assert scores["lstm.l1"].tolist() == [1 / 16, 2 / 16]
    assert scores["lstm.l0"].tolist() == [0.0, 0.0]


def test_bidirectional_lstm_is_refused():
    model = nn.Sequential(nn.LSTM(2, 2, bidirectional=True))
    guidance = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="unidirectional"):
        lstm_unit_scores(model, guidance)


def _removal(seed: int) -> dict[str, list[int]]:
    """Different random unit sets in layers 0 and 1 of NextCharLSTM (H = 256)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "lstm.l0": torch.randperm(256, generator=gen)[:100].tolist(),
        "lstm.l1": torch.randperm(256, generator=gen)[:37].tolist(),
    }


def _masked_and_compact(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    dense = NextCharLSTM().to(dtype)
    removal = _removal(seed)
    masks = lstm_unit_masks(dense, removal)
    apply_masks(dense, masks)
    compact = copy.deepcopy(dense)
    prune_lstm_units(compact, removal)
    return dense, compact, masks, removal


def _index_map(dense: nn.Module, removal) -> dict[str, torch.Tensor]:
    """For every parameter of the compacted model, the flat position in the dense parameter
    each entry came from (tag a float64 copy with positions, prune it, read them back)."""
    tagged = copy.deepcopy(dense).double()
    with torch.no_grad():
        for p in tagged.parameters():
            p.copy_(torch.arange(p.numel(), dtype=torch.float64).reshape(p.shape))
    prune_lstm_units(tagged, removal)
    return {n: p.detach().long() for n, p in tagged.named_parameters()}


def _scatter(compact: nn.Module, dense: nn.Module, index) -> dict[str, torch.Tensor]:
    """The compact tensors written back into the dense layout (zeros elsewhere)."""
    out = {}
    for n, p in dense.named_parameters():
        flat = torch.zeros(p.numel(), dtype=p.dtype)
        flat[index[n].flatten()] = compact.get_parameter(n).detach().flatten()
        out[n] = flat.reshape(p.shape)
    return out


def test_compact_shapes_and_state_dict_keys():
    dense, compact, _, removal = _masked_and_compact()
    h0, h1 = 256 - len(removal["lstm.l0"]), 256 - len(removal["lstm.l1"])
    assert isinstance(compact.lstm, CompactLSTM) and compact.lstm.hidden_sizes == (h0, h1)
    assert list(compact.state_dict()) == list(dense.state_dict())
    shapes = {n: tuple(p.shape) for n, p in compact.named_parameters()}
    assert shapes["lstm.weight_ih_l0"] == (4 * h0, 8)
    assert shapes["lstm.weight_hh_l0"] == (4 * h0, h0)
    assert shapes["lstm.weight_ih_l1"] == (4 * h1, h0)
    assert shapes["lstm.weight_hh_l1"] == (4 * h1, h1)
    assert shapes["lstm.bias_ih_l1"] == shapes["lstm.bias_hh_l1"] == (4 * h1,)
    assert shapes["fc.weight"] == (80, h1) and compact.fc.in_features == h1


def test_masked_dense_and_compact_give_the_same_logits():
    dense, compact, _, removal = _masked_and_compact()
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_dense, y_compact = dense(x), compact(x)
    assert y_compact.shape == (B, 80)
    torch.testing.assert_close(y_compact, y_dense, rtol=0, atol=1e-5)
    # the final states match the kept units of the dense LSTM's, layer by layer
    emb = dense.embedding(x)
    with torch.no_grad():
        _, (h_d, c_d) = dense.lstm(emb)
        _, (h_c, c_c) = compact.lstm(emb)
    for k, key in enumerate(("lstm.l0", "lstm.l1")):
        keep = torch.ones(256, dtype=torch.bool)
        keep[removal[key]] = False
        torch.testing.assert_close(h_c[k], h_d[k][:, keep], rtol=0, atol=1e-5)
        torch.testing.assert_close(c_c[k], c_d[k][:, keep], rtol=0, atol=1e-5)
        assert h_d[k][:, ~keep].abs().max() == 0 and c_d[k][:, ~keep].abs().max() == 0


def test_the_removal_changes_the_model():
    torch.manual_seed(0)
    full = NextCharLSTM()
    _, compact, _, _ = _masked_and_compact()
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (full(x) - compact(x)).abs().max() > 1e-3


def test_round_trip_dense_compact_dense_is_exact():
    dense, compact, masks, removal = _masked_and_compact()
    index = _index_map(dense, removal)
    # the compact model holds exactly the kept entries of the mask, each once
    for n, m in masks.items():
        assert sorted(index[n].flatten().tolist()) == torch.nonzero(m.flatten()).flatten().tolist()
    back = _scatter(compact, dense, index)
    for n, p in dense.named_parameters():
        assert torch.equal(back[n], p.detach()), n


def test_a_training_step_on_the_compact_model_equals_a_masked_dense_step():
    dense, compact, masks, removal = _masked_and_compact()
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, VOCAB, (B, T), generator=gen), torch.randint(0, 80, (B,), generator=gen)
    for model in (dense, compact):
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if model is dense:
                apply_masks(dense, masks)
    back = _scatter(compact, dense, _index_map(dense, removal))
    for n, p in dense.named_parameters():
        torch.testing.assert_close(back[n], p.detach(), rtol=0, atol=1e-5, msg=n)
    # the steps moved the weights (the comparison is not between two untouched models)
    _, start, _, _ = _masked_and_compact()
    assert (compact.lstm.weight_hh_l1 - start.lstm.weight_hh_l1).abs().max() > 1e-3


def test_compact_flops_equal_the_hand_count():
    _, compact, _, removal = _masked_and_compact()
    h0, h1 = 256 - len(removal["lstm.l0"]), 256 - len(removal["lstm.l1"])
    prof = profile_flops(compact, torch.zeros(1, T, dtype=torch.long))
    # per step and layer 4·H_k·(I_k + H_k); I_0 = 8 (embedding), I_1 = H_0; head 80·H_1
    lstm = T * (4 * h0 * (8 + h0) + 4 * h1 * (h0 + h1))
    assert prof.by_layer == {"embedding": 0, "lstm": lstm, "fc": 80 * h1}
    assert prof.total == lstm + 80 * h1


@pytest.mark.parametrize(("batch_first", "bias"), [(True, True), (False, True), (True, False)])
def test_compact_lstm_with_every_unit_is_nn_lstm(batch_first, bias):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=2, batch_first=batch_first, bias=bias)
    comp = CompactLSTM(3, [5, 5], batch_first=batch_first, bias=bias)
    comp.load_state_dict(ref.state_dict())
    x = torch.randn(4, 6, 3)
    for inp in (x, x[0]):  # batched and unbatched
        out_r, (h_r, c_r) = ref(inp)
        out_c, (h_c, c_c) = comp(inp)
        torch.testing.assert_close(out_c, out_r, rtol=0, atol=1e-6)
        for k in range(2):
            torch.testing.assert_close(h_c[k], h_r[k], rtol=0, atol=1e-6)
            torch.testing.assert_close(c_c[k], c_r[k], rtol=0, atol=1e-6)
    # a given initial state in the per-layer format is used as nn.LSTM's
    b = 4 if batch_first else 6
    h0, c0 = torch.randn(2, b, 5), torch.randn(2, b, 5)
    out_r, _ = ref(x, (h0, c0))
    out_c, _ = comp(x, (tuple(h0), tuple(c0)))
    torch.testing.assert_close(out_c, out_r, rtol=0, atol=1e-6)


def test_masks_zero_exactly_the_touched_slices():
    model = TinyLSTM(num_layers=2)
    masks = lstm_unit_masks(model, {"lstm.l0": [1], "lstm.l1": [0]})
    rows_l0, rows_l1 = gate_rows([1], 2).tolist(), gate_rows([0], 2).tolist()
    assert rows_l0 == [1, 3, 5, 7] and rows_l1 == [0, 2, 4, 6]
    expect = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        expect[f"lstm.{w}_l0"][rows_l0] = False
        expect[f"lstm.{w}_l1"][rows_l1] = False
    expect["lstm.weight_hh_l0"][:, 1] = False
    expect["lstm.weight_ih_l1"][:, 1] = False
    expect["lstm.weight_hh_l1"][:, 0] = False
    expect["fc.weight"][:, 0] = False
    assert masks.keys() == expect.keys()
    for n in masks:
        assert torch.equal(masks[n], expect[n]), n


@pytest.mark.parametrize(
    ("removal", "match"),
    [
        ({"lstm.l0": [0, 1]}, "cannot remove all"),
        ({"lstm.l2": [0]}, "unknown LSTM unit key"),
        ({"lstm.l0": [2]}, "must lie in"),
        ({"lstm.l0": [1, 1]}, "repeated"),
    ],
)
def test_bad_removals_raise(removal, match):
    model = TinyLSTM(num_layers=2)
    with pytest.raises(ValueError, match=match):
        lstm_unit_masks(model, removal)
    with pytest.raises(ValueError, match=match):
        prune_lstm_units(model, removal)
    assert isinstance(model.lstm, nn.LSTM)


def test_last_layer_removal_needs_a_linear_consumer():
    model = nn.Sequential(nn.LSTM(2, 4, num_layers=2), nn.ReLU())
    with pytest.raises(ValueError, match="consumer"):
        lstm_unit_masks(model, {"0.l1": [0]})
    with pytest.raises(ValueError, match="consumer"):
        prune_lstm_units(model, {"0.l1": [0]})
    prune_lstm_units(model, {"0.l0": [0, 3]})  # inner layers need no consumer
    assert model[0].hidden_sizes == (2, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN)")
def test_compact_lstm_runs_cudnn_without_copying_weights():
    dense, compact, _, _ = _masked_and_compact()
    dense, compact = dense.cuda(), compact.cuda()  # .cuda() flattens each layer for cuDNN
    for k in range(2):
        assert len({p.untyped_storage().data_ptr() for p in compact.lstm.layer_params(k)}) == 1
    x = torch.randint(0, VOCAB, (B, T), device="cuda")
    # TF32 off: the equality is about the pruning, not about cuDNN's reduced-precision math
    with warnings.catch_warnings(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        warnings.simplefilter("error")  # cuDNN warns when it has to copy unflattened weights
        with torch.no_grad():
            torch.testing.assert_close(compact(x), dense(x), rtol=0, atol=1e-5)


class TwoHeads(nn.Module):
    """An LSTM whose output two Linears read (the last step and the time mean), registered in
    an order the registration rule cannot follow (the heads come before the LSTM)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 2), nn.Linear(6, 3)
        self.emb = nn.Embedding(5, 3)
        self.lstm = nn.LSTM(3, 6, num_layers=2)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return torch.cat([self.a(out[-1]), self.b(out.mean(0))], dim=1)


def test_consumers_are_traced_by_torch_pruning_with_an_example_input():
    x = torch.randint(0, 5, (7, 2), generator=torch.Generator().manual_seed(0))
    assert lstm_consumers(NextCharLSTM(), "lstm") == ["fc"]
    assert lstm_consumers(NextCharLSTM(), "lstm", torch.zeros(1, T, dtype=torch.long)) == ["fc"]
    torch.manual_seed(0)
    dense = TwoHeads()
    removal = {"lstm.l0": [1, 4], "lstm.l1": [0, 2, 5]}
    with pytest.raises(ValueError, match="consumer"):  # the rule alone cannot find them
        lstm_unit_masks(dense, removal)
    assert sorted(lstm_consumers(dense, "lstm", x)) == ["a", "b"]
    masks = lstm_unit_masks(dense, removal, example_input=x)
    for head in ("a", "b"):
        assert not masks[f"{head}.weight"][:, [0, 2, 5]].any()
        assert masks[f"{head}.weight"][:, [1, 3, 4]].all()
    apply_masks(dense, masks)
    compact = copy.deepcopy(dense)
    prune_lstm_units(compact, removal, example_input=x)
    assert compact.a.weight.shape == (2, 3) and compact.b.weight.shape == (3, 3)
    with torch.no_grad():
        torch.testing.assert_close(compact(x), dense(x), rtol=0, atol=1e-6)
