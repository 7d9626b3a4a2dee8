"""``engine=flower``: flip's round on Flower (ENGINES.md §3; docs/engines.md).

Flower carries the messages, flip keeps the algorithm: the ServerApp
(:mod:`flip.engines.flower.server_app`) runs :func:`flip.train.train` with a
:class:`FlowerExecutor` that sends each cohort's jobs as Flower Messages, and the ClientApp
(:mod:`flip.engines.flower.client_app`) trains each job with the same code as ``engine=local``.
Modules: ``executor`` (the executor, no ``flwr`` import at load time, so a missing extra is a
``ConfigError``), ``codec`` (Messages ↔ jobs and updates), ``client_side`` (what a ClientApp
process builds from the run config), ``client_app``, ``server_app``, ``nodes`` (client ↔
SuperNode), ``direct_grid`` (an in-process Grid, no Ray), ``processes`` and ``simulation``
(a local SuperLink and ``flwr run``), ``export`` (a Flower app directory for deployment).
"""

from flip.engines.flower.executor import FlowerExecutor

__all__ = ["FlowerExecutor"]
