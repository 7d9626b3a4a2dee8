"""The comparison's PNGs (matplotlib, for papers): mean over seeds with a ± std band.

Writes into the output dir ``accuracy_round.png``, ``accuracy_gb.png``,
``accuracy_flops.png``, ``accuracy_time.png`` (only when the runs record simulated time):
test top-1 (solid) and validation top-1 (dashed) against round, cumulative GB, cumulative
training FLOPs and simulated seconds; and ``density_round.png`` (fraction of parameters sent,
in %). One colour per label; the legend gives the number of seeds.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from flip.analysis.curves import X_AXES, band, by_label, has_values, x_axes
from flip.analysis.rows import Run


def _draw(ax, group: list[Run], xkey: str, ykey: str, color, style: str, label: str | None):
    """One label's mean line (``style``) and ± std band on ``ax``; the line's colour."""
    b = band(group, xkey, ykey)
    if b is None:
        return color
    (line,) = ax.plot(b.x, b.y, style, marker=".", color=color, label=label)
    if b.std is not None:
        ax.fill_between(b.x, b.y - b.std, b.y + b.std, color=line.get_color(), alpha=0.15)
    return line.get_color()


def _save(fig: Figure, ax, xkey: str, xlabel: str, ylabel: str, title: str, path: Path):
    if xkey == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _figure():
    fig = Figure(figsize=(7.5, 4.6))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot(runs: list[Run], out: Path) -> list[Path]:
    """Write the PNGs of the module docstring into ``out``; return their paths."""
    groups = by_label(runs)
    with_val = has_values(runs, "val_acc1")
    paths = []
    for xkey in x_axes(runs):
        fig, ax = _figure()
        for label, group in groups.items():
            name = label + (f" (n={len(group)})" if len(group) > 1 else "")
            color = _draw(ax, group, xkey, "acc1", None, "-", name)
            if with_val:
                _draw(ax, group, xkey, "val_acc1", color, "--", None)
        handles, _ = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="k", ls="-", label="test (official split)"))
        if with_val:
            handles.append(Line2D([], [], color="k", ls="--", label="validation (picks)"))
        ax.legend(handles=handles, fontsize="small")
        axis = X_AXES[xkey]
        path = out / f"accuracy_{axis.stem}.png"
        _save(fig, ax, xkey, axis.title, "Top-1 accuracy (%)", f"Accuracy vs {axis.what}", path)
        paths.append(path)
    fig, ax = _figure()
    for label, group in groups.items():
        _draw(ax, group, "round", "density", None, "-", label)
    ax.legend(fontsize="small")
    path = out / "density_round.png"
    _save(fig, ax, "round", "Round", "Density: parameters sent (%)", "Density vs round", path)
    return [*paths, path]
