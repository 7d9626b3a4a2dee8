"""flip's Flower ServerApp (ENGINES.md §3): ``app``, referenced by an exported app's
``[tool.flwr.app.components] serverapp`` as ``flip.engines.flower.server_app:app``.

Its main runs flip's own round loop: :func:`flip.train.train` on the run's flip config
(:mod:`flip.engines.flower.runconfig`) with a
:class:`~flip.engines.flower.executor.FlowerExecutor` on the Grid Flower hands it. Sampling,
retries, set-up (AutoFLIP's exploration and compaction, PruneFL's initial pruning), the
server step, evaluation, ``rounds.csv``, checkpoints, resume and W&B are flip's, unchanged.
When the run config names a result directory (a simulation started by ``python -m flip``),
``result.json`` there receives the summary or the error, for the launching process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flip.engines.flower.runconfig import RESULT_KEY, receive
from flip.errors import ConfigError
from flip.train import build, train

RESULT_FILE = "result.json"

app = ServerApp()


def write_result(result_dir: str | None, **doc) -> None:
    """``result.json`` in ``result_dir`` (if given): ``{"summary": ...}`` or ``{"error":
    {"type", "message", "field"}}``."""
    if result_dir:
        Path(result_dir, RESULT_FILE).write_text(json.dumps(doc, default=str))


def show_flip_logs() -> None:
    """In a process nobody configured logging for (the ServerApp's own process), flip's INFO
    messages (explorers, pruning, W&B) go to stderr, which Flower streams to ``flwr run``."""
    flip_log = logging.getLogger("flip")
    if not flip_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        flip_log.addHandler(handler)
        flip_log.setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment of the run config on ``grid``."""
    show_flip_logs()
    result_dir = context.run_config.get(RESULT_KEY)
    try:
        cfg = receive(context.run_config)
        summary = train(cfg, executor=build(cfg.engine, grid=grid))
    except Exception as err:
        write_result(result_dir, error={
            "type": type(err).__name__, "message": str(err),
            "field": err.field if isinstance(err, ConfigError) else None,
        })
        raise
    write_result(result_dir, summary=summary)
