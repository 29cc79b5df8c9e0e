"""The notebook contract: every lesson runs top to bottom in two modes.

unsolved: as committed; every check reports "not attempted" and later cells still run.
solved:   each exercise cell replaced by the reference solution; every check passes.
Both modes log each check through $LINTUTOR_CHECK_LOG, so a check that never ran is caught too.
"""

import copy
import glob
import json
import os
import time
import warnings

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from lintutor.course.notebook import COLAB_SETUP, exercise_cells, solved

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
TIMINGS = os.path.join(ROOT, ".pytest_cache", "notebook_times.jsonl")


def _ids(paths):
    return [os.path.basename(p).removesuffix(".ipynb") for p in paths]


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 2, "notebooks/ should hold the lessons"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_layout(path):
    nb = nbformat.read(path, as_version=4)
    name = os.path.basename(path)
    assert name[:2].isdigit() and name[2] == "_", f"{name}: lessons are named NN_name.ipynb"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{name}: cell {i} has outputs"
            )
    assert nb.cells[0].source.strip() == COLAB_SETUP.strip(), f"{name}: cell 0 must be COLAB_SETUP"
    assert "imports" in nb.cells[1].metadata.get("tags", []), (
        f"{name}: cell 1 must be tagged imports"
    )
    for ex_id, i in exercise_cells(nb):
        follow = nb.cells[i + 1].source
        assert f'check("{ex_id}"' in follow, f"{name}: exercise {ex_id} needs a check cell after it"
        assert "raise NotImplementedError" in nb.cells[i].source, f"{name}: {ex_id} is unsolved"


# nbclient sometimes hands over a cell's reply only when the cell's timeout runs out, although the
# kernel has replied (jupyter/nbclient#312, open), in cells that display ipywidgets: lesson 01's
# `widgets.interactive` cell took exactly the timeout in two CI runs in a row (240 s, then 90 s)
# and finished without an error. The three widget cells only draw one figure, so they get a short
# timeout and such a stall costs at most WIDGET_TIMEOUT; other cells get CELL_TIMEOUT (the
# slowest lesson takes about 30 s in all on 2 cores). A cell that really times out, or a dead
# kernel, runs the notebook once more from the start on a new kernel, with a warning; errors in
# a cell are never retried, and a second timeout fails the test.
CELL_TIMEOUT = 90
WIDGET_TIMEOUT = 30


def _cell_timeout(cell):
    return WIDGET_TIMEOUT if "widgets." in cell.source else CELL_TIMEOUT


SLOW = 60  # a notebook slower than this (twice the slowest lesson) warns with its slowest cells


def _time_cells(client):
    """[(cell index, seconds)] filled in as `client` executes cells."""
    times = []
    run_cell = client.async_execute_cell

    async def timed(cell, cell_index, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await run_cell(cell, cell_index, *args, **kwargs)
        finally:
            times.append((cell_index, time.perf_counter() - t0))

    client.async_execute_cell = timed
    return times


def _run(nb, path, log):
    env_before = dict(os.environ)
    os.environ["LINTUTOR_CHECK_LOG"] = log
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # several notebooks run at once: one thread each, or torch's threads fight for the cores
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        for attempt in (1, 2):
            if os.path.exists(log):
                os.remove(log)
            run_nb = copy.deepcopy(nb)
            client = NotebookClient(
                run_nb,
                timeout=CELL_TIMEOUT,
                timeout_func=_cell_timeout,
                kernel_name="python3",
                resources={"metadata": {"path": os.path.dirname(path)}},
            )
            cell_seconds = _time_cells(client)
            t0 = time.perf_counter()
            try:
                client.execute()
                seconds = time.perf_counter() - t0
                if seconds > SLOW:  # say where the time went (a stall like 02's once in CI)
                    slowest = sorted(cell_seconds, key=lambda c: -c[1])[:3]
                    warnings.warn(
                        f"{os.path.basename(path)} took {seconds:.0f} s; slowest cells "
                        + ", ".join(f"#{i} {s:.0f} s" for i, s in slowest),
                        stacklevel=1,
                    )
                return seconds
            except (CellTimeoutError, DeadKernelError) as err:
                if attempt == 2:
                    raise
                warnings.warn(
                    f"{os.path.basename(path)}: {type(err).__name__} (nbclient#312?), ran it again",
                    stacklevel=1,
                )
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def _logged(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("mode", ["unsolved", "solved"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, mode, tmp_path):
    nb = nbformat.read(path, as_version=4)
    expected = [ex_id for ex_id, _ in exercise_cells(nb)]
    if mode == "solved":
        nb = solved(nb)
    log = str(tmp_path / "checks.jsonl")
    seconds = _run(nb, path, log)
    os.makedirs(os.path.dirname(TIMINGS), exist_ok=True)
    with open(TIMINGS, "a") as f:
        f.write(json.dumps({"notebook": os.path.basename(path), "mode": mode, "s": seconds}) + "\n")
    print(f"{os.path.basename(path)} [{mode}] ran in {seconds:.1f} s")
    lesson = os.path.basename(path)[:2]
    # checks of this lesson's exercises (lesson 00 demonstrates checks on lesson 01's exercise)
    results = [r for r in _logged(log) if r["exercise"].startswith(lesson + ".")]
    assert [r["exercise"] for r in results] == expected, "each exercise is checked once, in order"
    want = "not attempted" if mode == "unsolved" else "pass"
    wrong = [r for r in results if r["status"] != want]
    assert not wrong, (
        f"{os.path.basename(path)} [{mode}]: expected every check '{want}', got {wrong}"
    )
