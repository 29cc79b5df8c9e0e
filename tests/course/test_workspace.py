"""The learner's workspace (`lintutor lab`, `update`, `check`, `list`): lessons are copied once
and never overwritten, an update keeps a timestamped backup first, `check NN` grades the
workspace's own copy (not a JupyterLab duplicate, not the course's original) and keeps the
verdicts in progress.json, which `list` shows. `lintutor lab` passes options through, adds
--allow-root as root, stops on Ctrl-C without a traceback, and `--help` imports no torch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from lintutor.course import workspace
from lintutor.course.cli import main
from lintutor.course.notebook import exercise_cells, solved
from lintutor.course.workspace import Workspace, course_lessons

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON01 = os.path.join(ROOT, "notebooks", "01_softmax_attention.ipynb")


def _lintutor(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lintutor.course.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=dict(os.environ, **(env or {})))  # fmt: skip


def test_the_course_lessons_are_the_checkouts_notebooks():
    names = [os.path.basename(p) for p in course_lessons()]
    assert names == sorted(n for n in os.listdir(os.path.join(ROOT, "notebooks"))
                           if n.endswith(".ipynb"))  # fmt: skip


def test_lab_copies_once_and_never_overwrites(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["lab", "--dir", str(ws), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not ws.exists(), "--dry-run must copy nothing"
    assert "would copy" in out and "jupyter lab" in out and f"--ServerApp.root_dir={ws}" in out
    Workspace(str(ws)).ensure()
    names = sorted(os.listdir(ws))
    assert [n for n in names if n.endswith(".ipynb")] == [
        os.path.basename(p) for p in course_lessons()
    ]
    assert "progress.json" in names
    mine = ws / "01_softmax_attention.ipynb"
    mine.write_text("my answers")
    assert Workspace(str(ws)).ensure() == []
    assert mine.read_text() == "my answers"
    (ws / "02_kernelized_attention.ipynb").unlink()
    assert Workspace(str(ws)).ensure() == ["02_kernelized_attention.ipynb"]  # only what is missing
    assert mine.read_text() == "my answers"


def test_update_backs_up_before_replacing(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    ws.ensure()
    mine = os.path.join(ws.root, "01_softmax_attention.ipynb")
    with open(mine, "w") as f:
        f.write("my answers")
    assert ws.update(dry_run=True) == ["01_softmax_attention.ipynb"]
    assert open(mine).read() == "my answers", "a dry run changes nothing"
    assert ws.update() == ["01_softmax_attention.ipynb"]
    with open(mine, "rb") as f, open(LESSON01, "rb") as g:
        assert f.read() == g.read()
    backups = os.listdir(os.path.join(ws.root, "backups"))
    assert len(backups) == 1 and len(backups[0]) == len("20261202-141500")
    kept = os.path.join(ws.root, "backups", backups[0], "01_softmax_attention.ipynb")
    assert open(kept).read() == "my answers"
    assert ws.update() == []  # nothing differs any more: no second backup
    assert len(os.listdir(os.path.join(ws.root, "backups"))) == 1


def test_the_graded_lesson_is_the_workspace_copy_not_a_duplicate(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    with pytest.raises(FileNotFoundError, match="lintutor lab"):
        ws.lesson("01")  # no workspace yet: say how to make one, never grade the original
    ws.ensure()
    dup = os.path.join(ws.root, "01_softmax_attention-Copy1.ipynb")
    with open(dup, "w") as f:
        f.write("{}")
    for key in ("01", "1", "01_softmax_attention", "01_softmax_attention.ipynb"):
        assert ws.lesson(key) == os.path.join(ws.root, "01_softmax_attention.ipynb")
    assert ws.duplicates(ws.lesson("01")) == [dup]
    with pytest.raises(FileNotFoundError, match="no lesson matches"):
        ws.lesson("42")


def test_lab_passes_options_through_and_allows_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    argv = ["lab", "--dir", str(tmp_path), "--dry-run", "--no-browser", "--port", "8999",
            "--ip", "0.0.0.0", "--", "--ServerApp.token=abc"]  # fmt: skip
    assert main(argv) == 0
    cmd = capsys.readouterr().out.strip().splitlines()[-1].split()
    for opt in ("--no-browser", "--port=8999", "--ip=0.0.0.0", "--allow-root",
                "--ServerApp.token=abc"):  # fmt: skip
        assert opt in cmd, (opt, cmd)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", "--dir", str(tmp_path), "--dry-run", "--ServerApp.token=x"]) == 0
    cmd = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert "--allow-root" not in cmd and "--ServerApp.token=x" in cmd


def test_lab_in_a_checkout_says_where_the_work_lives(tmp_path, capsys):
    assert main(["lab", "--dir", str(tmp_path / "ws"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"Your work lives in {tmp_path / 'ws'}" in out
    assert os.path.join(ROOT, "notebooks") in out and "edit the copies" in out


def test_help_and_workspace_commands_import_no_torch(tmp_path):
    code = (
        "import sys, contextlib, io\n"
        "from lintutor.course.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        f"    main(['lab', '--dry-run', '--dir', {str(tmp_path)!r}])\n"
        f"    main(['update', '--dry-run', '--dir', {str(tmp_path)!r}])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_starts_and_ctrl_c_stops_it_without_a_traceback(tmp_path):
    port, token = _free_port(), "t0ken"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lintutor.course.cli", "lab", "--dir", str(tmp_path / "ws"),
         "--no-browser", "--port", str(port), "--ip", "127.0.0.1",
         f"--IdentityProvider.token={token}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env=dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt")), start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "JupyterLab did not start in 120 s"
                time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: to lintutor and JupyterLab
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert "Traceback" not in out, out
    assert proc.returncode == 0, out
    assert f"Your work is in {tmp_path / 'ws'}" in out
    assert os.path.exists(tmp_path / "ws" / "01_softmax_attention.ipynb")


def test_check_grades_the_workspace_copy_shows_whole_messages_and_keeps_progress(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    ws.ensure()
    nb = nbformat.read(LESSON01, as_version=4)
    good = solved(nb)
    (id1, i1), (id2, i2), _ = exercise_cells(nb)
    long = "this message is long on purpose, longer than any table column would keep " * 2
    nb.cells[i1].source = good.cells[i1].source
    nb.cells[i2].source = (
        f"def {good.cells[i2].source.split('def ', 1)[1].split('(')[0]}(*args, **kwargs):\n"
        f"    raise ValueError({long!r})\n"
    )
    nbformat.write(nb, ws.lesson("01"))
    nbformat.write(good, os.path.join(ws.root, "01_softmax_attention-Copy1.ipynb"))
    proc = _lintutor("check", "01", "--dir", ws.root)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"Grading {ws.lesson('01')} (your workspace copy)" in out
    assert "not graded: 01_softmax_attention-Copy1.ipynb" in out
    assert "1 of 3 exercises pass" in out, out
    assert "ValueError" in out and long.strip() in " ".join(out.split()), out
    progress = json.load(open(ws.progress_path))["exercises"]
    assert progress[id1]["status"] == "pass" and progress[id2]["status"] == "fail"
    assert progress[id1]["by"] == "lintutor check"
    listing = _lintutor("list", "--dir", ws.root).stdout
    assert "01_softmax_attention.ipynb" in listing and "1/3 pass" in listing, listing
    assert f"{id2:<6}" in listing and "FAIL" in listing


def test_a_check_in_a_workspace_lesson_records_progress(tmp_path, monkeypatch):
    from lintutor.course.exercises import check, get

    ws = Workspace(str(tmp_path / "ws"))
    ws.ensure()
    monkeypatch.setenv("LINTUTOR_WORKSPACE", ws.root)
    check("01.1", get("01.1").reference, show=False)
    assert ws.progress()["01.1"]["status"] == "pass"
    assert ws.progress()["01.1"]["by"] == "notebook"
    monkeypatch.delenv("LINTUTOR_WORKSPACE")
    monkeypatch.chdir(tmp_path)  # not a workspace: nothing recorded, nothing raised
    assert workspace.current() is None
    check("01.2", lambda *a, **k: None, show=False)
    assert "01.2" not in ws.progress()
