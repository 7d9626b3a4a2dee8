"""LEAF JSON (flip/data/leaf.py) and the natural-partition LeafDataModule (DATA.md "LEAF JSON")."""

from __future__ import annotations

import csv
import json
import logging
import random

import numpy as np
import pytest
import torch
from fixtures_leaf import (
    TEXTS,
    shakespeare_windows,
    write_tiny_femnist,
    write_tiny_shakespeare,
)

from flip.data import (
    SHAKESPEARE_VOCAB,
    LeafDataModule,
    LeafSet,
    read_leaf_dir,
    read_leaf_json,
    remove_users,
    sample_niid,
    split_by_sample,
    split_by_user,
    write_leaf_json,
)
from flip.errors import ConfigError, DataNotFoundError


def leafset(sizes: dict[str, int]) -> LeafSet:
    """Users with ``sizes[u]`` samples; sample i of user u is x = f"{u}:{i}", y = i."""
    data = {u: {"x": [f"{u}:{i}" for i in range(n)], "y": list(range(n))} for u, n in sizes.items()}
    return LeafSet(list(sizes), data, files=dict.fromkeys(sizes, "f.json"))


# ------------------------------------------------------------------------------ JSON round trip
def test_leaf_json_round_trip_in_the_real_format(tmp_path):
    x, y = shakespeare_windows(TEXTS["HAMLET_HAMLET"][1])
    leaf = LeafSet(
        ["A_ROLE", "B_ROLE"],
        {"A_ROLE": {"x": x[:3], "y": y[:3]}, "B_ROLE": {"x": x[5:6], "y": y[5:6]}},
        {"A_ROLE": "PLAY ONE", "B_ROLE": "PLAY TWO"},
    )
    path = write_leaf_json(tmp_path / "all_data" / "all_data.json", leaf)
    doc = json.loads(path.read_text())
    assert list(doc) == ["users", "hierarchies", "num_samples", "user_data"]
    assert doc["users"] == ["A_ROLE", "B_ROLE"] and doc["num_samples"] == [3, 1]
    assert doc["hierarchies"] == ["PLAY ONE", "PLAY TWO"]
    assert doc["user_data"]["A_ROLE"]["x"][0] == x[0] and len(x[0]) == 80
    back = read_leaf_json(path)
    assert back.users == leaf.users and back.data == leaf.data
    assert back.hierarchies == leaf.hierarchies and back.files["A_ROLE"] == str(path)
    assert not list(path.parent.glob("*.tmp"))


def test_read_dir_merges_files_in_name_order(tmp_path):
    root = write_tiny_femnist(tmp_path, sizes=(2, 3, 4), files=2)
    leaf = read_leaf_dir(root / "all_data")
    # users 0 and 2 in all_data_0.json, user 1 in all_data_1.json
    assert leaf.users == ["f_0000", "f_0002", "f_0001"]
    assert [leaf.num_samples(u) for u in leaf.users] == [2, 4, 3] and leaf.total() == 9
    assert leaf.files["f_0001"].endswith("all_data_1.json") and leaf.hierarchies == {}


def test_unlisted_user_data_is_ignored(tmp_path):
    """LEAF's split_data.py leaves empty user_data entries for users it dropped."""
    doc = {"users": ["a"], "num_samples": [1],
           "user_data": {"a": {"x": [[0.5]], "y": [1]}, "dropped": {"x": [], "y": []}}}
    (tmp_path / "f.json").write_text(json.dumps(doc))
    assert read_leaf_json(tmp_path / "f.json").users == ["a"]


# ------------------------------------------------------------------------------ reader errors
def test_truncated_file_is_named(tmp_path):
    root = write_tiny_femnist(tmp_path, files=1)
    path = root / "all_data" / "all_data_0.json"
    path.write_text(path.read_text()[:5000])  # a download cut short
    with pytest.raises(DataNotFoundError, match=r"all_data_0\.json.*not valid JSON"):
        read_leaf_dir(root / "all_data")


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"users": ["u1"], "user_data": {"u1": {"x": [], "y": []}}}, r"user 'u1' has no samples"),
        ({"users": ["u1"], "num_samples": [3], "user_data": {"u1": {"x": [[0.0]], "y": [2]}}},
         r"'u1': \"num_samples\" says 3, \"y\" has 1"),
        ({"users": ["u1"], "user_data": {"u1": {"x": [[0.0], [1.0]], "y": [2]}}},
         r"'u1' has 2 inputs \"x\" but 1 labels"),
        ({"users": ["u1"], "user_data": {}}, r"user 'u1' has no \"x\" and \"y\" lists"),
        ({"users": ["u1", "u1"], "user_data": {"u1": {"x": [[0.0]], "y": [2]}}},
         r"'u1' is listed twice"),
        ({"user_data": {}}, r'expected an object with "users" and "user_data"'),
    ],
)
def test_bad_files_name_the_file_and_the_user(tmp_path, doc, message):
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DataNotFoundError, match=message) as err:
        read_leaf_json(tmp_path / "bad.json")
    assert "bad.json" in str(err.value)


