"""Messages to SuperNodes and back, and which SuperNode trains which client (ENGINES.md §3
"Client ↔ node", "A missing reply ... is a failed client").

:func:`exchange` pushes a cohort's Messages through a Flower ``Grid`` and polls for the replies
until all came back or a timeout passed (``Grid.send_and_receive`` has none by default, and
the SuperLink's Grid polls only every 3 s); a Message without a reply is ``None``.
:func:`discover` waits for the SuperNodes, asks each its ``partition-id`` with one
``query.hello`` and returns a :class:`NodeMap`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from flip.engines.flower.codec import HELLO

PARTITION_ID = "partition-id"
"""The node-config key of a SuperNode's partition (Flower's simulation sets it to 0..N−1; a
deployed SuperNode gets it from ``--node-config "partition-id=K num-partitions=N"``)."""


def exchange(grid: Grid, messages: Sequence[Message], timeout_s: float,
             poll_s: float = 0.05) -> list[Message | None]:
    """Push ``messages`` and pull their replies, every ``poll_s`` seconds, until every one has
    a reply or ``timeout_s`` seconds passed. Returns one entry per message, in order: its reply
    (which may carry an error) or ``None`` (not pushed, or no reply in time)."""
    ids = list(grid.push_messages(list(messages)))
    if len(ids) != len(messages):  # the Grid refused the batch (e.g. payload too large)
        ids = [None] * len(messages)
    pending = {mid: i for i, mid in enumerate(ids) if mid}
    replies: list[Message | None] = [None] * len(messages)
    deadline = time.monotonic() + timeout_s
    while pending:
        for reply in grid.pull_messages(list(pending)):
            i = pending.pop(reply.metadata.reply_to_message_id, None)
            if i is not None:
                replies[i] = reply
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return replies


class NodeMap:
    """Client k is trained by the SuperNode at position k mod N of the N SuperNodes sorted by
    partition id: with one SuperNode per client (``engine.num_supernodes`` = K, the
    simulation's default) client k is partition k; with fewer, SuperNodes serve several
    clients. ``partitions``: SuperNode id → partition id."""

    def __init__(self, partitions: dict[int, int]):
        if not partitions:
            raise RuntimeError("no SuperNode is connected")
        self.partitions = dict(partitions)
        self.nodes = sorted(partitions, key=lambda n: (partitions[n], n))

    def node_of(self, client: int) -> int:
        """The SuperNode id that trains ``client``."""
        return self.nodes[client % len(self.nodes)]


def discover(grid: Grid, expected: int, timeout_s: float, poll_s: float = 0.05) -> NodeMap:
    """Wait until ``expected`` SuperNodes are connected (at most ``timeout_s`` seconds), then
    ask each for its partition id.

    Raises:
        RuntimeError: fewer than ``expected`` SuperNodes within the timeout, or a SuperNode that
            does not answer or has no ``partition-id`` in its node config (the message says how
            to start one).
    """
    deadline = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{len(nodes)} of engine.num_supernodes={expected} SuperNodes connected within "
                f"engine.timeout_s={timeout_s} s; start them with flower-supernode "
                "(docs/engines.md)"
            )
        time.sleep(poll_s)
    hello = [Message(RecordDict({"hello": ConfigRecord({})}), dst_node_id=n, message_type=HELLO,
                     ttl=timeout_s) for n in nodes]
    partitions = {}
    for node, reply in zip(nodes, exchange(grid, hello, timeout_s, poll_s), strict=True):
        if reply is None or reply.has_error():
            why = "no reply" if reply is None else reply.error.reason
            raise RuntimeError(f"SuperNode {node} did not answer {HELLO}: {why}")
        pid = int(reply.content["node"][PARTITION_ID])
        if pid < 0:
            raise RuntimeError(
                f"SuperNode {node} has no {PARTITION_ID} in its node config; start it with "
                "--node-config \"partition-id=K num-partitions=N\""
            )
        partitions[node] = pid
    return NodeMap(partitions)
