"""An in-process Flower Grid: the real ServerApp and ClientApp without Ray or a SuperLink
(``engine=flower engine.backend=inprocess``; ENGINES.md §3 "Tests: an in-process Grid that
calls the real ClientApp (no Ray)").

:class:`DirectGrid` implements Flower's ``Grid`` with N SuperNodes in this process: every
pushed Message is serialised to Flower's protobuf and parsed back (as a SuperLink would carry
it), handled by the ClientApp with that node's ``Context`` (``partition-id`` = its index,
``num-partitions`` = N, as Flower's simulation sets them), and its reply goes through the
protobuf too. Jobs run one after another when pushed. :func:`run_in_process` runs a whole
experiment this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from tempfile import TemporaryDirectory
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from omegaconf import OmegaConf

from flip.engines.flower.runconfig import CONFIG_KEY, RESULT_KEY, ship


def wire(message: Message) -> Message:
    """``message`` after a trip through Flower's protobuf encoding (bytes and back)."""
    data = message_to_proto(message).SerializeToString()
    return message_from_proto(ProtoMessage.FromString(data))


class DirectGrid(Grid):
    """A Grid whose ``num_nodes`` SuperNodes (ids 1..N) run ``client_app`` in this process.

    ``run_config``: the run config every node's ``Context`` carries. Nodes keep their
    ``Context`` (and its state) across messages, as SuperNodes do. A ClientApp that raises
    (outside flip's own error replies) is answered with a Flower ``Error``, as the
    simulation runtime does. Sets this process's Flower task identity (run 1, the SuperLink's
    node), which Flower needs to create a Message outside its runtimes.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict):
        self.client_app = client_app
        self._run = Run.create_empty(run_id=1)
        TaskIdentity.run_id, TaskIdentity.task_id = 1, 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.contexts = {
            k + 1: Context(run_id=1, node_id=k + 1, state=RecordDict(), run_config=run_config,
                           node_config={"partition-id": k, "num-partitions": num_nodes})
            for k in range(num_nodes)
        }
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        """Grid API: the run this Grid serves."""
        self._run = run

    @property
    def run(self) -> Run:
        """Grid API: the run (a placeholder run 1 unless set)."""
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """Grid API: a Message to ``dst_node_id`` (the ``Message`` constructor)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Grid API: the node ids 1..N."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Grid API: deliver each message (handled now, reply kept); returns their ids."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            received = wire(msg)
            try:
                reply = self.client_app(received, self.contexts[msg.metadata.dst_node_id])
            except Exception as err:
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      f"{type(err).__name__}: {err}"), reply_to=received)
            self.replies[msg.metadata.message_id] = wire(reply)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Grid API: the kept replies to ``message_ids`` (each returned once)."""
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Grid API: push, then pull (every reply is there at once)."""
        return self.pull_messages(self.push_messages(messages))


def run_in_process(cfg) -> dict:
    """Run ``cfg`` with flip's ServerApp on a :class:`DirectGrid` of
    ``engine.num_supernodes`` nodes running flip's ClientApp; returns the run's summary (as
    the ServerApp reported it)."""
    from flip.engines.flower.client_app import app as client_app
    from flip.engines.flower.server_app import RESULT_FILE
    from flip.engines.flower.server_app import app as server_app

    text = ship(cfg)
    nodes = int(OmegaConf.create(text).engine.num_supernodes)
    with TemporaryDirectory(prefix="flip-flower-") as tmp:
        run_config = {CONFIG_KEY: text, RESULT_KEY: tmp}
        grid = DirectGrid(client_app, nodes, run_config)
        server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                 run_config=run_config))
        return json.loads(Path(tmp, RESULT_FILE).read_text())["summary"]
