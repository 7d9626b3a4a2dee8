"""flip's Flower ClientApp (ENGINES.md §3): ``app``, referenced by an exported app's
``[tool.flwr.app.components] clientapp`` as ``flip.engines.flower.client_app:app``.

- ``@app.query("hello")``: answers the SuperNode's ``partition-id`` and ``num-partitions``
  from its node config (−1 when unset), so the server maps clients to SuperNodes
  (:mod:`flip.engines.flower.nodes`).
- ``@app.train("flip")``: decodes a job (:mod:`flip.engines.flower.codec`), trains it with
  ``engine=local``'s code on this process's :class:`~flip.engines.flower.client_side.ClientSide`
  and replies with the update. A job whose training raises is answered with a Flower ``Error``
  naming the exception (type and message), so the server counts a failed client
  (``clients/failed``) and keeps its drop/retry rules.
- ``@app.train()`` (the default action, wrapped in Flower's ``secaggplus_mod``): AutoFLIP's
  explorers under ``exploration.secure_aggregation`` (:mod:`flip.engines.flower.secure`): the
  mod runs SecAgg+'s stages and calls the handler once, for the D_k it masks.
"""

from __future__ import annotations

import logging
import traceback

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from flip.engines.flower.client_side import client_side
from flip.engines.flower.codec import encode_update, parse_train_request
from flip.engines.flower.nodes import PARTITION_ID
from flip.engines.flower.runconfig import receive
from flip.engines.flower.secure import explorer_report, fitins_of, fitres_content

log = logging.getLogger(__name__)

app = ClientApp()


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """This SuperNode's partition (node config ``partition-id``, ``num-partitions``)."""
    node = context.node_config
    return Message(RecordDict({"node": ConfigRecord({
        PARTITION_ID: int(node.get(PARTITION_ID, -1)),
        "num-partitions": int(node.get("num-partitions", -1)),
    })}), reply_to=msg)


@app.train("flip")
def train(msg: Message, context: Context) -> Message:
    """Train one job; reply with its update, or with an ``Error`` when training raised."""
    try:
        side = client_side(receive(context.run_config, context.node_config))
        state, masks, job, removals = parse_train_request(msg.content, side.device)
        update = side.train(state, masks, job, removals)
        return Message(encode_update(update), reply_to=msg)
    except Exception as err:  # the server decides (drop, retry): it needs the reason
        log.warning("flip ClientApp: training raised %s", traceback.format_exc())
        reason = f"training raised {type(err).__name__}: {err}"
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                       reply_to=msg)


@app.train(mods=[secaggplus_mod])
def secure_explorer(msg: Message, context: Context) -> Message:
    """SecAgg+'s fit step: train the explorer's job, reply with its D_k for the mod to mask
    (:func:`flip.engines.flower.secure.explorer_report`). A raise drops this explorer out of
    the protocol, which the others' key shares survive."""
    side = client_side(receive(context.run_config, context.node_config))
    return Message(fitres_content(explorer_report(side, fitins_of(msg.content))), reply_to=msg)
