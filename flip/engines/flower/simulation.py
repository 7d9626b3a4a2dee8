"""``engine=flower engine.backend=ray``: a Flower simulation started by ``python -m flip``
(ENGINES.md §3 "Simulation").

Flower 1.42 deprecates the Python entry point ``flwr.simulation.run_simulation`` in favour of
``flwr run`` against a SuperLink, so this is what :func:`run_simulation` does, all on
127.0.0.1 and inside a temporary directory: it writes the run's Flower app
(:func:`flip.engines.flower.export.write_app`), starts ``flower-superlink --simulation`` on a
free port, and runs ``flwr run APP --federation-config "num-supernodes=N
client-resources-num-cpus=C client-resources-num-gpus=G" --stream``. The SuperLink starts the
ServerApp's process and Flower's simulation runtime: N virtual SuperNodes whose ClientApps run
in a pool of Ray actors (as many as the machine's CPUs / C). The ServerApp runs the whole
experiment (writing the run directory as ``engine=local`` does) and leaves its summary or its
error in ``result.json``; the SuperLink, and with it every process it started, is stopped
afterwards.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from tempfile import TemporaryDirectory

from flip.engines.flower.export import write_app
from flip.engines.flower.processes import (
    LOOPBACK,
    executable,
    flower_env,
    free_port,
    started,
    superlink_cmd,
    tail,
    wait_healthy,
    write_connection,
)
from flip.engines.flower.server_app import RESULT_FILE
from flip.errors import (
    CheckpointError,
    ConfigError,
    CorruptDataError,
    DataNotFoundError,
    TrainingStopped,
)

CONNECTION = "flip"
FLIP_ERRORS = {cls.__name__: cls for cls in (CheckpointError, CorruptDataError,
                                             DataNotFoundError, TrainingStopped)}


def remote_error(doc: dict) -> Exception:
    """The exception to raise here for the ServerApp's ``{"type", "message", "field"}``:
    flip's own error classes keep their class (the CLI prints them as ``flip: ...``), anything
    else becomes a ``RuntimeError`` naming the original type."""
    message = f"{doc['message']} (raised in the Flower ServerApp)"
    if doc["type"] == "ConfigError":
        err = ConfigError.__new__(ConfigError)
        ValueError.__init__(err, message)
        err.field = doc.get("field")
        return err
    if doc["type"] in FLIP_ERRORS:
        return FLIP_ERRORS[doc["type"]](message)
    return RuntimeError(f"the Flower ServerApp raised {doc['type']}: {doc['message']}")


def federation_config(num_supernodes: int, client_resources: dict) -> str:
    """``flwr run --federation-config`` of the simulation: SuperNodes and Ray resources."""
    return (f"num-supernodes={int(num_supernodes)} "
            f"client-resources-num-cpus={int(client_resources['num_cpus'])} "
            f"client-resources-num-gpus={float(client_resources['num_gpus'])}")


def run_simulation(cfg, executor) -> dict:
    """Run ``cfg`` in Flower's simulation runtime (module docstring); returns the summary the
    ServerApp wrote. Raises what the ServerApp raised (flip's errors keep their class), or
    ``RuntimeError`` with the SuperLink's log when the run ended without a result."""
    with TemporaryDirectory(prefix="flip-flower-") as tmp:
        tmp = Path(tmp)
        app = write_app(tmp / "app", cfg, result_dir=str(tmp))
        nodes = cfg.engine.get("num_supernodes") or cfg.federation.num_clients
        env = flower_env(tmp / "home")
        port = free_port()
        write_connection(tmp / "home", CONNECTION, f"{LOOPBACK}:{port}")
        log = tmp / "superlink.log"
        with started(superlink_cmd(port, simulation=True), env, log, cwd=Path.cwd()) as link:
            wait_healthy(port, link, log)
            subprocess.run(
                [executable("flwr"), "run", str(app), CONNECTION, "--federation-config",
                 federation_config(nodes, executor.client_resources), "--stream"],
                env=env, cwd=Path.cwd(), check=False,
            )
        result = tmp / RESULT_FILE
        if not result.exists():
            raise RuntimeError("the Flower simulation ended without a result; SuperLink log:\n"
                               + tail(log, 40))
        doc = json.loads(result.read_text())
    if "error" in doc:
        raise remote_error(doc["error"])
    return doc["summary"]

