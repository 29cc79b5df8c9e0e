"""Notebook plumbing: the Colab set-up cell, finding exercise cells, the solved version of a
lesson, where the lessons are, and `setup_notebook()` that every lesson calls once (it also
watches the exercise cells, so that a check can say its cell failed: `watch_exercise_cells`).

Convention (tests/course/test_notebooks.py enforces it): cell 0 is `COLAB_SETUP`; cell 1, tagged
`imports`, imports what the lesson needs; an exercise is a code cell tagged `exercise:ID` that
defines one function and raises NotImplementedError, followed by a cell that calls
`check("ID", function)`. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import copy
import os
import re

# The course's address is set once, in pyproject.toml ([project.urls] Repository); this is the
# same address for a copy of the package whose metadata cannot be read (tests/course/test_setup.py
# keeps the two equal).
_REPOSITORY = "https://github.com/lintutor/lintutor"


def _repository_url() -> str:
    from importlib import metadata

    try:
        for entry in metadata.metadata("lintutor").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() == "repository" and url.strip():
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    return _REPOSITORY


def _version() -> str:
    from lintutor import __version__

    return __version__


REPO_URL = _repository_url()

# Cell 0 of every lesson (`python -m lintutor.course.notebook --sync-setup-cells` writes it into
# each notebook). On Colab it installs the course at the version of the notebook that was opened
# (the tag v<version>), or whatever $LINTUTOR_SOURCE names (a wheel, a URL: the tests install
# a wheel they built); it never replaces Colab's torch, numpy or widgets.
_COLAB_TEMPLATE = r"""
# Set-up. Locally this does nothing. On Colab it installs lintutor @VERSION@, the version of
# this notebook, without its dependencies (Colab's own torch, numpy and widgets stay as they
# are), then only what Colab lacks (triton, on a CPU runtime).
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys

if importlib.util.find_spec("lintutor") is None:
    if "google.colab" not in sys.modules:
        raise ModuleNotFoundError("lintutor is not installed: see the README's quick start")

    def pip_install(*args):
        run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(
                f"Could not install {args[-1]}: pip says\n{run.stderr.strip()[-1500:]}\n"
                "Is this runtime online, and does the course have the release v@VERSION@? "
                "To install another version, set os.environ['LINTUTOR_SOURCE'] (for example "
                "to 'git+@REPO@@main') and run this cell again."
            ) from None

    source = os.environ.get("LINTUTOR_SOURCE", "git+@REPO@@v@VERSION@")
    pip_install("--no-deps", source)
    importlib.invalidate_caches()
    for req in importlib.metadata.requires("lintutor") or []:
        name = re.match(r"[A-Za-z0-9._-]+", req).group()
        if "extra ==" in req or name == "torch":
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pip_install(req.split(";")[0])
    importlib.invalidate_caches()"""

COLAB_SETUP = _COLAB_TEMPLATE.strip().replace("@VERSION@", _version()).replace("@REPO@", REPO_URL)

EXERCISE_TAG = "exercise:"


def setup_notebook(seed: int = 0, threads: int | None = None) -> None:
    """Once per lesson: plotly renderer for this front end, a fixed seed, sane CPU threads, and
    a watch on the exercise cells (so a check can say that its exercise cell failed)."""
    import torch

    from lintutor.plots import use_renderer

    use_renderer()
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    watch_exercise_cells()


_DEF = re.compile(r"^(?:async[ \t]+)?def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.M)
_CELL_RUNS: dict[str, dict] = {}  # exercise function name -> its cell's last run
_UNBOUND = object()


def watch_exercise_cells(ip=None) -> bool:
    """In IPython, remember for each cell that defines an exercise's function (a top-level
    `def NAME(`) how its last run went: a SyntaxError, or an exception before the function was
    (re)defined, makes `check` report the cell's error instead of checking the function left
    over from an earlier run. Registers pre/post_run_cell hooks once; False outside IPython."""
    if ip is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        ip = get_ipython()
    if ip is None:
        return False
    if getattr(ip, "_lintutor_watches_cells", False):
        return True
    from lintutor.course.exercises import all_exercises

    names = {ex.name for ex in all_exercises().values()}
    before: dict[str, object] = {}

    def defined_here(source) -> set[str]:
        return set(_DEF.findall(source or "")) & names

    def pre_run_cell(info=None):
        before.clear()
        for name in defined_here(getattr(info, "raw_cell", "")):
            before[name] = ip.user_ns.get(name, _UNBOUND)

    def post_run_cell(result):
        info = getattr(result, "info", None)
        err = result.error_before_exec or result.error_in_exec
        for name in defined_here(getattr(info, "raw_cell", "")):
            now = ip.user_ns.get(name, _UNBOUND)
            _CELL_RUNS[name] = {
                "error": _describe_cell_error(err) if err else None,
                "defined": now is not before.get(name, _UNBOUND),
                "left": now,  # the function the failed run left behind (an older one)
            }

    ip.events.register("pre_run_cell", pre_run_cell)
    ip.events.register("post_run_cell", post_run_cell)
    ip._lintutor_watches_cells = True
    return True


def _describe_cell_error(err: BaseException) -> str:
    if isinstance(err, SyntaxError):
        text = (err.text or "").strip()
        where = f" (line {err.lineno} of the cell)" if err.lineno else ""
        return f"{type(err).__name__}: {err.msg}{where}" + (f":  {text}" if text else "")
    from lintutor.course.checker import format_learner_exception

    return format_learner_exception(err)


def last_cell_run(name: str) -> dict | None:
    """{"error": text or None, "defined": bool, "left": the function bound to `name` after it}
    for the last run of the cell defining `name` in this IPython session (None outside IPython,
    or when no such cell ran under `watch_exercise_cells`)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return _CELL_RUNS.get(name) if get_ipython() is not None else None


