"""Random pruning: a fixed random mask at a given density (ALGORITHMS.md §3.3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from flip.algorithms.base import Algorithm
from flip.errors import ConfigError
from flip.federation.seeding import derive_seed
from flip.params import check, check_choice, is_number
from flip.pruning import prunable_names, random_mask

log = logging.getLogger(__name__)

RANDOM_MASK_STREAM = 4002
"""Key of the random stream (with the run seed) that draws the mask."""


def reference_summary(path: str | Path) -> tuple[dict, Path]:
    """The ``summary.json`` of a reference run and its path.

    ``path``: a run dir holding ``summary.json``, that file itself, or a folder of run dirs
    (a Hydra multirun) in which exactly one finished run is an AutoFLIP run (unfinished job
    dirs are ignored). Raises ``ConfigError`` (field ``random_pruning.reference_run``) when
    none or several are found.
    """
    field = "random_pruning.reference_run"
    accepted = "a finished run dir (with summary.json), its summary.json, or a folder of runs"
    path = Path(path)
    if path.is_dir() and (path / "summary.json").is_file():
        path = path / "summary.json"
    if path.is_file():
        return json.loads(path.read_text()), path
    if not path.is_dir():
        raise ConfigError(field, str(path), accepted, "No such file or directory.")
    found = [
        d / "summary.json"
        for d in sorted(path.iterdir())
        if (d / "summary.json").is_file()
        and json.loads((d / "summary.json").read_text()).get("algorithm") == "autoflip"
    ]
    if len(found) != 1:
        hint = f"{path} holds {len(found)} finished AutoFLIP runs; name one run dir."
        raise ConfigError(field, str(path), accepted, hint)
    return json.loads(found[0].read_text()), found[0]


class RandomPruning(Algorithm):
    """Random pruning (ALGORITHMS.md §3.3): before round 1 a uniformly random mask over the
    prunable tensors (``scope``, see :func:`flip.pruning.prunable_names`), fixed for the run,
    at the density of the AutoFLIP run it is compared with.

    The density is ``density`` or, with ``reference_run``, the reference's ``summary.json``
    ``cost.density`` (non-zero parameters / all parameters). The mask keeps exactly
    round(density · all parameters) entries overall: the tensors that are not prunable
    (biases, normalisation) are kept whole and the rest is drawn over the prunable entries
    (:func:`flip.pruning.random_mask`, from the run seed). Rounds are §1 on the masked model.
    Raises ``ConfigError`` unless exactly one of ``density`` (in (0, 1]) and
    ``reference_run`` is given, when the reference cannot be read or has a different
    parameter count, or when the density is below the share of tensors never pruned.
    """

    def __init__(
        self,
        name: str = "random",
        density: float | None = None,
        reference_run: str | None = None,
        scope: str = "weights",
    ):
        super().__init__(name)
        if (density is None) == (reference_run is None):
            raise ConfigError(
                "random_pruning.density",
                density,
                "a density in (0, 1] or random_pruning.reference_run (exactly one of them)",
            )
        check_choice("random_pruning.scope", scope, ("weights", "all"))
        self.reference_params = None
        if reference_run is not None:
            summary, file = reference_summary(reference_run)
            density = summary.get("cost", {}).get("density")
            self.reference_params = summary.get("cost", {}).get("params")
            log.info("random pruning: density %s from %s", density, file)
            reference_run = str(file)
        check("random_pruning.density", density, is_number(density) and 0.0 < density <= 1.0,
              "a density in (0, 1]")
        self.density = float(density)
        self.reference_run = reference_run
        self.scope = scope
        self.masks: dict[str, torch.Tensor] = {}

    def setup(self, fed) -> None:
        params = dict(fed.net.named_parameters())
        total = sum(p.numel() for p in params.values())
        if self.reference_params is not None and self.reference_params != total:
            raise ConfigError(
                "random_pruning.reference_run",
                self.reference_run,
                f"a run of a model with {total} parameters, like this one",
                f"The reference model has {self.reference_params}.",
            )
        names = prunable_names(fed.net, self.scope)
        fixed = total - sum(params[n].numel() for n in names)
        kept = round(self.density * total) - fixed
        if kept < 0:
            raise ConfigError(
                "random_pruning.density",
                self.density,
                f"a density >= {fixed / total:.6f} (the tensors never pruned)",
            )
        gen = torch.Generator().manual_seed(derive_seed(fed.seed, RANDOM_MASK_STREAM))
        self.masks = random_mask({n: params[n].shape for n in names}, kept, gen)
        fed.set_masks(self.masks)

    def save(self, out_dir: Path) -> list[Path]:
        """``mask.pt``: the mask (bool per prunable tensor), the target density and the
        reference run."""
        path = Path(out_dir) / "mask.pt"
        torch.save(
            {"masks": self.masks, "density": self.density, "reference_run": self.reference_run},
            path,
        )
        return [path]

    def state_dict(self) -> dict:
        """The fixed random mask (bool per prunable tensor)."""
        return {"masks": self.masks}

    def load_state_dict(self, state: dict) -> None:
        self.masks = dict(state["masks"])
