"""The comparison's one-page dashboard, ``index.html``: tables, interactive curves, run list.

Self-contained: plotly.js is inlined once (``plotly.offline.get_plotlyjs()``, about 5 MB) and
the figures of :mod:`flip.analysis.figures` are embedded as JSON, so the page needs no network
and no other file. After the plots are drawn the page sets ``data-plots-rendered`` on
``<body>`` (plots with drawn traces) and ``data-resources-fetched`` (resources the browser
fetched: 0 for a self-contained page); the headless-browser test reads both. The PNGs of
:mod:`flip.analysis.plots` sit next to the page and are linked, not embedded.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from plotly.offline import get_plotlyjs

from flip.analysis.figures import figures_json
from flip.analysis.rows import Run
from flip.analysis.tables import NO_VAL, html_table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
.setting, .notes { color: #444; max-width: 80em; }
.plot { width: 100%; max-width: 1300px; min-height: 480px; margin-bottom: 16px; }
"""

RENDER = """
const figures = JSON.parse(document.getElementById("figures").textContent);
const config = {responsive: true, displaylogo: false};
Promise.all(figures.map((f) => Plotly.newPlot(f.id, f.data, f.layout, config))).then(() => {
  const drawn = figures.filter((f) =>
    document.getElementById(f.id).querySelector("svg.main-svg .scatterlayer .trace"));
  document.body.dataset.plotsRendered = String(drawn.length);
  const fetched = performance.getEntriesByType("resource").length;
  document.body.dataset.resourcesFetched = String(fetched);
});
"""


def _inline_js(code: str) -> str:
    """JavaScript ``code`` safe inside ``<script>``: ``</script`` (which can only stand in a
    string or regular expression) written ``<\\/script``, which means the same there."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def _inline_json(text: str) -> str:
    """JSON ``text`` safe inside ``<script>``: every ``<`` (only found in strings) escaped
    as ``\\u003c``."""
    return text.replace("<", "\\u003c")


def notes(target: float | None) -> str:
    """The paragraph under the tables: how rounds are picked, the target, cuts and ±."""
    picked = (
        "“Best” is the test top-1 at the round with the best validation top-1 (per seed, then "
        "mean ± std over seeds); the to-target columns count until the first round whose "
        "validation top-1 reaches "
        + (f"{100 * target:.0f}%" if target is not None else "the target")
        + f". “{NO_VAL}”: the run held out no validation data (data.val_fraction = 0), so no "
        "round is picked. The test-picked maximum is shown only as optimistic."
    )
    return (
        f"{picked} Cuts are 1 − mean(algorithm) / mean(FedAvg): positive = less than FedAvg. "
        "FLOPs and GB include set-up work before round 1 (AutoFLIP's exploration, PruneFL's "
        "initial pruning). Densities are fractions of all parameters; Tp is AutoFLIP's "
        "threshold quantile, not a sparsity. ± is the sample standard deviation over seeds."
    )


def dashboard(
    runs: list[Run],
    tables: list[tuple[str, str, list[str], list[list[str]]]],
    target: float | None,
    pngs: list[Path],
    setting: str,
) -> str:
    """The self-contained ``index.html`` as text: ``setting`` (the shared setting, one
    line), ``tables`` (each ``(title, element id, header, cells)``), the notes, the
    interactive figures of :func:`flip.analysis.figures.figures_json` (``target``: the
    validation target, a fraction, or None), links to ``pngs`` and the run list."""
    experiment = runs[0].row.get("experiment") or "flip"
    ids, figures = figures_json(runs, target)
    plots = "\n".join(f'<div class="plot" id="{i}"></div>' for i in ids)
    sections = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n{html_table(header, cells, table_id)}"
        for title, table_id, header, cells in tables
    )
    links = ", ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in pngs)
    run_cells = [
        [
            r.label,
            str(r.seed),
            str(r.row.get("rounds_completed")),
            "yes" if r.row["val_split"] else NO_VAL,
            r.row["source"],
            str(r.path),
        ]
        for r in runs
    ]
    runs_table = html_table(
        ["Algorithm", "Seed", "Rounds", "Validation", "Read from", "Run dir"], run_cells, "runs"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flip comparison: {html.escape(experiment)}</title>
<style>{STYLE}</style>
<script>{_inline_js(get_plotlyjs())}</script>
</head>
<body>
<h1>flip comparison: {html.escape(experiment)}</h1>
<p class="setting" id="setting">{html.escape(setting)}</p>
{sections}
<p class="notes" id="notes">{html.escape(notes(target))}</p>
<h2>Curves</h2>
<p class="notes">Hover for values, drag to zoom (double-click resets), click a legend entry
to show or hide it: an algorithm's mean ± std band, or one seed's curve (hidden at first).
PNG versions for papers: {links}.</p>
{plots}
<h2>Runs</h2>
{runs_table}
<script type="application/json" id="figures">{_inline_json(figures)}</script>
<script>{RENDER}</script>
</body>
</html>
"""
