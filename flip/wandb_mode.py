"""W&B without waiting on the network: the mode a run logs in, and where an offline run lies.

flip decides the mode before W&B starts, from ``WANDB_MODE`` (honoured first: ``disabled``,
``offline``/``dryrun``, ``online``/``run``) and the logger's ``offline`` setting. A run asked to
log online without W&B credentials (no ``WANDB_API_KEY``, no ``wandb login`` entry in
``~/.netrc`` for the W&B host) logs offline instead of prompting or waiting for a login. W&B's
own terminal output is silenced in offline mode; flip says once where the run is and the
``wandb sync`` command that uploads it (:func:`announce`).
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


def credentials_configured() -> bool:
    """Whether W&B could log in without asking: ``WANDB_API_KEY`` or
    ``WANDB_IDENTITY_TOKEN_FILE`` set, or a netrc entry (``$NETRC`` or ``~/.netrc``, where
    ``wandb login`` writes) for the host of ``WANDB_BASE_URL`` (default ``api.wandb.ai``).
    Reads only local files and the environment; the key itself is never read by flip."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(offline: bool) -> tuple[str, str]:
    """``(mode, reason)``: ``online``, ``offline`` or ``disabled``, and why when it is not what
    the config asked (else ``""``). ``offline``: the logger config's ``offline`` value."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled":
        return "disabled", ""
    if env in ("offline", "dryrun"):
        return "offline", "" if offline else f"WANDB_MODE={env}"
    if not offline or env in ("online", "run"):
        if credentials_configured():
            return "online", ""
        return "offline", "W&B is not logged in (run `wandb login` or set WANDB_API_KEY)"
    return "offline", ""


def wandb_logger_kwargs(offline: bool, run_id: str | None = None) -> tuple[dict, str]:
    """Keyword arguments for Lightning's ``WandbLogger`` on top of its config, and the reason
    of :func:`wandb_mode`. The kwargs: the resolved ``mode`` (passed on to ``wandb.init``;
    ``offline=False`` keeps Lightning from overwriting the ``WANDB_MODE`` variable), ``id`` and
    ``resume="allow"`` to continue the run ``run_id`` (a resumed flip run), and W&B's own
    terminal output silenced when offline."""
    mode, reason = wandb_mode(offline)
    kwargs: dict = {"offline": False, "mode": mode, "resume": "allow"}
    if run_id:
        kwargs["id"] = run_id
    if mode == "offline":
        kwargs["settings"] = {"silent": True}
    return kwargs, reason


def announce(logger, reason: str = "", resumed: bool = False) -> None:
    """Say once where an offline W&B run is written and how to upload it (nothing when online
    or disabled)."""
    run = logger.experiment
    settings = getattr(run, "settings", None)
    if getattr(settings, "mode", None) not in ("offline", "dryrun"):
        return
    sync_dir = settings.sync_dir
    why = f" ({reason})" if reason else ""
    msg = f"W&B is offline{why}: this run's W&B data is in {sync_dir}; upload it with: "
    msg += f"wandb sync {sync_dir}"
    if resumed:
        msg += (
            f" (a resumed run: W&B run {run.id} continues; the part before the resume is in "
            f"another offline-run-*-{run.id} folder next to it, sync that one first)"
        )
    log.info(msg)
