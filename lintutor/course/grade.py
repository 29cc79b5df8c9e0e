"""Grading a notebook from the command line (`lintutor check`): run its `imports` cells and its
exercise cells in a fresh namespace (nothing else: no trainings, no plots), then check each
exercise.

The cells run in a child process, a fresh Python (`python -m lintutor.course.grade PATH`), that
reports each cell it starts and each verdict as one line on its standard output; the parent
holds the time limits. A cell that runs longer than CELL_TIMEOUT seconds ($LINTUTOR_CELL_TIMEOUT;
the imports cells get IMPORTS_TIMEOUT), or a child that ends in the middle (`os._exit` at the
top of a cell), fails that exercise with what happened, and a new child goes on with the next
exercise (it runs the cells before it again, without checking them). Inside the child, each
check runs the learner's calls in a forked process with a hard limit per call
(`lintutor.course.sandbox`), so an exit or an endless loop in a function is a verdict too.
"""

from __future__ import annotations

import contextlib
import io
import json
import linecache
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

import nbformat

from lintutor.course import sandbox
from lintutor.course.checker import (
    FAIL,
    CheckResult,
    _as_dict,
    _with_meta,
    format_learner_exception,
    learner_namespace_prelude,
    run_check,
)
from lintutor.course.exercises import get
from lintutor.course.notebook import exercise_cells

CELL_TIMEOUT = 30.0  # seconds for one exercise cell to define its function
IMPORTS_TIMEOUT = 300.0  # seconds for the imports cells (torch, triton and a lesson's package)
_MARK = "\x1elintutor "  # protocol lines start with this (anything else the child prints is not)


def _cell_timeout() -> float:
    try:
        return float(os.environ.get("LINTUTOR_CELL_TIMEOUT", CELL_TIMEOUT))
    except ValueError:
        return CELL_TIMEOUT


def _check_budget(ex) -> float:
    """A backstop for one whole check (each call has its own limit inside the child)."""
    calls = len(ex.named_sizes) + ex.n_random + 20  # the cases, and the form check's calls
    return calls * (ex.timeout + 2.0) + 60.0


def check_notebook(path: str) -> list[CheckResult]:
    """One CheckResult per exercise cell of the notebook at `path`, in notebook order."""
    nb = nbformat.read(path, as_version=4)
    order = exercise_cells(nb)
    results: dict[int, CheckResult] = {}
    skip: set[int] = set()
    start = 0
    while start < len(order):
        done, failed = _run_child(path, start, skip, order, results)
        if done or failed is None:
            break
        n, result = failed
        results[n] = result
        skip.add(order[n][1])
        start = n + 1
    out = []
    for n, (ex_id, _) in enumerate(order):
        if n not in results:  # the child never got there (should not happen)
            results[n] = _with_meta(
                CheckResult(ex_id, FAIL, "internal", "this exercise was not checked"), get(ex_id)
            )
        out.append(results[n])
    return out


class _Child:
    """The child that runs the cells: forked from this process where that works (it has
    imported torch and the exercises already), else a fresh `python -m lintutor.course.grade`.
    Its protocol lines arrive on `stream`; what it writes to stderr is kept in `err`."""

    def __init__(self, path: str, start: int, skip: set[int]):
        self.err = tempfile.TemporaryFile()
        self.pid = self.proc = None
        if sandbox.can_isolate():
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 70
                try:
                    os.close(r)
                    os.dup2(self.err.fileno(), 2)
                    code = _child(path, start, skip, os.fdopen(w, "w", encoding="utf-8"))
                finally:
                    os._exit(code)
            os.close(w)
            self.pid, self.stream = pid, os.fdopen(r, "rb")
        else:
            cmd = [
                sys.executable,
                "-m",
                "lintutor.course.grade",
                path,
                "--start",
                str(start),
                "--skip",
                ",".join(map(str, sorted(skip))),
            ]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err)
            self.stream = self.proc.stdout

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        else:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> str:
        """How the child ended: "exit code N" or "killed by SIGNAME"."""
        if self.proc is not None:
            code = self.proc.wait()
            return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
        _, status = os.waitpid(self.pid, 0)
        return sandbox._status(status)

    def close(self) -> None:
        self.stream.close()
        self.err.close()


