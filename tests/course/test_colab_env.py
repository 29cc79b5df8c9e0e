"""Every lesson in the versions Colab ships, installed the way Colab's first cell installs it.

A fresh virtual environment gets Colab's versions of what the lessons use (no JupyterLab), a
stand-in `google.colab` module that the kernel imports at start (as Colab's kernel does), and
no lintutor. A notebook holding only cell 0 (COLAB_SETUP) then installs lintutor from a wheel
built here from this checkout ($LINTUTOR_SOURCE; on Colab: the release tag), and the test
checks that Colab's own packages are untouched. Then every lesson runs top to bottom there,
unsolved, with nbclient, each check reporting "not attempted", and its figures drawn by the
"colab" renderer (small outputs, no plotly.js inside the notebook).

Colab's versions: googlecolab/backend-info, pip-freeze.txt at its 2026-08-19 commit (the CPU
runtime; the GPU runtime's triton 3.6.0 is added so that lesson 08 runs in Triton's
interpreter). Two differences, because only these lie on this machine's disk: Python 3.11
(Colab: 3.13) and torch 2.13.0+cpu (Colab: 2.11.0+cpu; PyPI's torch for Linux is a CUDA build
of several GB).

The environment is built once per test session and shared by the xdist workers (a file lock).
"""

import glob
import json
import os
import subprocess
import sys
import time

import nbformat
import pytest
from filelock import FileLock
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from lintutor.course.notebook import COLAB_SETUP, exercise_cells

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb")))
TIMINGS = os.path.join(ROOT, ".pytest_cache", "colab_times.jsonl")

COLAB = {  # Colab's pip-freeze.txt, 2026-08-19
    "numpy": "2.1.3",
    "plotly": "5.24.1",
    "ipywidgets": "7.7.1",
    "widgetsnbextension": "3.6.10",
    "ipykernel": "6.17.1",
    "ipython": "7.34.0",
    "jupyter_client": "7.4.9",
    "traitlets": "5.7.1",
    "tornado": "6.5.7",
    "tqdm": "4.67.3",
    "nbformat": "5.11.1",
    "scikit-learn": "1.6.1",
    "triton": "3.6.0",  # the GPU runtime's
}
TORCH = "2.13.0"  # Colab: 2.11.0 (see the module docstring)
CELL_TIMEOUT, WIDGET_TIMEOUT = 120, 30  # as tests/course/test_notebooks.py (nbclient#312)
COLAB_MODULE = '"""A stand-in for Colab\'s google.colab module (lintutor\'s tests)."""\n'


def _sh(*cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build(root):
    """The environment under `root` (once): a venv with Colab's versions, a wheel of this
    checkout, a kernel spec, an IPython start-up file that imports google.colab."""
    t0 = time.perf_counter()
    venv = os.path.join(root, "venv")
    py = os.path.join(venv, "bin", "python")
    _sh(sys.executable, "-m", "venv", venv)
    pins = [f"torch=={TORCH}", *[f"{k}=={v}" for k, v in COLAB.items()]]
    _sh(py, "-m", "pip", "install", "-q", "--no-compile", *pins)  # no .pyc: a minute less
    site = _sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    os.makedirs(os.path.join(site, "google", "colab"))
    with open(os.path.join(site, "google", "colab", "__init__.py"), "w") as f:
        f.write(COLAB_MODULE)
    wheels = os.path.join(root, "wheel")
    _sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT)
    (wheel,) = glob.glob(os.path.join(wheels, "lintutor-*.whl"))
    ipython = os.path.join(root, "ipython")
    os.makedirs(os.path.join(ipython, "profile_default", "startup"))
    with open(os.path.join(ipython, "profile_default", "startup", "00-colab.py"), "w") as f:
        f.write("import google.colab  # Colab's kernel imports it at start\n")
    spec = os.path.join(root, "share", "jupyter", "kernels", "lintutor-colab")
    os.makedirs(spec)
    with open(os.path.join(spec, "kernel.json"), "w") as f:
        json.dump({"argv": [py, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "Colab's versions", "language": "python",
                   "env": {"IPYTHONDIR": ipython, "LINTUTOR_SOURCE": wheel}}, f)  # fmt: skip
    return {"python": py, "wheel": wheel, "jupyter_path": os.path.join(root, "share", "jupyter"),
            "build_s": time.perf_counter() - t0}  # fmt: skip


def _run(nb, env, cwd, log=None):
    """Execute `nb` on the Colab kernel; one retry on a stall or a dead kernel."""
    saved = dict(os.environ)
    os.environ["JUPYTER_PATH"] = env["jupyter_path"]
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if log:
        os.environ["LINTUTOR_CHECK_LOG"] = log
    try:
        for attempt in (1, 2):
            if log and os.path.exists(log):
                os.remove(log)
            run = nbformat.from_dict(json.loads(json.dumps(nb)))
            client = NotebookClient(
                run, timeout=CELL_TIMEOUT, kernel_name="lintutor-colab",
                timeout_func=lambda c: WIDGET_TIMEOUT if "widgets." in c.source else CELL_TIMEOUT,
                resources={"metadata": {"path": cwd}},
            )  # fmt: skip
            try:
                client.execute()
                return run
            except (CellTimeoutError, DeadKernelError):
                if attempt == 2:
                    raise
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _versions(py):
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            f"{sorted([*COLAB, 'torch', 'lintutor'])!r}}}))")  # fmt: skip
    return json.loads(_sh(py, "-c", code).strip().splitlines()[-1])


