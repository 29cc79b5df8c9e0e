"""The `lintutor` command, run as a learner would (subprocess) or through main()."""

import os
import subprocess
import sys

import nbformat

from lintutor.course.cli import main
from lintutor.course.notebook import exercise_cells, solved

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON01 = os.path.join(ROOT, "notebooks", "01_softmax_attention.ipynb")


def _lintutor(*args):
    return subprocess.run(
        [sys.executable, "-m", "lintutor.course.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_check_unsolved_lesson_reports_not_attempted_and_fails(tmp_path):
    assert main(["update", "--dir", str(tmp_path)]) == 0  # a workspace with the lessons
    proc = _lintutor("check", "01", "--dir", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("not attempted") >= 3
    assert "0 of 3 exercises pass" in proc.stdout


def test_check_solved_notebook_passes(tmp_path):
    path = tmp_path / "01_solved.ipynb"
    nbformat.write(solved(nbformat.read(LESSON01, as_version=4)), path)
    proc = _lintutor("check", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 3 exercises pass" in proc.stdout


def test_check_names_a_wrong_answer(tmp_path, capsys):
    nb = solved(nbformat.read(LESSON01, as_version=4))
    ex_id, i = exercise_cells(nb)[0]
    nb.cells[i].source = nb.cells[i].source.replace("/ math.sqrt(q.shape[-1])", "")
    path = tmp_path / "01_wrong.ipynb"
    nbformat.write(nb, path)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "fail" in out and "2 of 3 exercises pass" in out


def test_check_reports_a_cell_that_does_not_run(tmp_path, capsys):
    nb = nbformat.read(LESSON01, as_version=4)
    _, i = exercise_cells(nb)[0]
    nb.cells[i].source = "def attention_one_query(q, k, v):\n    return undefined_name +\n"
    path = tmp_path / "01_syntax.ipynb"
    nbformat.write(nb, path)
    assert main(["check", str(path)]) == 1
    assert "does not run" in capsys.readouterr().out


def test_hint_solution_list(capsys):
    assert main(["hint", "01.2", "--level", "3"]) == 0
    assert "Hint 3/3" in capsys.readouterr().out
    assert main(["solution", "01.3"]) == 0
    out = capsys.readouterr().out
    assert "def multihead_attention(" in out and "import softmax_attention" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "01_softmax_attention.ipynb" in out and "01.3" in out
    assert main(["hint", "42.1"]) == 2


def test_doctor_reports_device_and_triton():
    proc = _lintutor("doctor")
    assert proc.returncode == 0, proc.stderr
    assert "torch" in proc.stdout and "device" in proc.stdout
    assert "triton" in proc.stdout and "What works here" in proc.stdout


def test_lab_dry_run_opens_the_lessons(capsys, tmp_path):
    assert main(["lab", "--dry-run", "--dir", str(tmp_path / "ws")]) == 0
    assert "jupyter lab" in capsys.readouterr().out
    assert not (tmp_path / "ws").exists()
