"""`lintutor build`: every lesson executed with the solutions filled in, written as a static
site that reads offline: an index with the lesson table, one page per lesson, interactive
plotly figures drawn by one local plotly.js, math typeset by a local MathJax, no CDN. Also: a
saved lesson stays small (the plotly renderer does not put plotly.js into the notebook).

Each lesson's page is built by its own test (so xdist spreads them); where Chromium is there,
the page is opened from disk with every network request refused and recorded, and its math and
figures must render. The whole `lintutor build` command runs once on lessons 00 and 01.
"""

import glob
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from lintutor.course import site
from lintutor.course.notebook import exercise_cells

from .test_browser import CHROMIUM, browser_context

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb")))
TIMINGS = os.path.join(ROOT, ".pytest_cache", "site_times.jsonl")


def _no_remote_assets(page_html):
    remote = re.findall(r"<(?:script|link|img)[^>]*(?:src|href)=[\"']https?://[^\"']+",
                        page_html)  # fmt: skip
    assert not remote, remote


def _render(path, tmp_path):
    """Open a page from disk in Chromium with the network refused: {"requests": [...refused],
    "math": n, "math_errors": n, "plots": n, "drawn": n}, or None without a browser."""
    if not os.path.exists(CHROMIUM):
        print(f"no browser at {CHROMIUM}: the page's rendering is not checked")
        return None
    refused = []
    with browser_context(tmp_path / "profile") as context:
        page = context.new_page()

        def route(r):
            if r.request.url.startswith("file://"):
                return r.continue_()
            refused.append(r.request.url)
            return r.abort()

        page.route("**/*", route)
        page.goto("file://" + path)
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue"
            " && MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running",
            timeout=120_000,
        )
        page.wait_for_timeout(1000)
        got = page.evaluate(
            "() => ({math: document.querySelectorAll('.MathJax, .MathJax_Display, "
            ".MathJax_SVG').length, math_errors: document.querySelectorAll('.MathJax_Error, "
            "merror').length, plots: document.querySelectorAll('.js-plotly-plot').length, "
            "drawn: [...document.querySelectorAll('.js-plotly-plot')]"
            ".filter(p => p.querySelector('svg.main-svg')).length})"
        )
        page.close()
    got["requests"] = refused
    return got


def test_static_outputs_turn_figures_and_widgets_into_html():
    fig = {"data": [{"type": "heatmap", "z": [[1, 2], [3, 4]]}], "layout": {"title": {"text": "t"}}}
    nb = nbformat.v4.new_notebook()
    view = {"model_id": "aa", "version_major": 2, "version_minor": 0}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "fig",
            outputs=[
                nbformat.v4.new_output(
                    "display_data", data={site.PLOTLY_MIME: fig, "text/plain": "Figure"}
                )
            ],
        ),
        nbformat.v4.new_code_cell(
            "widgets.interactive(...)",
            outputs=[
                nbformat.v4.new_output(
                    "display_data", data={site.WIDGET_VIEW: view, "text/plain": "interactive"}
                )
            ],
        ),
    ]
    nb.metadata["widgets"] = {site.WIDGET_STATE: {"state": {
        "aa": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_bb", "IPY_MODEL_cc"]}},
        "bb": {"model_name": "IntSliderModel", "state": {}},
        "cc": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {site.PLOTLY_MIME: fig}}]}},
    }}}  # fmt: skip
    counts = site.static_outputs(nb)
    assert counts == {"figures": 2, "widgets": 1}
    first = nb.cells[0].outputs[0]["data"]
    assert list(first) == ["text/html"] and "Plotly.newPlot" in first["text/html"]
    assert len(first["text/html"]) < 20_000, "plotly.js must not be inside the page's figure"
    second = [o["data"]["text/html"] for o in nb.cells[1].outputs]
    assert "interactive control" in second[0] and "Plotly.newPlot" in second[1]
    assert "widgets" not in nb.metadata


def _execute_small(renderer, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nos.environ['LINTUTOR_PLOTLY_RENDERER'] = " + repr(renderer) + "\n"
        "import numpy as np\nimport lintutor\nlintutor.setup_notebook()\n"
        "from lintutor.plots import heatmap\nheatmap(np.eye(4), title='a')")])  # fmt: skip
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    path = tmp_path / f"{renderer.replace('+', '_')}.ipynb"
    nbformat.write(nb, path)
    return os.path.getsize(path)