def test_user_in_two_files(tmp_path):
    doc = {"users": ["u1"], "user_data": {"u1": {"x": [[0.0]], "y": [2]}}}
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(doc))
    with pytest.raises(DataNotFoundError, match=r"b\.json: user 'u1' is also in .*a\.json"):
        read_leaf_dir(tmp_path)


def test_empty_directory(tmp_path):
    with pytest.raises(DataNotFoundError, match="no LEAF JSON files"):
        read_leaf_dir(tmp_path)


# ------------------------------------------------------------------------------ LEAF's pipeline
def test_niid_sampling_takes_whole_users_then_cuts_the_last():
    leaf = leafset({"a": 10, "b": 20, "c": 30, "d": 40})
    out = sample_niid(leaf, 0.25, random.Random(3))  # int(0.25 · 100) = 25 samples
    assert out.total() == 25
    order = ["a", "b", "c", "d"]
    random.Random(3).shuffle(order)  # LEAF shuffles the users, then takes them in that order
    assert out.users == order[: len(out.users)]
    *whole, last = out.users
    assert all(out.data[u] == leaf.data[u] for u in whole)
    n = out.num_samples(last)  # the last user keeps its first n samples, in order
    assert 0 < n <= leaf.num_samples(last) and out.data[last]["y"] == list(range(n))
    assert sample_niid(leaf, 1.0, random.Random(0)) is leaf
    with pytest.raises(ConfigError, match="data.fraction"):
        sample_niid(leaf, 0.0, random.Random(0))


def test_niid_sampling_is_per_file():
    leaf = leafset({"a": 10, "b": 10, "c": 100, "d": 100})
    leaf.files.update({"c": "g.json", "d": "g.json"})
    out = sample_niid(leaf, 0.5, random.Random(0))
    by_file = {f: sum(out.num_samples(u) for u in out.users if leaf.files[u] == f)
               for f in ("f.json", "g.json")}
    assert by_file == {"f.json": 10, "g.json": 100}


def test_remove_users_keeps_more_than_min_samples():
    """LEAF's remove_users.py keeps num_samples > k (its help text says "less than")."""
    leaf = leafset({"a": 9, "b": 10, "c": 11})
    assert remove_users(leaf, 10).users == ["c"]
    assert remove_users(leaf, 0).users == ["a", "b", "c"]


def test_sample_split_random():
    leaf = leafset({"one": 1, "two": 2, "ten": 10, "many": 101})
    train, test = split_by_sample(leaf, 0.9, random.Random(0))
    assert train.users == test.users == ["two", "ten", "many"]  # n < 2 is dropped
    # n_train = max(1, int(0.9 n)), 1 when n = 2
    assert [train.num_samples(u) for u in train.users] == [1, 9, 90]
    assert [test.num_samples(u) for u in test.users] == [1, 1, 11]
    for u in train.users:
        tr, te = train.data[u]["y"], test.data[u]["y"]
        assert tr == sorted(tr) and te == sorted(te)  # original order kept
        assert sorted(tr + te) == list(range(leaf.num_samples(u)))


def test_sample_split_sequential_is_leafs_shakespeare_rule():
    leaf = leafset({"long": 1000, "short": 500})
    train, test = split_by_sample(leaf, 0.9, random.Random(0), sequential=True)
    # long: 900 training windows 0..899; the test windows start at 900 + 80 - 1 = 979
    assert train.users == ["long"]  # short: 450 train, test would start at 529 > 499
    assert train.data["long"]["y"] == list(range(900))
    assert test.data["long"]["y"] == list(range(979, 1000))


def test_user_split():
    leaf = leafset({f"u{i}": 3 for i in range(10)})
    train, test = split_by_user(leaf, 0.7, random.Random(1))
    assert len(train.users) == 7 and len(test.users) == 3
    assert sorted(train.users + test.users) == sorted(leaf.users)
    assert train.users == [u for u in leaf.users if u in train.users]


# ------------------------------------------------------------------------------ data module
def femnist_dm(root, **kw) -> LeafDataModule:
    args = dict(name="femnist", root=str(root), num_clients=20, batch_size=4,
                eval_batch_size=8, seed=0)
    args.update(kw)
    return LeafDataModule(**args)


