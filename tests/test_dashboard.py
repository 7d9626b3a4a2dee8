"""The comparison dashboard (issue 11 item 7): interactive plotly curves in a self-contained
``index.html``, rendered by a real headless Chromium with the network unreachable; and the
PNGs for papers. Hand-written runs (tests/fixtures_runs.py), no training."""

import json
import re
import shutil
import subprocess

import pytest
from fixtures_runs import write_comparison

from flip.analysis.compare import compare
from flip.analysis.figures import figures_json
from flip.analysis.rows import load_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ("accuracy_round", "accuracy_gb", "accuracy_flops", "accuracy_time", "density_round")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    compare(write_comparison(root / "runs"), root / "out")
    return root / "out" / "index.html"


def test_pngs_for_papers(page):
    for name in PLOTS:
        assert (page.parent / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_page_needs_no_other_file(page):
    """Outside its inline scripts the page loads nothing (no src=, no stylesheet link); its
    only links are to the PNGs next to it. plotly.js is inlined once."""
    text = page.read_text()
    markup = re.sub(r"(?s)<script[^>]*>.*?</script>", "<script></script>", text)
    assert "src=" not in markup and "<link" not in markup
    assert set(re.findall(r'href="([^"]+)"', markup)) == {f"{p}.png" for p in PLOTS}
    assert text.count("<script>") == 2 and text.count("Plotly.newPlot") == 1
    assert len(text) > 3_000_000  # plotly.js itself


def test_figures_toggle_algorithms_and_seeds(tmp_path):
    """Per label one legend entry for the mean (its ± std band in the same legend group, so
    they toggle together, in both panels), and one per seed, hidden until clicked."""
    runs = load_runs(write_comparison(tmp_path / "runs"))
    ids, text = figures_json(runs, 0.64)
    assert ids == [f"plot-{p}" for p in PLOTS]
    figure = json.loads(text)[0]  # accuracy against round: test and validation panels
    traces = figure["data"]
    mean = [t for t in traces if t["name"] == "fedavg: mean ± std, 2 seeds"]
    band = [t for t in traces if t["name"] == "fedavg ± std"]
    seed = [t for t in traces if t["name"] == "fedavg · seed 1"]
    assert len(mean) == len(band) == len(seed) == 2  # one per panel
    assert {t["legendgroup"] for t in mean + band} == {"fedavg"}
    assert [t.get("showlegend") for t in mean] == [True, False]
    assert all(t["visible"] == "legendonly" for t in seed)
    assert {t["xaxis"] for t in seed} == {"x", "x2"}
    assert mean[0]["y"] == pytest.approx([51.0, 71.0, 63.0, 63.0])  # test top-1, %
    assert mean[1]["y"] == pytest.approx([52.5, 66.0, 66.0, 68.5])  # validation top-1
    assert any(s.get("y0") == pytest.approx(64.0) for s in figure["layout"]["shapes"])


@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
def test_dashboard_renders_offline_in_headless_chromium(page, tmp_path):
    """Chromium with every host unresolvable and an unreachable proxy draws all five plotly
    figures (SVG traces in each) and fetched no resource."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
    ]  # fmt: skip
    run = {"capture_output": True, "text": True, "timeout": 180}
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], **run).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-plots-rendered="5"' in body and 'data-resources-fetched="0"' in body
    for name in PLOTS:
        div = dom.split(f'id="plot-{name}"')[1].split('class="plot"')[0]
        assert '<svg class="main-svg"' in div and 'class="trace scatter' in div
        assert "fedavg · seed 2" in div and "autoflip: mean ± std, 2 seeds" in div
    shot = tmp_path / "dashboard.png"
    proc = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()],
        **run,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1400) and pixels[..., :3].std() > 0.05  # not blank
