"""Notebook plumbing: the Colab set-up cell, finding exercise cells, the solved version of a
lesson, where the lessons are, and `setup_notebook()` that every lesson calls once.

Convention (tests/course/test_notebooks.py enforces it): cell 0 is `COLAB_SETUP`; cell 1, tagged
`imports`, imports what the lesson needs; an exercise is a code cell tagged `exercise:ID` that
defines one function and raises NotImplementedError, followed by a cell that calls
`check("ID", function)`. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import copy
import glob
import os

REPO_URL = "https://github.com/lintutor/lintutor"

COLAB_SETUP = f"""# Set-up. Locally this does nothing. On Colab it installs lintutor without its
# dependencies, so Colab's own torch, numpy and widgets stay as they are (einops is added if
# missing).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("lintutor") is None:
    if "google.colab" not in sys.modules:
        raise ModuleNotFoundError("lintutor is not installed: see README.md (pip install -e .)")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", "git+{REPO_URL}"], check=True)
    if importlib.util.find_spec("einops") is None:
        subprocess.run([*pip, "einops"], check=True)"""

EXERCISE_TAG = "exercise:"


def setup_notebook(seed: int = 0, threads: int | None = None) -> None:
    """Once per lesson: plotly renderer for this front end, a fixed seed, sane CPU threads."""
    import torch

    from lintutor.plots import use_renderer

    use_renderer()
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)


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
    """Where lessons may be: ./notebooks, the repository next to the package, the installed copy."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lintutor/
    return [
        os.path.join(os.getcwd(), "notebooks"),
        os.path.join(os.path.dirname(package), "notebooks"),
        os.path.join(package, "_notebooks"),
    ]


def find_lesson(name: str) -> str:
    """A notebook path from a path, a lesson number ("01") or a name ("01_softmax_attention")."""
    if os.path.isfile(name):
        return name
    key = name.removesuffix(".ipynb")
    for d in lesson_dirs():
        hits = sorted(glob.glob(os.path.join(d, f"{key}*.ipynb")))
        if key.isdigit():
            hits = sorted(glob.glob(os.path.join(d, f"{int(key):02d}_*.ipynb")))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no lesson notebook matches {name!r} (looked in {lesson_dirs()})")