def test_natural_partition_on_tiny_femnist(tmp_path, caplog):
    root = write_tiny_femnist(tmp_path, sizes=(12, 7, 20, 1))
    dm = femnist_dm(root)
    assert dm.num_clients == 20 and dm.num_classes == 62 and dm.input_shape == (1, 28, 28)
    with caplog.at_level(logging.WARNING, logger="flip.data.leaf_datamodule"):
        dm.setup()
    assert "federation.num_clients=20 replaced by K=3" in caplog.text
    # users f_0000, f_0002 (file 0), f_0001 (file 1); f_0003 has 1 sample: dropped by the split
    assert dm.users == ["f_0000", "f_0002", "f_0001"] and dm.num_clients == 3
    assert [dm.client_num_train(k) for k in range(3)] == [10, 18, 6]  # int(0.9 n)
    assert [dm.client_num_test(k) for k in range(3)] == [2, 2, 1]
    user_of = {0: 0, 1: 2, 2: 1}
    for k in range(3):
        seen = []
        for loader in (dm.client_train_dataloader(k, seed=5), dm.client_test_dataloader(k)):
            for x, y in loader:
                assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
                assert torch.all(x == x[:, :, :1, :1])  # constant images
                codes = torch.round(x[:, 0, 0, 0] * 1e4).long() - 100 * user_of[k]
                assert torch.equal(y, (user_of[k] + codes) % 62)
                seen += codes.tolist()
        assert sorted(seen) == list(range([12, 20, 7][k]))  # train + test = the user's data
    xs = torch.cat([x for x, _ in dm.test_dataloader()])
    assert len(xs) == 5  # global test = union of the users' test samples
    assert dm.class_histogram().sum() == 12 + 20 + 7
    assert dm.example_input(3).shape == (3, 1, 28, 28)
    assert dm.model_kwargs() == {"in_channels": 1, "num_classes": 62}


def test_train_order_is_seeded(tmp_path):
    dm = femnist_dm(write_tiny_femnist(tmp_path))
    dm.setup()
    order = [torch.cat([x[:, 0, 0, 0] for x, _ in dm.client_train_dataloader(2, s)])
             for s in (1, 1, 2)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])


