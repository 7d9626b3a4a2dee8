"""engine=flower's Messages (flip/engines/flower/codec.py): a job and an update survive Flower's
protobuf encoding bit for bit, masks of any size survive bit packing, and a ClientApp rebuilds
compact networks and EFLPrune sub-models from the removal chain that compact() records."""

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Message  # noqa: E402

from flip.engines.flower.codec import (  # noqa: E402
    TRAIN,
    decode_update,
    encode_masks,
    encode_state,
    encode_update,
    parse_train_request,
    train_request,
)
from flip.engines.flower.direct_grid import DirectGrid, wire  # noqa: E402
from flip.federation import CallbackSpec, ClientJob, ClientUpdate  # noqa: E402
from flip.models import TwoCNN  # noqa: E402
from flip.pruning import compact, extract_submodel, removal_chain  # noqa: E402


@pytest.fixture
def request_message():
    """A message as the server pushes it (Flower needs the process's task identity)."""
    DirectGrid(None, 1, {})

    def make(content):
        msg = Message(content, dst_node_id=1, message_type=TRAIN)
        msg.metadata.__dict__["_message_id"] = "m1"
        return msg

    return make


def test_job_state_and_masks_round_trip(request_message):
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(7, generator=g).double(),
             "n": torch.tensor(12), "flag": torch.rand(3, generator=g) > 0.5}
    masks = {"w": torch.rand(5, 3, generator=g) > 0.3, "b": torch.rand(7, generator=g) > 0.5}
    job = ClientJob(4, 987654321, 3, 3.0e-4,
                    (CallbackSpec("early_stopping", {"patience": 2}),
                     CallbackSpec("gradient_sum")), batches=10)
    removals = [{"conv1": [0, 3]}, {"fc": [1]}]
    msg = request_message(train_request(encode_state(state), encode_masks(masks), job,
                                        removals))
    got_state, got_masks, got_job, got_removals = parse_train_request(wire(msg).content)
    assert got_job == job and got_removals == removals
    for name, t in state.items():
        assert got_state[name].dtype == t.dtype and torch.equal(got_state[name], t)
    for name, m in masks.items():  # 15 and 7 entries: not multiples of 8
        assert got_masks[name].dtype == torch.bool and torch.equal(got_masks[name], m)
    none = request_message(train_request(encode_state(state), None,
                                         ClientJob(0, 1, 1, 0.1), []))
    _, no_masks, plain, _ = parse_train_request(wire(none).content)
    assert no_masks is None and plain.batches is None and plain.callbacks == ()


def test_update_round_trip_with_extras(request_message):
    g = torch.Generator().manual_seed(1)
    update = ClientUpdate(
        client=3, params={"w": torch.randn(4, 2, generator=g)},
        buffers={"bn.running_mean": torch.randn(2, generator=g), "bn.n": torch.tensor(5)},
        num_samples=120, samples_processed=360, epoch_losses=[2.3025850929940455, 1 / 3],
        extras={"grad_sum": {"w": torch.randn(4, 2, generator=g)}, "grad_steps": 9,
                "masks": {"w": torch.tensor([[True, False]] * 4)}, "flops": 1.25e9},
        extra_bytes_up=32,
    )
    reply = Message(encode_update(update), reply_to=request_message(encode_update(update)))
    got = decode_update(wire(reply).content)
    assert (got.client, got.num_samples, got.samples_processed, got.extra_bytes_up) == \
        (3, 120, 360, 32)
    assert got.epoch_losses == update.epoch_losses  # doubles, exactly
    assert got.extras["grad_steps"] == 9 and got.extras["flops"] == 1.25e9
    assert torch.equal(got.extras["grad_sum"]["w"], update.extras["grad_sum"]["w"])
    assert got.extras["masks"]["w"].dtype == torch.bool
    for name in update.buffers:
        assert torch.equal(got.buffers[name], update.buffers[name])
    with pytest.raises(TypeError, match="extras"):
        encode_update(ClientUpdate(0, {}, {}, 1, 1, [0.0], extras={"bad": object()}))


def test_removal_chain_rebuilds_compact_networks_and_submodels():
    torch.manual_seed(0)
    net, example = TwoCNN(1, 10, 8), torch.zeros(1, 1, 28, 28)
    assert removal_chain(net) == []
    small, _ = compact(net, {"features.0": [1, 4], "classifier.2": []}, example)
    sub, _, removed = extract_submodel(small, 0.5, example)
    assert removal_chain(small) == [{"features.0": [1, 4]}]
    assert removal_chain(sub) == [{"features.0": [1, 4]}, {k: v for k, v in removed.items() if v}]
    rebuilt = TwoCNN(1, 10, 8)  # another process: the constructor, then the chain replayed
    for removal in removal_chain(sub):
        rebuilt, _ = compact(rebuilt, removal, example)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in sub.state_dict().items()}
    rebuilt.load_state_dict(sub.state_dict())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(rebuilt(x), sub(x))
