"""A fresh machine: clone the repository into a new folder and follow the README's two commands
there, in a new virtual environment, as a learner would.

One step is added before them: `pip install torch==2.13.0`, the CPU build that lies on this
machine's disk, standing for the README's CPU line (PyTorch's own index is not reachable here,
and PyPI's torch for Linux is a CUDA build of several GB). That is the README's promise under
test too: a torch already in the environment is kept. Then the lab line runs as written, with
`lintutor lab` started on a free port and stopped with Ctrl-C, and the test line installs the
test extra and runs a few of the clone's own tests (the whole suite is what CI runs with it).
"""

import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCH = "pip install -q --no-compile torch==2.13.0"


def _readme_line(title):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split(title, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    (line,) = [ln for ln in block.strip().splitlines() if not ln.startswith("#")]
    return line.strip()


def _bash(script, cwd, timeout=900):
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout, time.perf_counter() - t0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_fresh_clone_follows_the_readme(tmp_path):
    lab_line, test_line = _readme_line("### Open the lessons"), _readme_line("### Run the tests")
    *lab_install, lab_cmd = [p.strip() for p in lab_line.split(" && ")]
    *test_install, test_cmd = [p.strip() for p in test_line.split(" && ")]
    assert lab_install[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], lab_line
    assert test_install[:2] == lab_install[:2], "both lines make the venv first"
    assert lab_cmd == "lintutor lab" and test_cmd.startswith("python -m pytest")

    clone = tmp_path / "lintutor"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True, timeout=300)
    # a fresh machine's shell: no venv, no Python or pytest settings of this run (CI's JUnit
    # report, xdist's worker ids)
    env_vars = {k: v for k, v in os.environ.items()
                if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PYTEST"))}  # fmt: skip
    path = [p for p in env_vars.get("PATH", "").split(os.pathsep)
            if not p.startswith(os.path.join(ROOT, ".venv"))]  # fmt: skip
    # PIP_NO_COMPILE: no .pyc files written at install (minutes on 2 cores; the commands and
    # what they install are the same)
    prefix = (f"export PATH={shlex.quote(os.pathsep.join(path))} PIP_NO_COMPILE=1; "
              "unset VIRTUAL_ENV; set -e; ")  # fmt: skip

    steps = [*lab_install[:2], TORCH, *lab_install[2:]]
    out, lab_s = _bash(prefix + " && ".join(steps) + " && lintutor --help", clone)
    assert "lintutor" in out and "lab" in out
    py = clone / ".venv" / "bin" / "python"
    check = ("import torch, lintutor, jupyterlab; print(torch.__version__, lintutor.__version__, "
             "torch.__file__)")  # fmt: skip
    got = subprocess.run([str(py), "-c", check], capture_output=True, text=True, check=True)
    version, _, where = got.stdout.split()
    assert version.startswith("2.13.0") and where.startswith(str(clone)), got.stdout

    # `lintutor lab` as the line runs it, on a free port, then Ctrl-C
    port, token = _free_port(), "fresh"
    ws = tmp_path / "lessons"
    lab = subprocess.Popen(
        [str(clone / ".venv" / "bin" / "lintutor"), "lab", "--dir", str(ws), "--no-browser",
         "--port", str(port), "--ip", "127.0.0.1", f"--IdentityProvider.token={token}"],
        cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(env_vars, PATH=os.pathsep.join(path), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt")),
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/lab?token={token}", timeout=5
                ) as r:
                    page = r.read().decode()
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, lab.stdout.read()
                time.sleep(1)
        os.killpg(lab.pid, signal.SIGINT)
        lab_out, _ = lab.communicate(timeout=60)
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.communicate(timeout=30)
    assert "JupyterLab" in page
    assert lab.returncode == 0 and "Traceback" not in lab_out, lab_out
    assert (ws / "01_softmax_attention.ipynb").exists()

    # the test line: its install as written, then a few of the clone's own tests
    tests = ("python -m pytest -q -p no:cacheprovider tests/course/test_setup.py "
             "tests/course/test_workspace.py -k 'not ctrl_c and not check_grades'")  # fmt: skip
    out, test_s = _bash(prefix + " && ".join(test_install) + " && " + tests, clone, timeout=1200)
    assert " passed" in out and "failed" not in out, out[-3000:]
    print(f"fresh clone: lab line installed in {lab_s:.0f} s, test line and tests {test_s:.0f} s")