def test_a_saved_figure_holds_its_data_not_plotly_js(tmp_path):
    small = _execute_small("plotly_mimetype", tmp_path)  # what setup_notebook picks here
    embedded = _execute_small("plotly_mimetype+notebook", tmp_path)  # the renderer before
    print(f"a notebook with one figure, saved: {small:,} bytes; with plotly.js: {embedded:,}")
    assert small < 50_000 < 3_000_000 < embedded


def _ids(paths):
    return [os.path.basename(p).removesuffix(".ipynb") for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_lesson_page(path, tmp_path):
    out = tmp_path / "site"
    lines = []
    index = site.build(str(out), lessons=[os.path.basename(path)[:2]], say=lines.append)
    page = out / (os.path.basename(path).removesuffix(".ipynb") + ".html")
    print(*lines)
    seconds = float(re.search(r"ran in (\d+) s", lines[-1]).group(1))
    os.makedirs(os.path.dirname(TIMINGS), exist_ok=True)
    with open(TIMINGS, "a") as f:
        f.write(json.dumps({"notebook": os.path.basename(path), "s": seconds}) + "\n")
    text = page.read_text(encoding="utf-8")
    _no_remote_assets(text)
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert (out / "mathjax" / "MathJax.js").exists()
    assert page.name in open(index).read()
    nb = nbformat.read(path, as_version=4)
    for ex_id, _ in exercise_cells(nb):
        assert re.search(rf"PASS</b> <b>{re.escape(ex_id)}</b>", text), f"{ex_id}: no PASS"
    # an error in a cell stops the build (nbclient), so every output here is a cell's result
    figures = int(re.search(r"(\d+) figure", lines[-1]).group(1))
    assert text.count("Plotly.newPlot") == figures
    got = _render(str(page), tmp_path)
    if got is not None:
        assert not got["requests"], f"the page asked the network for {got['requests']}"
        has_math = any(c.cell_type == "markdown" and re.search(r"\$[^$\s][^$]*\$", c.source)
                       for c in nb.cells)  # fmt: skip
        assert got["math"] > 0 or not has_math, got
        assert got["math_errors"] == 0, got
        assert got["plots"] == figures and got["drawn"] == figures, got


def test_lintutor_build_writes_the_index_and_pages(tmp_path):
    out = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "lintutor.course.cli", "build", "--out",
                           str(out), "--lessons", "00", "01"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = (out / "index.html").read_text()
    _no_remote_assets(index)
    for name in ("00_start_here.html", "01_softmax_attention.html"):
        assert name in _links(index) and (out / name).exists()
    assert "<table>" in index and "01" in index
    # navigation: each page links the index and its neighbours (nbconvert rewrites the page's
    # HTML, quotes included, so the links are read as attributes, not as the text we wrote)
    first = _links((out / "00_start_here.html").read_text())
    second = _links((out / "01_softmax_attention.html").read_text())
    assert {"index.html", "01_softmax_attention.html"} <= first, first
    assert {"index.html", "00_start_here.html"} <= second, second


def _links(page_html):
    """The local pages a page links to (href="..." or href='...')."""
    return set(re.findall(r"<a\b[^>]*\bhref=[\"']([^\"'#:]+\.html)[\"']", page_html))


def test_a_text_progress_bar_is_one_line_on_the_page(tmp_path):
    """The site runs lessons with text bars: without coalescing, each update of a bar was its
    own line of the page (hundreds in lessons 02-09); with it, the bar's last state is left."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from lintutor.progress import bar\nfor _ in bar(range(200), desc='training'):\n    pass"
    )]  # fmt: skip
    path = tmp_path / "bars.ipynb"
    nbformat.write(nb, path)
    run = site.execute(nbformat.read(path, as_version=4), str(path), timeout=120)
    text = "".join(o.get("text", "") for o in run.cells[0].outputs)
    assert "200/200" in text and "training" in text
    assert len([line for line in re.split(r"[\r\n]", text) if line.strip()]) == 1, repr(text)
