"""The package's layout holds: every module imports on its own, module-level imports form no
cycle, no import crosses a band the wrong way (lesson code and models < experiments < course),
importing a mechanism loads no tutor code, and every module with a main answers --help."""

import ast
import os
import pkgutil
import subprocess
import sys

import pytest

import lintutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(lintutor.__file__)
MODULES = sorted(
    ["lintutor"] + [m.name for m in pkgutil.walk_packages(lintutor.__path__, "lintutor.")]
)


def _path(module):
    rel = module.split(".")[1:]
    folder = os.path.join(PACKAGE, *rel)
    return os.path.join(folder, "__init__.py") if os.path.isdir(folder) else folder + ".py"


def _imports(module, top_level_only):
    """The lintutor modules that `module` imports: when it is imported (not inside functions),
    or anywhere in it."""
    found = []

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # runs when called, not at import
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(ast.parse(open(_path(module)).read()))
    out = set()
    for node in found:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m in MODULES and m != module}


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of lintutor modules (one interpreter)."""
    script = (
        "import importlib, sys\n"
        f"failed = []\nfor m in {MODULES!r}:\n"
        "    for name in [n for n in sys.modules if n.split('.')[0] == 'lintutor']:\n"
        "        del sys.modules[name]\n"
        "    try:\n        importlib.import_module(m)\n"
        "    except Exception as err:\n        failed.append(f'{m}: {type(err).__name__}: {err}')\n"
        "print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_module_level_imports_form_no_cycle():
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_the_forward_kernels_never_import_the_backward():
    assert "lintutor.kernels.chunked_bwd" not in _imports("lintutor.kernels.chunked", False)
    assert "lintutor.kernels.causal" not in _imports("lintutor.kernels.chunked", False)
    assert "lintutor.kernels.causal" not in _imports("lintutor.kernels.chunked_bwd", False)


def _band(module):
    if module.startswith("lintutor.course"):
        return 2
    if module.startswith("lintutor.experiments"):
        return 1
    return 0  # lesson code, models, data, plots: everything else


@pytest.mark.parametrize("module", MODULES)
def test_no_import_crosses_a_band_the_wrong_way(module):
    upward = {m for m in _imports(module, top_level_only=False) if _band(m) > _band(module)}
    assert not upward, f"{module} imports {sorted(upward)} from a band above it"


def test_importing_a_mechanism_loads_no_tutor_code():
    script = (
        "import sys\nimport lintutor.causal, lintutor.gated, lintutor.models, lintutor.kernels\n"
        "assert 'lintutor.course' not in sys.modules, 'tutor code loaded'\n"
        "assert not [m for m in sys.modules if m.startswith('lintutor.experiments')]\n"
        "import lintutor\nassert callable(lintutor.check) and callable(lintutor.setup_notebook)\n"
        "assert 'lintutor.course' in sys.modules\n"
        "from lintutor import check, hint, solution\nprint('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lintutor.nothing  # noqa: B018


MAINS = [m for m in MODULES if "__main__" in open(_path(m)).read() and m != "lintutor"]


def test_the_experiments_and_the_command_have_a_main():
    for m in ("kernel_bench", "lm_curves", "mlla_ablation"):
        assert f"lintutor.experiments.{m}" in MAINS
    assert "lintutor.course.cli" in MAINS


@pytest.mark.parametrize("module", MAINS)
def test_main_answers_help(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]


def test_every_causal_mask_comes_from_the_one_helper():
    """In the package (the tutor's exercises aside: their wrong answers are written as a learner
    would), a boolean causal mask is built by softmax.causal_mask only, not torch.ones(...).tril()
    by hand, so every mechanism means the same thing by "s <= t"."""
    import re

    built = re.compile(r"torch\.(ones|full|ones_like)\([^\n]*bool[^\n]*\)\s*\.(tril|triu)")
    found = []
    for module in MODULES:
        if module.startswith("lintutor.course"):
            continue
        path = _path(module)
        for n, line in enumerate(open(path), 1):
            if built.search(line) and not path.endswith(os.path.join("lintutor", "softmax.py")):
                found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert found == [], "\n".join(found)
