"""Every lesson in JupyterLab, in a real browser, as a learner opens it.

`lintutor lab` starts JupyterLab on a free local port with a token, on a fresh workspace;
Debian's Chromium (/usr/bin/chromium: `.ci/run` installs it with apt-get when it is missing),
driven by Playwright from PyPI with that system browser (never `playwright install`), opens
each lesson, runs all cells, and checks what the learner sees: no error output; every plotly
figure drawn (its SVG exists); moving one ipywidgets control changes what is shown; every
check's verdict rendered; LaTeX typeset by MathJax (and no MathJax error). One screenshot per
lesson goes to .pytest_cache/screenshots/NN_name.png. Without a browser the tests skip and
say why.

JupyterLab runs with `--expose-app-in-browser` (so the test can run all cells and read the
notebook model) and with the notebook's windowing off (every cell stays in the page).
"""

import contextlib
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb")))
SCREENSHOTS = os.path.join(ROOT, ".pytest_cache", "screenshots")
TIMINGS = os.path.join(ROOT, ".pytest_cache", "browser_times.jsonl")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]  # fmt: skip  (headless comes from headless=True)
RUN_ALL_TIMEOUT = 600  # seconds for one lesson's "Run All" on a busy 2-core machine
VERDICT = re.compile(r"(PASS|FAIL|NOT ATTEMPTED) \d\d\.\d+")
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },  # fmt: skip
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
}


def chromium_or_skip():
    """Skip, saying why, when there is no browser to drive."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (.ci/run installs Debian's chromium "
                    "with apt-get when it can: see its output)")  # fmt: skip
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (it is in the test extra)")


@contextlib.contextmanager
def browser_context(profile):
    """A Chromium context with a fresh profile folder (--user-data-dir)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab through `lintutor lab`, and a browser; both end with the session."""
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), "lintutor-test-token"
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        OMP_NUM_THREADS="1",
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.pop("LINTUTOR_CHECK_LOG", None)  # fmt: skip
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lintutor.course.cli", "lab", "--dir", str(tmp / "ws"),
         "--no-browser", "--port", str(port), "--ip", "127.0.0.1", "--",
         f"--IdentityProvider.token={token}", "--expose-app-in-browser"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "JupyterLab did not start:\n" + (tmp / "jupyterlab.log").read_text()
                    )
                time.sleep(1)
        with browser_context(tmp / "profile") as context:
            yield {"base": base, "token": token, "context": context, "ws": tmp / "ws"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


_CELLS_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return nb.widgets.map((cell, i) => {
    const m = cell.model, node = cell.node;
    const outputs = [];
    if (m.type === 'code') {
      for (let j = 0; j < m.outputs.length; j++) {
        const o = m.outputs.get(j);
        outputs.push({type: o.type, mimes: Object.keys(o.data || {}),
                      error: o.type === 'error' ? JSON.stringify(o.toJSON()).slice(0, 3000) : ''});
      }
    }
    const area = node.querySelector('.jp-Cell-outputArea');
    const plots = [...node.querySelectorAll('.js-plotly-plot')];
    return {i, type: m.type, source: m.sharedModel.getSource(), outputs,
            count: m.type === 'code' ? m.executionCount : null,
            plots: plots.length, drawn: plots.filter(p => p.querySelector('svg.main-svg')).length,
            math: node.querySelectorAll('mjx-container').length,
            mathErrors: node.querySelectorAll('mjx-merror, .MathJax_Error').length,
            controls: node.querySelectorAll('.widget-dropdown select, .widget-slider').length,
            text: area ? area.innerText.slice(0, 5000) : ''};
  });
}"""


def _open(page, lab, name):
    # a workspace of its own, reset: JupyterLab would otherwise reopen the earlier lessons
    stem = name.removesuffix(".ipynb")
    page.goto(f"{lab['base']}/lab/workspaces/{stem}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_function(
        "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.context && w.context.path === name && w.sessionContext"
        " && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle' && w.content.widgets.length > 0; }",
        arg=name,
        timeout=180_000,
    )


