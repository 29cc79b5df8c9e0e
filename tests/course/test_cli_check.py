"""`lintutor check` on hostile notebooks: the exercise cells run in a child process with a hard
time limit, so an exit, an endless loop or a dead process is reported (exit status 1, with
output) and the other exercises are still graded."""

import os
import subprocess
import sys

import nbformat

from lintutor.course.notebook import exercise_cells, solved

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON01 = os.path.join(ROOT, "notebooks", "01_softmax_attention.ipynb")


def _notebook(tmp_path, sources):
    """Lesson 01 solved, with the exercise cells in `sources` ({exercise id: source}) replaced."""
    nb = solved(nbformat.read(LESSON01, as_version=4))
    for ex_id, i in exercise_cells(nb):
        if ex_id in sources:
            nb.cells[i].source = sources[ex_id]
    path = tmp_path / "01_hostile.ipynb"
    nbformat.write(nb, path)
    return str(path)


def _check(path):
    env = dict(os.environ, LINTUTOR_CELL_TIMEOUT="3")
    proc = subprocess.run(
        [sys.executable, "-m", "lintutor.course.cli", "check", path],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    return proc, proc.stdout + proc.stderr


def test_a_cell_that_loops_exits_or_ends_the_process_is_reported(tmp_path):
    path = _notebook(
        tmp_path,
        {
            "01.1": "while True:  # at the top of the cell\n    pass\n",
            "01.2": "import sys\ndef softmax_attention(q, k, v, causal=False):\n    sys.exit(0)\n",
            "01.3": "import os\nos._exit(0)\n",
        },
    )
    proc, out = _check(path)
    assert proc.returncode == 1, out
    assert "0 of 3 exercises pass" in proc.stdout, out
    assert "did not finish in 3 s" in proc.stdout, out  # 01.1: killed at the cell limit
    assert "raised SystemExit" in proc.stdout, out  # 01.2: a verdict, not an exit 0
    assert "ended the process" in proc.stdout, out  # 01.3: the child died, the rest went on


def test_an_exit_at_the_top_and_a_loop_that_catches_everything_are_reported(tmp_path):
    path = _notebook(
        tmp_path,
        {
            "01.1": "import sys\nsys.exit(0)\ndef attention_one_query(q, k, v):\n    return q\n",
            "01.2": "def softmax_attention(q, k, v, causal=False):\n    while True:\n        try:\n"
            "            while True:\n                pass\n        except BaseException:\n"
            "            pass\n",
        },
    )
    proc, out = _check(path)
    assert proc.returncode == 1, out
    assert "1 of 3 exercises pass" in proc.stdout, out
    assert "does not run" in proc.stdout and "SystemExit" in proc.stdout, out
    assert "stopped after" in proc.stdout, out