@pytest.fixture(scope="session")
def colab(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this run's folder, the same for every xdist worker
    root = shared / "colab-env"
    with FileLock(str(shared / "colab-env.lock")):
        done = root / "ready.json"
        if not done.exists():
            if root.exists():
                pytest.fail(f"an earlier attempt to build {root} failed (see its first error)")
            root.mkdir()
            env = _build(str(root))
            # cell 0 as Colab runs it: lintutor is not installed yet, google.colab is loaded
            setup = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(COLAB_SETUP)])
            t0 = time.perf_counter()
            ran = _run(setup, env, str(root))
            env["setup_s"] = time.perf_counter() - t0
            env["setup_outputs"] = ran.cells[0].outputs
            env["versions"] = _versions(env["python"])
            done.write_text(json.dumps(env))
        env = json.loads(done.read_text())
    print(f"Colab environment: built in {env['build_s']:.0f} s, cell 0 ran in "
          f"{env['setup_s']:.0f} s: {env['versions']}")  # fmt: skip
    return env


def test_cell_0_installs_this_lintutor_and_leaves_colabs_packages(colab):
    import lintutor

    versions = colab["versions"]
    assert versions["lintutor"] == lintutor.__version__
    assert versions["torch"].startswith(TORCH)
    for name, version in COLAB.items():
        assert versions[name] == version, f"cell 0 changed Colab's {name}"
    errors = [o for o in colab["setup_outputs"] if o.get("output_type") == "error"]
    assert not errors, errors


def _ids(paths):
    return [os.path.basename(p).removesuffix(".ipynb") for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_lesson_runs_with_colabs_versions(path, colab, tmp_path):
    nb = nbformat.read(path, as_version=4)
    log = str(tmp_path / "checks.jsonl")
    t0 = time.perf_counter()
    ran = _run(nb, colab, os.path.dirname(path), log=log)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(TIMINGS), exist_ok=True)
    with open(TIMINGS, "a") as f:
        f.write(json.dumps({"notebook": os.path.basename(path), "s": seconds}) + "\n")
    print(f"{os.path.basename(path)} ran in {seconds:.1f} s with Colab's versions")
    lesson = os.path.basename(path)[:2]
    with open(log) if os.path.exists(log) else open(os.devnull) as f:
        results = [json.loads(line) for line in f]
    results = [r for r in results if r["exercise"].startswith(lesson + ".")]
    assert [r["exercise"] for r in results] == [e for e, _ in exercise_cells(nb)]
    assert all(r["status"] == "not attempted" for r in results), results
    for i, cell in enumerate(ran.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            assert "application/vnd.plotly.v1+json" not in data, f"cell {i}: not Colab's renderer"
            html = data.get("text/html", "")
            if "Plotly.newPlot" in html:
                assert len(html) < 1_000_000, f"cell {i}: plotly.js inside the notebook"
