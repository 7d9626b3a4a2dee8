"""Tables of the analysis commands: cell formatting, Markdown and HTML tables, the console table.

Pure formatting: nothing here reads or writes files.
"""

from __future__ import annotations

import html
import math

from rich.console import Console
from rich.table import Table

NO_VAL = "no val split"
"""The cell of a figure that picks a round on the validation split (ALGORITHMS.md §5), for a
run without one: said, not silently replaced by a test-picked figure."""


def si(value: float) -> str:
    """3 significant digits with K/M/G/T/P, e.g. 9527488 → '9.53 M'."""
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")):
        if abs(value) >= scale or scale == 1:
            v = value / scale
            digits = max(0, 2 - math.floor(math.log10(abs(v)))) if v else 2
            return f"{v:.{digits}f} {unit}".rstrip()
    raise AssertionError  # unreachable


TIME_UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"))
"""Units of simulated time; a value is shown in the largest unit it reaches twice over."""


def time_unit(seconds: float) -> tuple[float, str]:
    """The unit (size in seconds, name) :func:`fmt` shows ``seconds`` in: h from 2 h on,
    min from 2 min on, else s."""
    return next(
        ((size, name) for size, name in TIME_UNITS if abs(seconds) >= 2 * size), TIME_UNITS[-1]
    )


def fmt(value, kind, unit: tuple[float, str] | None = None) -> str:
    """Format one table cell: ``pct`` (fraction → %), ``si`` (FLOPs), ``gb`` (3 decimals),
    ``ratio`` (×), ``count`` (rounds, units: whole, or one decimal for a mean), ``time``
    (seconds, shown in ``unit`` or else :func:`time_unit`'s), ``num`` (3 significant digits),
    or a callable applied to the value; ``None`` → '–'."""
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "si":
        return si(value)
    if kind == "gb":
        return f"{value:.3f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if kind == "time":
        size, name = unit or time_unit(value)
        return f"{value / size:.3g} {name}"
    if kind == "num":
        return f"{value:.3g}"
    return kind(value)


def cell(row: dict, key: str, kind: str, picked: bool = False) -> str:
    """A cell of a run's row, or of a row over seeds (:func:`flip.analysis.stats.aggregate`
    with ``runs``, the number of seeds): the value or mean as :func:`fmt` (``cut``: a signed
    percentage; ``text``: as is), ``± std`` when there are several values, ``(n/N seeds)``
    when only n of the N seeds have a value; '–' when none has. ``picked``: the figure picks
    a round on the validation split; :data:`NO_VAL` when the row's ``val_split`` is false."""
    if picked and not row.get("val_split"):
        return NO_VAL
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None:
        return "–"
    if kind == "text":
        return str(value)
    if kind == "cut":
        return f"{100 * value:+.1f}%".replace("-", "−")
    unit = time_unit(value) if kind == "time" else None
    text = fmt(value, kind, unit)
    if std is not None:
        spread = {"count": f"{std:.1f}", "time": fmt(std, "time", unit)}.get(kind)
        text += f" ± {spread or fmt(std, kind)}"
    n, runs = row.get(f"{key}_n"), row.get("runs")
    if n is not None and runs is not None and n < runs:
        text += f" ({n}/{runs} seeds)"
    return text


def show(value) -> str:
    """A config value as one line: dicts as ``{k=v, ...}`` without Hydra's ``_target_``."""
    if isinstance(value, dict):
        items = ", ".join(f"{k}={show(v)}" for k, v in value.items() if k != "_target_")
        return "{" + items + "}"
    return str(value)


def markdown_table(header: list[str], cells: list[list[str]], left: int = 1) -> str:
    """A Markdown table whose first ``left`` columns are left-aligned, the others right."""
    rule = ["---"] * left + ["---:"] * (len(header) - left)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def html_table(header: list[str], cells: list[list[str]], table_id: str = "comparison") -> str:
    """An HTML ``<table id=table_id>`` with escaped header and cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in cells
    )
    return (
        f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>\n"
    )


def print_table(
    title: str,
    header: list[str],
    cells: list[list[str]],
    *,
    left: int = 1,
    width: int = 160,
    fit_terminal: bool = True,
    no_wrap: bool = True,
) -> Console:
    """Print a rich table on stdout (first ``left`` columns left-aligned) and return the console.

    ``width`` (characters): the console's width when stdout is not a terminal (at least that
    wide), or always when ``fit_terminal`` is False; in a terminal the table otherwise fits it.
    """
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < left else "right", no_wrap=no_wrap)
    for c in cells:
        table.add_row(*c)
    console = Console() if fit_terminal else Console(width=width)
    if not console.is_terminal and fit_terminal:
        console = Console(width=max(console.width, width))
    console.print(table)
    return console