def test_save_partition_files(tmp_path):
    dm = femnist_dm(write_tiny_femnist(tmp_path, sizes=(12, 7, 20)))
    dm.setup()
    dm.save_partition(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert doc["partition"] == "natural" and doc["dataset"] == "femnist"
    assert [c["user"] for c in doc["clients"]] == ["f_0000", "f_0002", "f_0001"]
    assert [c["train_range"] for c in doc["clients"]] == [[0, 10], [10, 28], [28, 34]]
    assert [c["test_range"] for c in doc["clients"]] == [[0, 2], [2, 4], [4, 5]]
    with open(tmp_path / "run" / "class_histogram.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["n_train"]) for r in rows] == [10, 18, 6]
    assert [sum(int(r[f"class_{c}"]) for c in range(62)) for r in rows] == [12, 20, 7]
    assert (tmp_path / "run" / "class_histogram.png").stat().st_size > 0


def test_sampling_options_reach_the_clients(tmp_path):
    root = write_tiny_femnist(tmp_path, sizes=(12, 7, 20, 30), files=1)
    dm = femnist_dm(root, fraction=0.5, min_samples=10, sample_seed=4)
    dm.setup()
    leaf = remove_users(sample_niid(read_leaf_dir(root / "all_data"), 0.5, random.Random(4)), 10)
    assert dm.users == leaf.users
    total = sum(dm.client_num_train(k) + dm.client_num_test(k) for k in range(dm.num_clients))
    assert total == leaf.total() <= int(0.5 * 69)


def test_user_split_evaluates_on_held_out_users(tmp_path):
    root = write_tiny_femnist(tmp_path, sizes=(10,) * 10, files=1)
    dm = femnist_dm(root, split="user", train_fraction=0.8, split_seed=0)
    dm.setup()
    assert dm.num_clients == 8
    # the clients' local test sets: LEAF's sample rule on their own data, int(0.8 · 10) = 8
    assert all((dm.client_num_train(k), dm.client_num_test(k)) == (8, 2) for k in range(8))
    codes = torch.cat([torch.round(x[:, 0, 0, 0] * 1e4).long() for x, _ in dm.test_dataloader()])
    held = set((codes // 100).tolist())
    assert len(codes) == 20 and len(held) == 2  # all samples of the two held-out users
    assert not held & {int(u[2:]) for u in dm.users}


def test_leafs_own_split_directories(tmp_path):
    root = write_tiny_femnist(tmp_path / "src", sizes=(12, 7), files=1)
    leaf = read_leaf_dir(root / "all_data")
    train, test = split_by_sample(leaf, 0.9, random.Random(0))
    write_leaf_json(tmp_path / "leaf" / "train" / "all_data_0_train_9.json", train)
    write_leaf_json(tmp_path / "leaf" / "test" / "all_data_0_test_9.json", test)
    dm = femnist_dm(tmp_path / "leaf")
    dm.setup()
    assert dm.users == ["f_0000", "f_0001"]
    assert [dm.client_num_train(k) for k in range(2)] == [10, 6]
    with pytest.raises(ConfigError, match=r"data\.fraction=0\.5 .*LEAF's finished"):
        femnist_dm(tmp_path / "leaf", fraction=0.5).setup()
    write_leaf_json(tmp_path / "leaf" / "test" / "all_data_0_test_9.json", test.subset(["f_0000"]))
    with pytest.raises(DataNotFoundError, match="'f_0001' .* has no test data"):
        femnist_dm(tmp_path / "leaf").setup()


def test_shakespeare_data_module(tmp_path):
    dm = LeafDataModule("shakespeare", str(write_tiny_shakespeare(tmp_path)), num_clients=3,
                        batch_size=16, seed=0)
    assert dm.example_input().dtype == torch.int64 and dm.example_input().shape == (1, 80)
    assert dm.model_kwargs() == {"num_classes": 80, "vocab_size": 80}
    dm.setup()
    # HAMLET: 1108 windows → 997 train, test 1076..1107 (32); HORATIO: 560 windows, its test
    # windows would start at 504 + 79 = 583 > 559: dropped; MACBETH: 1180 → 1062 train, 39 test
    assert dm.users == ["HAMLET_HAMLET", "MACBETH_MACBETH"]
    assert [dm.client_num_train(k) for k in range(2)] == [997, 1062]
    assert [dm.client_num_test(k) for k in range(2)] == [32, 39]
    text = TEXTS["HAMLET_HAMLET"][1]
    x, y = next(iter(dm.client_test_dataloader(0)))
    assert x.dtype == torch.int64 and x.shape == (32, 80) and y.dtype == torch.int64
    decode = "".join(SHAKESPEARE_VOCAB[i] for i in x[0].tolist())
    assert decode == text[1076:1156] and SHAKESPEARE_VOCAB[int(y[0])] == text[1156]
    assert SHAKESPEARE_VOCAB[int(y[-1])] == text[-1]
    ys = torch.cat([y for _, y in dm.client_train_dataloader(1, seed=0)])
    hist = np.bincount(ys.numpy(), minlength=80)
    expected = np.zeros(80, dtype=int)
    for c in TEXTS["MACBETH_MACBETH"][1][80:80 + 1062]:
        expected[SHAKESPEARE_VOCAB.index(c)] += 1
    assert (hist == expected).all()


def test_shakespeare_characters_outside_the_vocabulary(tmp_path):
    bad = {"PLAY_ROLE": ("PLAY", "A line with a forbidden \u00e6 character in it. " * 30)}
    dm = LeafDataModule("shakespeare", str(write_tiny_shakespeare(tmp_path, bad)), seed=0)
    with pytest.raises(DataNotFoundError, match=r"user 'PLAY_ROLE': character '\u00e6'"):
        dm.setup()


def test_wrong_input_width_is_named(tmp_path):
    root = write_tiny_femnist(tmp_path, sizes=(5,), files=1)
    path = root / "all_data" / "all_data_0.json"
    doc = json.loads(path.read_text())
    doc["user_data"]["f_0000"]["x"] = [[0.0] * 783] * 5
    path.write_text(json.dumps(doc))
    with pytest.raises(DataNotFoundError, match=r"all_data_0\.json, user 'f_0000'.*783 values"):
        femnist_dm(root).setup()


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"partition": "patho"}, "partition.name"),
        ({"split": "time"}, "data.split"),
        ({"fraction": 1.5}, "data.fraction"),
        ({"train_fraction": 1.0}, "data.train_fraction"),
        ({"min_samples": -1}, "data.min_samples"),
        ({"source": "web"}, "data.source"),
        ({"name": "sent140"}, "data.num_classes"),
    ],
)
def test_bad_fields(tmp_path, kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        femnist_dm(tmp_path, **kw)


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"all_data/\*\.json.*flip\.data\.shakespeare"):
        LeafDataModule("shakespeare", str(tmp_path / "nowhere")).setup()
    with pytest.raises(ConfigError, match="at least one user"):
        femnist_dm(write_tiny_femnist(tmp_path, sizes=(5, 6)), min_samples=6).setup()
