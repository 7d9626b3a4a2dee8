"""The LEAF models: NextCharLSTM and the FEMNIST CNN — shapes, FLOPs (fvcore with flip's LSTM
handle, against hand counts and torch's FlopCounterMode) and AutoFLIP's hybrid masks."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from flip.metrics import effective_flops, profile_flops
from flip.models import NextCharLSTM, femnist_cnn, init_weights
from flip.pruning import guidance_matrix, hybrid_mask, prunable_names

# NextCharLSTM per sample: 80 steps; layer 1 has I = 8, layer 2 I = 256, H = 256; each step
# costs 4·H·(I + H) multiply-adds per layer; the output layer 256·80 once.
LSTM_FLOPS = 80 * (4 * 256 * (8 + 256) + 4 * 256 * (256 + 256))
FC_FLOPS = 256 * 80
# FEMNIST CNN (hidden 64, 28×28): 28 → conv 26 → pool 14 → conv 12 → pool 7; FC 2048.
FEMNIST = {
    "features.0": 26 * 26 * 64 * (5 * 5 * 1),
    "features.3": 12 * 12 * 128 * (5 * 5 * 64),
    "classifier.2": (128 * 7 * 7) * 2048,
    "classifier.4": 2048 * 62,
}


def chars(batch: int = 1) -> torch.Tensor:
    return torch.randint(0, 80, (batch, 80))


def test_next_char_lstm_shapes_and_size():
    net = NextCharLSTM()
    assert net(chars(5)).shape == (5, 80)
    assert net.embedding.weight.shape == (80, 8)
    assert (net.lstm.input_size, net.lstm.hidden_size, net.lstm.num_layers) == (8, 256, 2)
    assert net.lstm.batch_first and net.fc.weight.shape == (80, 256)
    # embedding 80·8, LSTM layers 4H(I + H + 2) each (two bias vectors), fc 256·80 + 80
    params = 80 * 8 + 4 * 256 * (8 + 256 + 2) + 4 * 256 * (256 + 256 + 2) + 256 * 80 + 80
    assert sum(p.numel() for p in net.parameters()) == params == 819_920


def test_next_char_lstm_uses_the_last_step():
    torch.manual_seed(0)
    net = NextCharLSTM().eval()
    x = chars(2)
    out, _ = net.lstm(net.embedding(x))
    assert torch.allclose(net(x), net.fc(out[:, -1]))


def test_lstm_flops_hand_count():
    prof = profile_flops(NextCharLSTM(), torch.zeros(1, 80, dtype=torch.long))
    assert prof.by_layer == {"embedding": 0, "lstm": LSTM_FLOPS, "fc": FC_FLOPS}
    assert prof.total == LSTM_FLOPS + FC_FLOPS == 63_590_400 and prof.other == 0


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_layers": 1, "bidirectional": True},
        {"num_layers": 2, "proj_size": 32},
    ],
    ids=["2-layer", "bidirectional", "projection"],
)
def test_lstm_flops_match_torch_flop_counter(kwargs):
    """torch's FlopCounterMode counts 2 FLOPs per multiply-add. On CPU it sees nothing of an
    LSTM run by oneDNN (aten.mkldnn_rnn_layer is not counted), so oneDNN is switched off for
    the cross-check; the native kernel is made of matrix products it counts."""
    lstm = nn.LSTM(8, 64, batch_first=True, **kwargs).eval()
    x = torch.zeros(3, 17, 8)
    prof = profile_flops(nn.Sequential(lstm), x[:1])
    with torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            lstm(x[:1])
    assert prof.total > 0 and 2 * prof.total == counter.get_total_flops()


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_torch_flop_counter_misses_onednn_lstms():
    """Why flip registers its own handle (and why the cross-check above turns oneDNN off)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    lstm = nn.LSTM(8, 64, batch_first=True).eval()
    with torch.backends.mkldnn.flags(enabled=True), torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            lstm(torch.zeros(1, 17, 8))
    assert counter.get_total_flops() == 0


def test_effective_flops_of_a_masked_lstm():
    net = NextCharLSTM()
    prof = profile_flops(net, torch.zeros(1, 80, dtype=torch.long))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    masks["lstm.weight_hh_l1"][:512] = False  # half of one of four LSTM weight matrices
    kept = 1 - (512 * 256) / (1024 * (8 + 256 + 256 + 256))
    assert effective_flops(prof, masks, net) == pytest.approx(LSTM_FLOPS * kept + FC_FLOPS)
    masks["fc.weight"][:40] = False
    assert effective_flops(prof, masks, net) == pytest.approx(
        LSTM_FLOPS * kept + FC_FLOPS / 2
    )


def test_femnist_cnn_shapes_and_flops():
    net = femnist_cnn()
    assert net(torch.zeros(4, 1, 28, 28)).shape == (4, 62)
    assert net.classifier[2].out_features == 2048
    prof = profile_flops(net, (1, 28, 28))
    assert prof.by_layer == FEMNIST
    assert prof.other == 128 * 7 * 7  # adaptive average pool on a 7×7 input
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * sum(FEMNIST.values())


def test_hybrid_mask_on_the_lstm():
    """Unstructured pruning reaches the embedding, LSTM and output weights; structured removal
    traces the LSTM model without error and removes no unit of the output layer."""
    torch.manual_seed(0)
    net = init_weights(NextCharLSTM(), "xavier_normal")
    guidance = guidance_matrix({n: torch.rand_like(p) for n, p in net.named_parameters()})
    names = prunable_names(net)
    assert names == ["embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                     "lstm.weight_ih_l1", "lstm.weight_hh_l1", "fc.weight"]
    example = torch.zeros(1, 80, dtype=torch.long)
    masks, tau = hybrid_mask(net, guidance, 0.3, example, structured=True)
    unstructured, tau2 = hybrid_mask(net, guidance, 0.3, example, structured=False)
    assert tau == tau2
    total = sum(masks[n].numel() for n in names)
    pruned = sum(int((~masks[n]).sum()) for n in names)
    assert pruned == int(0.3 * total)  # exactly k = ⌊Tp·N⌋ entries (no ties in random G)
    for n in names:
        assert torch.equal(masks[n], guidance[n] > tau)  # every tensor takes part
        assert 0.6 < masks[n].float().mean() < 0.8
    assert all(torch.equal(masks[n], unstructured[n]) for n in masks)
    assert masks["fc.weight"].any(dim=1).all()  # every output unit keeps weights
    assert all(masks[n].all() for n in masks if "bias" in n)
    assert net(chars(2)).shape == (2, 80)  # tracing left the model usable
