"""The command line shared by ``python -m flip.analysis.{report,compare,ablation}``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def parser(command: str, doc: str, run_help: str) -> argparse.ArgumentParser:
    """A parser for ``python -m flip.analysis.<command>``, described by the first line of
    ``doc``, with the positional ``RUN_DIR ...`` (helped by ``run_help``) and ``--out DIR``;
    the command adds its own options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m flip.analysis.{command}", description=doc.split("\n")[0]
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=run_help)
    parser.add_argument("--out", default=None, help="output dir (default: common parent of runs)")
    return parser


def run(action: Callable[[], object], errors: tuple[type[Exception], ...]) -> int:
    """Call ``action``; the exit code: 0, or 2 after writing ``flip: <message>`` to stderr
    when it raises one of ``errors`` (a missing run or file, runs that cannot be compared, a
    bad option value). Other exceptions propagate."""
    try:
        action()
    except errors as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"flip: {message}", file=sys.stderr)
        return 2
    return 0
