"""The dashboard's interactive figures (plotly), as JSON for ``Plotly.newPlot``.

Per x axis of :data:`flip.analysis.curves.X_AXES` (round, cumulative GB, cumulative training
FLOPs, simulated seconds when recorded) one accuracy figure with two panels, test top-1 and
validation top-1 (the validation target as a dotted line), and one figure of density against
round. Per label: the mean over seeds as a line with a ± std band (one legend entry, toggling
both panels), and with several seeds each seed's curve as its own legend entry (hidden until
clicked). Hovering shows label, seed, round and values. Numbers go into the JSON as plain
lists (not plotly's base64 typed arrays), readable in the page source. Nothing is read or
written here.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots
from plotly.utils import PlotlyJSONEncoder

from flip.analysis.curves import (
    ACCURACY_PANELS,
    X_AXES,
    band,
    by_label,
    has_values,
    seed_curve,
    x_axes,
)
from flip.analysis.rows import Run
from flip.analysis.tables import NO_VAL

PALETTE = qualitative.Plotly
LEGEND_HELP = "click: show/hide · double-click: only this"


def _add(
    fig, group: list[Run], label: str, color: str, xkey: str, ykey: str, col: int, shown: set
) -> None:
    """Add one label's band, mean line and seed curves (``ykey`` against ``xkey``) to panel
    ``col``; a legend entry appears once per figure (``shown``: entries already made)."""
    xname = X_AXES[xkey].title
    b = band(group, xkey, ykey)
    if b is not None:
        if b.std is not None:
            r, g, bl = hex_to_rgb(color)
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([b.x, b.x[::-1]]).tolist(),
                    y=np.concatenate([b.y + b.std, (b.y - b.std)[::-1]]).tolist(),
                    mode="lines",
                    fill="toself",
                    fillcolor=f"rgba({r},{g},{bl},0.18)",
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=label,
                    showlegend=False,
                    name=f"{label} ± std",
                ),
                row=1,
                col=col,
            )
        name = f"{label}: mean ± std, {b.n} seeds" if b.n > 1 else label
        std = b.std if b.std is not None else np.zeros_like(b.y)
        fig.add_trace(
            go.Scatter(
                x=b.x.tolist(),
                y=b.y.tolist(),
                mode="lines+markers",
                line={"color": color},
                name=name,
                legendgroup=label,
                showlegend=label not in shown,
                customdata=np.stack([b.rounds, std], axis=-1).tolist(),
                hovertemplate=(
                    f"{label}<br>round %{{customdata[0]}}<br>{xname}: %{{x}}<br>"
                    f"%{{y:.2f}}% ± %{{customdata[1]:.2f}}<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        shown.add(label)
    if len(group) < 2:
        return
    for run in group:
        rounds, xs, ys = seed_curve(run, xkey, ykey)
        entry = f"{label} · seed {run.seed}"
        if not rounds:
            continue
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": color, "dash": "dot", "width": 1},
                name=entry,
                legendgroup=entry,
                showlegend=entry not in shown,
                visible="legendonly",
                customdata=rounds,
                hovertemplate=(
                    f"{entry}<br>round %{{customdata}}<br>{xname}: %{{x}}<br>"
                    f"%{{y:.2f}}%<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        shown.add(entry)


def _round_ticks(fig, runs: list[Run]) -> None:
    """Whole-number round ticks (one per round up to 20 rounds; else plotly's own)."""
    last = max((p["round"] for r in runs for p in r.curve), default=0)
    fig.update_xaxes(dtick=1 if last <= 20 else None, tickformat="d")


def _layout(fig, title: str) -> None:
    fig.update_layout(
        title=title,
        height=480,
        template="plotly_white",
        hovermode="closest",
        legend={"groupclick": "togglegroup", "title": {"text": LEGEND_HELP}},
        margin={"t": 70, "l": 60, "r": 20, "b": 50},
    )
    fig.update_xaxes(exponentformat="SI")


def accuracy_figure(runs: list[Run], xkey: str, target: float | None) -> go.Figure:
    """Test and validation top-1 (%) against ``xkey``; ``target`` (a fraction, or None) is
    drawn on the validation panel; a panel without values says so."""
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.05,
        subplot_titles=[title for _, title in ACCURACY_PANELS],
    )
    shown: set = set()
    for i, (label, group) in enumerate(by_label(runs).items()):
        for col, (ykey, _) in enumerate(ACCURACY_PANELS, start=1):
            _add(fig, group, label, PALETTE[i % len(PALETTE)], xkey, ykey, col, shown)
    if not has_values(runs, "val_acc1"):
        fig.add_annotation(
            text=NO_VAL,
            showarrow=False,
            row=1,
            col=2,
            x=0.5,
            y=0.5,
            xref="x2 domain",
            yref="y2 domain",
        )
    elif target is not None:
        fig.add_hline(
            y=100 * target,
            line_dash="dot",
            line_color="#555",
            row=1,
            col=2,
            annotation_text=f"target {100 * target:.0f}%",
        )
    _layout(fig, f"Accuracy vs {X_AXES[xkey].what}")
    fig.update_xaxes(title_text=X_AXES[xkey].title)
    if xkey == "round":
        _round_ticks(fig, runs)
    fig.update_yaxes(title_text="Top-1 accuracy (%)", row=1, col=1)
    return fig


def density_figure(runs: list[Run]) -> go.Figure:
    """Density (% of parameters sent) against round."""
    fig = make_subplots(rows=1, cols=1)
    shown: set = set()
    for i, (label, group) in enumerate(by_label(runs).items()):
        _add(fig, group, label, PALETTE[i % len(PALETTE)], "round", "density", 1, shown)
    _layout(fig, "Density vs round")
    fig.update_xaxes(title_text="Round")
    _round_ticks(fig, runs)
    fig.update_yaxes(title_text="Density: parameters sent (%)")
    return fig


def figures_json(runs: list[Run], target: float | None) -> tuple[list[str], str]:
    """The figures' element ids (``plot-accuracy_round``, ..., ``plot-density_round``) and
    a JSON list of ``{"id", "data", "layout"}`` for ``Plotly.newPlot``."""
    figs = [
        (f"plot-accuracy_{X_AXES[k].stem}", accuracy_figure(runs, k, target)) for k in x_axes(runs)
    ]
    figs.append(("plot-density_round", density_figure(runs)))
    payload = [{"id": fid, **fig.to_plotly_json()} for fid, fig in figs]
    return [fid for fid, _ in figs], json.dumps(payload, cls=PlotlyJSONEncoder)