def _run_child(path, start, skip, order, results):
    """Run one child from exercise `start`; returns (done, (n, result) for the exercise that
    stopped it, or None)."""
    child = _Child(path, start, skip)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(child.stream, lines), daemon=True).start()
    phase = ("imports", None, time.monotonic() + IMPORTS_TIMEOUT)
    ended = False
    try:
        while True:
            try:
                raw = lines.get(timeout=max(0.0, phase[2] - time.monotonic()))
            except queue.Empty:
                child.kill()
                child.wait()
                ended = True
                return False, _stopped(phase, order, results, start, "timeout", "")
            if raw is None:  # the child closed its output: it ended
                break
            line = raw.decode("utf-8", "replace")
            if not line.startswith(_MARK):  # anything else the child printed
                continue
            msg = json.loads(line[len(_MARK) :].strip())
            now = time.monotonic()
            if msg.get("phase") == "cell":
                phase = ("cell", msg["n"], now + _cell_timeout())
            elif msg.get("phase") == "check":
                phase = ("check", msg["n"], now + _check_budget(get(order[msg["n"]][0])))
            elif "result" in msg:
                results[msg["n"]] = CheckResult(**msg["result"])
                phase = ("between", None, now + IMPORTS_TIMEOUT)
            elif "imports_error" in msg:
                for n in range(start, len(order)):
                    ex = get(order[n][0])
                    results[n] = _with_meta(
                        CheckResult(
                            ex.id,
                            FAIL,
                            "exception",
                            f"the notebook's imports cell does not run\n{msg['imports_error']}",
                        ),
                        ex,
                    )
                return True, None
            elif msg.get("phase") == "done":
                return True, None
        status = child.wait()
        ended = True
        child.err.seek(0)
        tail = child.err.read().decode("utf-8", "replace")[-800:]
        return False, _stopped(phase, order, results, start, status, tail)
    finally:
        if not ended:
            child.kill()
            child.wait()
        child.close()


def _read_lines(stream, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw)
    lines.put(None)


def _stopped(phase, order, results, start, why, tail):
    """The verdict for the exercise whose cell or check stopped the child."""
    kind, n, _ = phase
    if n is None:  # imports, or between two exercises: blame the next one not yet graded
        n = next((m for m in range(start, len(order)) if m not in results), None)
        if n is None:
            return None
    ex = get(order[n][0])
    what = "check" if kind == "check" else "exercise cell"
    if kind == "imports":
        what = "notebook's imports cell"
    if why == "timeout":
        limit = (
            _check_budget(ex)
            if kind == "check"
            else (IMPORTS_TIMEOUT if kind == "imports" else _cell_timeout())
        )
        msg = (
            f"the {what} did not finish in {limit:g} s (an endless loop at the top of the cell? "
            "Cells that define an exercise should only define it)"
        )
        layer = "timeout"
    else:
        msg = f"the {what} ended the process ({why}): os._exit() or a crash in C code"
        if tail.strip():
            msg += "\nIts last output:\n" + tail.strip()
        layer = "exit"
    return n, _with_meta(CheckResult(ex.id, FAIL, layer, msg), ex)


# --- the child ---------------------------------------------------------------------------------


def _child(path: str, start: int, skip: set[int], proto=None) -> int:
    """Run the cells and the checks, one protocol line per step on `proto` (default: a copy of
    fd 1, which then goes to /dev/null, so what a cell prints cannot mix with the protocol)."""
    if proto is None:
        proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles an interrupt
    sandbox._set_num_threads(1)  # a forked child must not use the parent's OpenMP pool

    def send(**msg):
        proto.write(_MARK + json.dumps(msg) + "\n")
        proto.flush()

    def run_cell(source, name):
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(source, name, "exec"), ns)

    nb = nbformat.read(path, as_version=4)
    ns = learner_namespace_prelude()
    for cell in nb.cells:
        if "imports" in cell.get("metadata", {}).get("tags", []):
            try:
                run_cell(cell.source, f"{path}:imports")
            except BaseException as err:  # noqa: BLE001 (reported, never raised)
                send(imports_error=format_learner_exception(err))
                return 0
    for n, (ex_id, i) in enumerate(exercise_cells(nb)):
        if i in skip:
            continue
        ex = get(ex_id)
        send(phase="cell", n=n)
        try:
            run_cell(nb.cells[i].source, f"<cell {i}>")
        except BaseException as err:  # noqa: BLE001 (SystemExit, KeyboardInterrupt too)
            if n >= start:
                msg = f"the exercise cell does not run\n{format_learner_exception(err)}"
                send(
                    n=n, result=_as_dict(_with_meta(CheckResult(ex.id, FAIL, "exception", msg), ex))
                )
            continue
        if n < start:
            continue
        fn = ns.get(ex.name)
        if fn is None:
            result = CheckResult(
                ex.id, FAIL, "type", f"the exercise cell defines no function named {ex.name}"
            )
            result = _with_meta(result, ex)
        else:
            send(phase="check", n=n)
            result = run_check(ex, fn)
        send(n=n, result=_as_dict(result))
    send(phase="done")
    return 0


def format_table(results: list[CheckResult]) -> str:
    """A plain-text table: id, title, status, first line of the message; then the whole
    message of each exercise that failed."""
    rows = [("exercise", "title", "status", "detail")]
    for r in results:
        ex = get(r.exercise)
        detail = r.message.splitlines()[0] if r.message else ""
        rows.append((r.exercise, ex.title, r.status, detail[:70]))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(row[c].ljust(widths[c]) for c in range(3)) + "  " + row[3])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    for r in results:
        if r.status == FAIL:
            lines.append(f"\n{r.text()}")
    passed = sum(r.passed for r in results)
    lines.append(f"\n{passed} of {len(results)} exercises pass")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="the child process of `lintutor check`")
    p.add_argument("notebook")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--skip", default="")
    args = p.parse_args(argv)
    skip = {int(i) for i in args.skip.split(",") if i}
    return _child(args.notebook, args.start, skip)


if __name__ == "__main__":
    sys.exit(main())
