"""The devices and the simulated clock (ASYNC.md §1): presets, noise, the FIFO server link,
hand-computed two-client timelines (a synchronous round and the asynchronous engine), and
`sim/time_s` on synchronous runs."""

import math

import numpy as np
import pytest
from async_helpers import tiny_run

from flip.algorithms import FedAsync, FedAvg
from flip.devices import Clock, CycleWork, build_devices
from flip.errors import ConfigError
from flip.metrics.costs import profile_flops, training_flops
from flip.metrics.time_model import parameter_times
from flip.models import TwoCNN
from flip.params import AsyncParams
from flip.pruning import prunable_names

MB = 1e6


def two_clients(down_s, up_s, compute_s, server_up_s, server_down_s, nbytes=4 * MB,
                flops=1e9) -> dict:
    """A devices node on which ``nbytes`` take ``down_s[k]``/``up_s[k]`` seconds on client
    k's links, ``server_up_s``/``server_down_s`` on the server's, and ``flops`` take
    ``compute_s[k]`` seconds; no noise."""
    return {
        "download_MBps": [nbytes / MB / s for s in down_s],
        "upload_MBps": [nbytes / MB / s for s in up_s],
        "flops_per_s": [flops / s for s in compute_s],
        "server_up_MBps": nbytes / MB / server_up_s,
        "server_down_MBps": nbytes / MB / server_down_s,
        "noise_client": 0.0, "noise_server": 0.0,
    }


def test_synchronous_round_of_two_clients_hand_computed():
    """Model 4 MB both ways. Client 0: 2 s down, 2 s compute, 2 s up; client 1: 1 s down,
    1 s compute, 4 s up. The server sends one model in 4 s and receives one in 1 s, FIFO.
    Downloads requested at 0: client 0 holds the server link [0, 4] → done at 4; client 1
    waits, [4, 8] → 8. Client 0 trains to 6, uploads [6, 7] on the server but 2 s on its own
    link → 8; client 1 trains to 9, uploads [9, 10] / 4 s → 13. The round takes 13 s."""
    devices = build_devices(two_clients([2, 1], [2, 4], [2, 1], 4, 1), 2)
    clock = Clock(devices, seed=0)
    work = [CycleWork(0, 4_000_000, 1e9, 4_000_000), CycleWork(1, 4_000_000, 1e9, 4_000_000)]
    assert clock.round_time(0.0, (1, 0), work) == pytest.approx(13.0, rel=1e-12)
    # the next round starts at 13 with both links free: the same 13 s again
    assert clock.round_time(13.0, (2, 0), work) == pytest.approx(13.0, rel=1e-12)
    # without the server bottleneck each client only waits for its own links: max(6, 6) = 6
    free = build_devices({**two_clients([2, 1], [2, 4], [2, 1], 4, 1),
                          "server_up_MBps": None, "server_down_MBps": None}, 2)  # the preset's
    assert free.server_up_MBps is None
    assert Clock(free, 0).round_time(0.0, (1, 0), work[:1]) == pytest.approx(6.0)


def test_asynchronous_timeline_of_two_clients_hand_computed(tmp_path):
    """FedAsync on two real clients (TwoCNN, 2 local steps of 16 samples); the devices make
    the model's S bytes and an update's FLOPs F take: client 0 2 s down, 2 s compute, 2 s up;
    client 1 1 s, 1 s, 4 s; the server 4 s to send, 1 s to receive, FIFO.
    0: both request; client 0 gets [0, 4], client 1 [4, 8]. Client 0: computes to 6, uploads
    [6, 7] / own 2 s → arrives 8 = aggregation 1; it starts again at 8: server link [8, 12]
    → 12, computes to 14, uploads → 16. Client 1: computes to 9, uploads → 13 = aggregation
    2; starts again at 13: server [13, 17], computes to 18, uploads [18, 19] / own 4 s → 22.
    Aggregation 3 at 16 (client 0), 4 at 22 (client 1)."""
    net = TwoCNN(1, 10, 4)
    nbytes = 4 * sum(p.numel() for p in net.parameters())
    flops = training_flops(profile_flops(net, (1, 28, 28)).total, 32)
    devices = two_clients([2, 1], [2, 4], [2, 1], 4, 1, nbytes=nbytes, flops=flops)
    fed = tiny_run(tmp_path, FedAsync(alpha=0.5), num_clients=2, rounds=4, devices=devices,
                   asynchronous=AsyncParams(max_aggregations=4))
    fed.fit()
    rows = fed.history
    assert [r["sim/time_s"] for r in rows] == pytest.approx([8, 13, 16, 22], rel=1e-9)
    assert [r["clients/arrived"] for r in rows] == [1, 1, 1, 1]
    assert [r["clients/sampled"] for r in rows] == [2, 1, 1, 1]  # downloads since the last
    assert fed.participation == [2, 2]
    assert rows[0]["cost/bytes_down_round"] == 2 * nbytes
    assert rows[0]["cost/bytes_up_round"] == nbytes