def _move_a_control(page, cells):
    """Move the first dropdown or slider of the first cell that has one; returns its index and
    whether what the cell shows changed."""
    for c in cells:
        if c["type"] != "code" or not c["controls"]:
            continue
        cell = page.locator(".jp-Notebook .jp-Cell").nth(c["i"])
        shown = cell.locator(".widget-output").first
        shown.scroll_into_view_if_needed()
        before = shown.inner_html()
        select = cell.locator(".widget-dropdown select")
        if select.count():
            options = select.first.locator("option").all_inner_texts()
            current = select.first.input_value()
            values = [o for o in select.first.locator("option").evaluate_all(
                "os => os.map(o => o.value)") if o != current]  # fmt: skip
            assert values, f"cell {c['i']}: a dropdown with one option ({options})"
            select.first.select_option(values[0])
        else:
            handle = cell.locator(".widget-slider .noUi-handle, .widget-slider input").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            after = shown.inner_html()
            if after and after != before:
                return c["i"], True
        return c["i"], False
    return None, None


def _ids(paths):
    return [os.path.basename(p).removesuffix(".ipynb") for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_lesson_in_jupyterlab(path, lab):
    name = os.path.basename(path)
    page = lab["context"].new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    t0 = time.perf_counter()
    try:
        _open(page, lab, name)
        page.evaluate(
            "() => { window.__ran = undefined; window.jupyterapp.commands"
            ".execute('notebook:run-all-cells').then(r => { window.__ran = r; }); }"
        )
        page.wait_for_function("() => window.__ran !== undefined", timeout=RUN_ALL_TIMEOUT * 1000,
                               polling=1000)  # fmt: skip
        # let the last outputs, figures and math render
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')]"
            ".every(p => p.querySelector('svg.main-svg'))",
            timeout=60_000,
            polling=500,
        )
        time.sleep(2)
        cells = page.evaluate(_CELLS_JS)
        moved, changed = _move_a_control(page, cells)
        os.makedirs(SCREENSHOTS, exist_ok=True)
        shot = os.path.join(SCREENSHOTS, name.removesuffix(".ipynb") + ".png")
        with open(shot.removesuffix(".png") + ".json", "w") as f:  # what the test saw
            json.dump(cells, f, indent=1)
        target = moved if moved is not None else next(
            (c["i"] for c in cells if c["plots"]), 1)  # fmt: skip
        page.evaluate(
            f"() => {{ const n = window.jupyterapp.shell.currentWidget.content"
            f".widgets[{target}].node; (n.querySelector('.widget-vbox, .widget-box')"
            " || n.querySelector('.jp-Cell-outputArea') || n).scrollIntoView(); }"
        )
        page.wait_for_timeout(500)
        page.screenshot(path=shot)
        seconds = time.perf_counter() - t0
    finally:
        with contextlib.suppress(Exception):  # free the kernel (torch and all) for the next one
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        page.close()
    os.makedirs(os.path.dirname(TIMINGS), exist_ok=True)
    with open(TIMINGS, "a") as f:
        f.write(json.dumps({"notebook": name, "s": seconds}) + "\n")
    print(f"{name}: ran in JupyterLab in {seconds:.0f} s; screenshot {shot}")

    code = [c for c in cells if c["type"] == "code"]
    errors = [f"cell {c['i']}: {o['error']}" for c in code for o in c["outputs"]
              if o["type"] == "error"]  # fmt: skip
    assert not errors, "\n".join(errors)
    not_run = [c["i"] for c in code if c["source"].strip() and c["count"] is None]
    assert not not_run, f"cells never ran: {not_run}"
    figures = sum("application/vnd.plotly.v1+json" in o["mimes"] for c in code
                  for o in c["outputs"])  # fmt: skip
    plots = sum(c["plots"] for c in code)
    drawn = sum(c["drawn"] for c in code)
    assert plots >= figures and drawn == plots, (figures, plots, drawn)
    for c in code:
        if 'check("' in c["source"]:
            assert VERDICT.search(c["text"]), f"cell {c['i']}: no verdict shown: {c['text']!r}"
    md = [c for c in cells if c["type"] == "markdown"]
    with_math = [c for c in md if re.search(r"\$[^$\s][^$]*\$", c["source"])]
    assert all(c["math"] for c in with_math), [c["i"] for c in with_math if not c["math"]]
    assert not [c["i"] for c in md if c["mathErrors"]], "MathJax could not typeset some math"
    if moved is not None:
        assert changed, f"moving the control in cell {moved} changed nothing shown"
    # plotly's JupyterLab renderer resizes a figure on a timer; when a widget's update has
    # replaced that figure meanwhile, plotly.js throws this (nothing visible goes wrong)
    problems = [p for p in problems if "Resize must be passed a displayed plot div" not in p]
    assert not problems, f"errors in the page: {problems}"
