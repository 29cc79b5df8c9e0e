"""lintutor.progress: tqdm's widget bar in a notebook kernel, a text bar in a terminal, a text
bar when the notebook's widgets cannot draw one, and $LINTUTOR_PROGRESS to choose."""

import os
import subprocess
import sys
import types

from lintutor import progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _terminal(env):
    code = "from lintutor.progress import bar\nfor _ in bar(range(3), desc='steps'): pass\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **env))  # fmt: skip


def test_a_terminal_gets_a_text_bar_and_off_turns_it_off():
    shown = _terminal({"LINTUTOR_PROGRESS": "auto"})
    assert shown.returncode == 0 and "steps: 100%" in shown.stderr, shown.stderr
    off = _terminal({"LINTUTOR_PROGRESS": "off"})
    assert off.returncode == 0 and "steps" not in off.stderr + off.stdout


def test_a_notebook_without_drawable_widgets_falls_back_to_text(monkeypatch):
    def widget_bar(*args, **kwargs):
        raise ImportError("IProgress not found. Please update jupyter and ipywidgets.")

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=widget_bar))
    monkeypatch.setenv("LINTUTOR_PROGRESS", "auto")
    b = progress.bar(range(2), desc="x", disable=True)
    assert type(b).__module__ == "tqdm.std"
    b = progress.bar(range(2), desc="x")
    assert type(b).__module__ == "tqdm.std" and list(b) == [0, 1]


def test_a_notebook_kernel_gets_the_widget_bar_unless_told_text():
    import nbformat
    from nbclient import NotebookClient

    src = ("import os\nimport tqdm.notebook\nfrom lintutor.progress import bar\n"
           "kind = lambda b: 'widget' if isinstance(b, tqdm.notebook.tqdm) else 'text'\n"
           "b = bar(range(3), desc='steps')\nlist(b)\nprint(kind(b))\n"
           "os.environ['LINTUTOR_PROGRESS'] = 'text'\n"
           "c = bar(range(3), desc='text')\nlist(c)\nprint(kind(c))")  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outs = nb.cells[0].outputs
    printed = "".join(o.get("text", "") for o in outs if o.get("name") == "stdout").split()
    assert printed == ["widget", "text"], outs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)
    assert any(o.get("name") == "stderr" and "text: 100%" in o.get("text", "") for o in outs)
