"""`lintutor build`: execute every lesson (with the reference solutions filled in, by default)
and write a static HTML site that reads without running anything and without the internet.

    site/index.html          the lesson table
    site/NN_name.html        one page per lesson: text, code, outputs, interactive figures
    site/plotly.min.js       one offline copy of plotly.js (from the plotly package)
    site/mathjax/            MathJax 2 (from the jupyter-server-mathjax package): math is
                             typeset in the reader's browser from these files, no CDN

Figures: lessons save plotly figures as the plotly mime type (`lintutor.plots.use_renderer`);
here each one becomes a <div> drawn by the shared plotly.js, so it zooms and hovers as in
JupyterLab, and plotly's own sliders and buttons work. An ipywidgets control needs a running
kernel: the page shows what the control showed when the lesson ran (the Output widget's
figures, from the widget state nbclient stores) and a note that the control moves only in
JupyterLab or Colab.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import html
import os
import shutil
import time

# jupyter-server-mathjax ships MathJax 2 with the STIX-Web fonts only: the page says so (else
# MathJax asks for its TeX fonts, which are not there, and shows "Math Processing Error")
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = (
    "<p class='lintutor-widget-note'><i>An interactive control was here: open this lesson in "
    "JupyterLab or Colab to move it. Shown: what it showed when the lesson ran.</i></p>"
)
WIDGET_TIMEOUT = 30  # nbclient#312: a widget cell's reply can wait for its timeout

_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  displayAlign: "center", messageStyle: "none"
});
</script>
<script src="{{ resources.lintutor_mathjax }}"></script>
<script src="plotly.min.js"></script>
<style>
  nav.lintutor { font-family: sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd; }
  nav.lintutor a { margin-right: 16px; }
</style>
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
<nav class="lintutor">{{ resources.lintutor_nav }}</nav>
{%- endblock body_header -%}
"""


def _mathjax_dir() -> str:
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise ImportError("the site needs jupyter-server-mathjax (MathJax, offline)") from err
    return os.path.join(os.path.dirname(jupyter_server_mathjax.__file__), "static")


def _cell_timeout(timeout: float):
    return lambda cell: min(timeout, WIDGET_TIMEOUT) if "widgets." in cell.source else timeout


def execute(nb, path: str, timeout: float = 300.0):
    """Run a notebook (a copy) top to bottom in a fresh kernel, in the lesson's folder, with the
    mime-type plotly renderer and text progress bars; returns the executed copy."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    env = {"LINTUTOR_PLOTLY_RENDERER": "plotly_mimetype", "LINTUTOR_PROGRESS": "text",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}  # fmt: skip
    with _environ(env):
        for attempt in (1, 2):  # one retry on a stall or a dead kernel, as the tests do
            run = copy.deepcopy(nb)
            client = NotebookClient(
                run,
                timeout=int(timeout),
                timeout_func=_cell_timeout(timeout),
                kernel_name="python3",
                resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
                coalesce_streams=True,  # a text progress bar's updates: one line, not hundreds
            )
            try:
                client.execute()
                return run
            except (CellTimeoutError, DeadKernelError):
                if attempt == 2:
                    raise


@contextlib.contextmanager
def _environ(values: dict):
    before = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def _plotly_html(fig: dict) -> str:
    import plotly.io as pio

    return pio.to_html(fig, include_plotlyjs=False, full_html=False, validate=False,
                       config={"responsive": True})  # fmt: skip


def _widget_outputs(model_id: str, state: dict, seen=None) -> list[dict]:
    """The outputs an ipywidgets view showed: those of every Output widget inside it."""
    seen = seen if seen is not None else set()
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    model = state[model_id]
    st = model.get("state", {})
    if model.get("model_name") == "OutputModel":
        return list(st.get("outputs", []))
    out = []
    for child in st.get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            out += _widget_outputs(child[len("IPY_MODEL_") :], state, seen)
    return out


def static_outputs(nb) -> dict:
    """Rewrite outputs for a static page, in place: plotly figures as HTML for the shared
    plotly.js, widget views as what they showed plus a note; drop the widget state. Returns
    {"figures": n, "widgets": n}."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    counts = {"figures": 0, "widgets": 0}

    def convert(output) -> list:
        data = output.get("data", {})
        if PLOTLY_MIME in data:
            counts["figures"] += 1
            output["data"] = {"text/html": _plotly_html(data[PLOTLY_MIME])}
            return [output]
        if WIDGET_VIEW in data:
            counts["widgets"] += 1
            shown = _widget_outputs(data[WIDGET_VIEW].get("model_id", ""), state)
            note = {"output_type": "display_data", "metadata": {},
                    "data": {"text/html": WIDGET_NOTE}}  # fmt: skip
            out = [note]
            for inner in shown:
                out += convert(copy.deepcopy(inner))
            return out
        return [output]

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new = []
        for output in cell.get("outputs", []):
            new += convert(output)
        cell.outputs = [_as_node(o) for o in new]
    nb.metadata.pop("widgets", None)
    return counts