def show(obj, title: str | None = None) -> None:
    """Show the package's version of a function or class ("compare with yours"), after its
    exercise's check: highlighted in a notebook, plain text elsewhere."""
    import inspect
    import textwrap

    src = textwrap.dedent(inspect.getsource(obj))
    where = f"{obj.__module__}.{obj.__qualname__}"
    header = title or f"The package's version, {where} (compare with yours):"
    try:
        from IPython import get_ipython
        from IPython.display import Code, Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"**{header}**"), Code(src, language="python"))
            return
    except ImportError:
        pass
    print(header + "\n\n" + src)


def exercise_cells(nb) -> list[tuple[str, int]]:
    """[(exercise id, cell index)] for every cell tagged `exercise:ID`."""
    out = []
    for i, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag.startswith(EXERCISE_TAG):
                out.append((tag[len(EXERCISE_TAG) :], i))
    return out


def solved(nb):
    """A copy of the notebook with every exercise cell replaced by the reference solution."""
    from lintutor.course.exercises import get, solution

    nb = copy.deepcopy(nb)
    for ex_id, i in exercise_cells(nb):
        nb.cells[i].source = solution(ex_id, get(ex_id).name)
    return nb


def lesson_dirs() -> list[str]:
    """Where the course's own lessons are: the checkout's notebooks/ beside the package (an
    editable install), then the copy inside an installed package. Learners work on copies in
    their workspace (`lintutor.course.workspace`), never here."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lintutor/
    return [
        os.path.join(os.path.dirname(package), "notebooks"),
        os.path.join(package, "_notebooks"),
    ]


def find_lesson(name: str, workspace: str | None = None) -> str:
    """The notebook to grade: a path as given, or for a lesson number ("01") or name
    ("01_softmax_attention") the learner's copy in the workspace (`workspace`, default
    $LINTUTOR_HOME or ~/lintutor-lessons), exactly the course's file name (never a JupyterLab
    "-Copy1" duplicate, never the course's untouched original). FileNotFoundError says why."""
    if os.path.isfile(name):
        return os.path.abspath(name)
    from lintutor.course.workspace import Workspace

    return Workspace(workspace).lesson(name)


def sync_setup_cells(paths=None) -> list[str]:
    """Make cell 0 of each lesson (default: the course's notebooks) exactly COLAB_SETUP, keeping
    the cell's id and metadata; returns the paths it changed."""
    import nbformat

    from lintutor.course.workspace import course_lessons

    changed = []
    for path in paths or course_lessons():
        nb = nbformat.read(path, as_version=4)
        if nb.cells and nb.cells[0].cell_type == "code" and nb.cells[0].source != COLAB_SETUP:
            nb.cells[0].source = COLAB_SETUP
            nbformat.write(nb, path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    import argparse

    _p = argparse.ArgumentParser(prog="python -m lintutor.course.notebook")
    _p.add_argument(
        "--sync-setup-cells",
        action="store_true",
        help="write COLAB_SETUP into cell 0 of every lesson (or of the given paths)",
    )
    _p.add_argument("paths", nargs="*")  # fmt: skip
    _args = _p.parse_args()
    if _args.sync_setup_cells:
        for _path in sync_setup_cells(_args.paths or None):
            print(f"cell 0 updated: {_path}")