def test_residual_pieces_cross_the_server_link_once_hand_computed():
    """Pieces of 4 MB and 2 MB through a 2 MB/s server link; both clients receive 4 MB/s.
    Client 0 needs piece 1: it crosses [0, 2] → done at 2; client 1 needs both: piece 2
    crosses [2, 3] → 3. Sent one model each instead, client 1's 6 MB would wait: [2, 5] → 5."""
    devices = build_devices({"download_MBps": 4.0, "server_up_MBps": 2.0}, 2)
    ends = Clock(devices, 0).multicast(0.0, [4_000_000, 2_000_000], {0: 1, 1: 2},
                                       {0: (1,), 1: (1,)}, window=0)
    assert ends == {0: pytest.approx(2.0), 1: pytest.approx(3.0)}
    clock = Clock(devices, 0)
    alone = [clock.download(0.0, 0, (1,), 4_000_000), clock.download(0.0, 1, (1,), 6_000_000)]
    assert alone == [pytest.approx(2.0), pytest.approx(5.0)]


def test_noise_is_seeded_per_transfer_and_zero_sigma_is_exact():
    prfl = build_devices({"preset": "prfl10"}, 10)
    a, b = Clock(prfl, seed=3), Clock(prfl, seed=3)
    assert a.factors(2, (5,), 0) == b.factors(2, (5,), 0)  # same keys, same draws
    assert a.factors(2, (5,), 0) != a.factors(2, (6,), 0) != a.factors(3, (5,), 0)
    assert a.factors(2, (5,), 0) != Clock(prfl, seed=4).factors(2, (5,), 0)
    rng = np.random.default_rng([3, 12001, 3, 5, 0])  # the mean of 20 LogNormal(0, σ) draws
    client = rng.lognormal(0, 0.3, 20).mean()
    server = rng.lognormal(0, 0.1, 20).mean()
    assert a.factors(2, (5,), 0) == (client, server)
    quiet = build_devices({"preset": "prfl10", "noise_client": 0, "noise_server": 0}, 10)
    assert Clock(quiet, 3).factors(2, (5,), 0) == (1.0, 1.0)
    # a 6 MB download by client 0 (20 MB/s) through an idle 10 MB/s server link: 0.6 s
    assert Clock(quiet, 3).download(1.0, 0, (1,), 6_000_000) == pytest.approx(1.6)


def test_presets_cycle_and_bad_input_names_the_field():
    prfl = build_devices({"preset": "prfl10"}, 12)
    assert [d.download_MBps for d in prfl.profiles] == [20, 18, 12, 10, 6, 4, 2.5, 2, 2, 1.5,
                                                        20, 18]
    assert prfl.profiles[9].upload_MBps == 0.4 and prfl.server_up_MBps == 10
    assert prfl.server_down_MBps == 50 and (prfl.noise_client, prfl.noise_server) == (0.3, 0.1)
    mine = build_devices({"preset": "prfl10", "upload_MBps": [1, 2, 3]}, 3)
    assert [d.upload_MBps for d in mine.profiles] == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"devices\.preset='phones'.*prfl10"):
        build_devices({"preset": "phones"}, 10)
    with pytest.raises(ConfigError, match=r"devices\.download_MBps.*K=4 values"):
        build_devices({"preset": "prfl10", "download_MBps": [1, 2, 3]}, 4)
    with pytest.raises(ConfigError, match=r"devices\.flops_per_s"):
        build_devices({"flops_per_s": 0}, 2)
    with pytest.raises(ConfigError, match=r"devices\.noise_client"):
        build_devices({"noise_client": -1}, 2)
    with pytest.raises(ConfigError, match=r"devices\.bandwidth"):
        build_devices({"bandwidth": 3}, 2)


def test_prunefl_times_read_the_same_devices():
    """One profile for all: c = 4/down + 4/up + 3·(FLOPs per weight)·n/rate, the time model's
    own formula; different profiles: the mean over the clients."""
    net = TwoCNN(1, 10, 32)
    params = dict(net.named_parameters())
    flops = profile_flops(net, (1, 28, 28))
    one = parameter_times(flops, params, prunable_names(net), 100, 1, build_devices({}, 3))
    comm = 4 / 2.5e6 + 4 / 1.25e6
    assert one["features.0.weight"] == comm + 3 * 676 * 100 / 1e10
    tiers = build_devices({"preset": "tiers"}, 3)
    mixed = parameter_times(flops, params, prunable_names(net), 100, 1, tiers)
    each = [parameter_times(flops, params, prunable_names(net), 100, 1, d)["features.0.weight"]
            for d in tiers.profiles]
    assert mixed["features.0.weight"] == pytest.approx(sum(each) / 3)


def test_synchronous_rounds_report_simulated_time(tmp_path):
    """FedAvg on the default devices (no server bottleneck, no noise): each round takes the
    slowest client's S/2.5 MB/s + F/1e10 + S/1.25 MB/s, all clients training as much."""
    fed = tiny_run(tmp_path, FedAvg(), rounds=2, participation=0.5)
    fed.setup()
    rows = [fed.run_round(1), fed.run_round(2)]
    nbytes = 4 * sum(p.numel() for p in fed.net.parameters())
    flops = training_flops(fed.ledger.flops.total, 32)
    cycle = nbytes / 2.5e6 + flops / 1e10 + nbytes / 1.25e6
    assert rows[0]["sim/time_s"] == pytest.approx(cycle, rel=1e-12)
    assert rows[1]["sim/time_s"] == pytest.approx(2 * cycle, rel=1e-12)
    assert sum(fed.participation) == 4 and math.isclose(fed.sim_time, 2 * cycle)