def _as_node(output):
    import nbformat

    return output if isinstance(output, nbformat.NotebookNode) else nbformat.from_dict(output)


def _exporter():
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"lintutor_site.html.j2": _TEMPLATE})],
    )
    exporter.template_file = "lintutor_site.html.j2"
    return exporter


def _nav(lessons: list[dict], i: int) -> str:
    parts = ["<a href='index.html'>lintutor: all lessons</a>"]
    if i > 0:
        prev = lessons[i - 1]
        parts.append(f"<a href='{prev['page']}'>&larr; {html.escape(prev['title'])}</a>")
    if i + 1 < len(lessons):
        nxt = lessons[i + 1]
        parts.append(f"<a href='{nxt['page']}'>{html.escape(nxt['title'])} &rarr;</a>")
    return "".join(parts)


def _index(lessons: list[dict], solved: bool) -> str:
    from lintutor import __version__

    rows = []
    for le in lessons:
        ex = f"{le['exercises']} (about {le['minutes']} min)" if le["exercises"] else "none"
        runs = "GPU with Triton, or Triton's CPU interpreter" if le["triton"] else "any CPU"
        rows.append(
            f"<tr><td>{le['number']}</td><td><a href='{le['page']}'>"
            f"{html.escape(le['title'])}</a></td><td>{ex}</td><td>{runs}</td>"
            f"<td>{le['seconds']:.0f} s</td></tr>"
        )
    when = datetime.date.today().isoformat()
    mode = "with the reference solutions filled in" if solved else "as committed (unsolved)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>lintutor: linear attention, step by step</title>
<style>
body {{ font-family: sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; }}
</style></head>
<body>
<h1>lintutor: linear attention, step by step</h1>
<p>An interactive course on linear attention. These pages are the lessons as they ran
({mode}) when this site was built with lintutor {__version__} on {when}: read them here; to
write the exercises and move the controls, open the lessons in JupyterLab or Colab.</p>
<table>
<thead><tr><th>#</th><th>lesson</th><th>exercises</th><th>runs on</th><th>ran in</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""


def build(out: str = "site", lessons=None, solved: bool = True, timeout: float = 300.0,
          say=print) -> str:  # fmt: skip
    """Execute the lessons (numbers in `lessons`, default all) and write the site to `out`;
    returns the index's path. A lesson whose cell raises stops the build with that error."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    from lintutor.course.doctor import lessons as lesson_table
    from lintutor.course.notebook import solved as solved_copy
    from lintutor.course.workspace import course_lessons

    mathjax = _mathjax_dir()
    chosen = course_lessons()
    if lessons:
        wanted = {f"{int(n):02d}" for n in lessons}
        chosen = [p for p in chosen if os.path.basename(p)[:2] in wanted]
        if not chosen:
            raise RuntimeError(f"no lesson matches {' '.join(lessons)}")
    table = {le["path"]: le for le in lesson_table(os.path.dirname(chosen[0]))} if chosen else {}
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    import plotly.offline

    with open(os.path.join(out, "plotly.min.js"), "w", encoding="utf-8") as f:
        f.write(plotly.offline.get_plotlyjs())
    if not os.path.isdir(os.path.join(out, "mathjax")):
        shutil.copytree(mathjax, os.path.join(out, "mathjax"))

    pages = []
    for path in chosen:
        le = dict(table.get(path) or {"number": os.path.basename(path)[:2], "triton": False,
                                      "title": os.path.basename(path), "exercises": 0,
                                      "minutes": 0})  # fmt: skip
        le["page"] = os.path.basename(path).removesuffix(".ipynb") + ".html"
        le["path"] = path
        pages.append(le)
    exporter = _exporter()
    for i, le in enumerate(pages):
        nb = nbformat.read(le["path"], as_version=4)
        if solved:
            nb = solved_copy(nb)
        t0 = time.perf_counter()
        try:
            nb = execute(nb, le["path"], timeout=timeout)
        except CellExecutionError as err:
            raise RuntimeError(f"{os.path.basename(le['path'])} does not run:\n{err}") from None
        le["seconds"] = time.perf_counter() - t0
        counts = static_outputs(nb)
        nb.metadata["title"] = f"{le['number']} {le['title']}"
        resources = {"lintutor_nav": _nav(pages, i),
                     "lintutor_mathjax": f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"}  # fmt: skip
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        with open(os.path.join(out, le["page"]), "w", encoding="utf-8") as f:
            f.write(body)
        say(f"{le['page']}: ran in {le['seconds']:.0f} s, {counts['figures']} figure(s), "
            f"{counts['widgets']} control(s)")  # fmt: skip
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(_index(pages, solved))
    return index
