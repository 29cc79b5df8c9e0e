"""Hostile learner code (issue 13): nothing a learner's function does escapes a check, hangs it,
or leaks into the next one. Each case runs both ways where both exist: in a child process (the
default on Linux) and in-process (the fallback elsewhere)."""

import io
import math
import os
import random
import re
import signal
import sys
import time

import pytest
import torch

from lintutor import softmax as sm
from lintutor.course import sandbox
from lintutor.course.exercises import check, get, run_check

NO_CHILD = "no forked child here: no fork on this platform, or CUDA in use (checks run in-process)"

MODES = [
    pytest.param(
        True,
        id="child",
        marks=pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD),
    ),
    pytest.param(False, id="in-process"),
]


def _fast(timeout=0.5):
    import dataclasses

    return dataclasses.replace(get("01.1"), timeout=timeout)


def _ok(q, k, v):
    return sm.attention_one_query(q, k, v)


def _elapsed(message):
    return float(re.search(r"after ([0-9.]+) s", message).group(1))


# --- exits and interrupts --------------------------------------------------------------------


@pytest.mark.parametrize("isolate", MODES)
def test_sys_exit_in_the_function_is_a_verdict(isolate):
    def attention_one_query(q, k, v):
        sys.exit(3)

    r = run_check(get("01.1"), attention_one_query, isolate=isolate)
    assert r.status == "fail" and r.layer == "exit", r.text()
    assert "SystemExit" in r.message and "your line" in r.message


@pytest.mark.parametrize("isolate", MODES)
def test_keyboard_interrupt_raised_by_the_function_is_a_verdict(isolate):
    def attention_one_query(q, k, v):
        raise KeyboardInterrupt

    r = run_check(get("01.1"), attention_one_query, isolate=isolate)
    assert r.status == "fail" and r.layer == "exit" and "KeyboardInterrupt" in r.message


def test_check_never_raises_on_base_exceptions():
    for exc in (SystemExit, KeyboardInterrupt, GeneratorExit):

        def attention_one_query(q, k, v, exc=exc):
            raise exc

        assert check("01.1", attention_one_query, show=False).status == "fail"


@pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD)
def test_os_exit_ends_only_the_child():
    def attention_one_query(q, k, v):
        os._exit(7)

    r = run_check(get("01.1"), attention_one_query, isolate=True)
    assert r.status == "fail" and r.layer == "exit", r.text()
    assert "exit code 7" in r.message and "case" in r.message


@pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD)
def test_a_crash_in_c_code_is_reported_not_fatal():
    def attention_one_query(q, k, v):
        os.abort()  # what a wild pointer in a kernel or a C extension does

    r = run_check(get("01.1"), attention_one_query, isolate=True)
    assert r.status == "fail" and r.layer == "exit" and "SIGABRT" in r.message, r.text()
    assert "Fatal Python error: Aborted" in r.message and "your line" in r.message, r.text()
    assert "Extension modules" not in r.message and "checker.py" not in r.message


# --- time limits that cannot be defeated ----------------------------------------------------


def _catches_everything(q, k, v):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass


def _ignores_the_alarm(q, k, v):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        pass


@pytest.mark.parametrize("isolate", MODES)
@pytest.mark.parametrize("fn", [_catches_everything, _ignores_the_alarm], ids=lambda f: f.__name__)
def test_a_loop_that_fights_the_time_limit_is_stopped(fn, isolate):
    before = signal.getsignal(signal.SIGALRM)
    t0 = time.perf_counter()
    r = run_check(_fast(0.5), fn, isolate=isolate)
    took = time.perf_counter() - t0
    assert r.layer == "timeout", r.text()
    assert 0.5 <= _elapsed(r.message) < 5 and took < 10
    assert signal.getsignal(signal.SIGALRM) == before  # the learner's handler is undone


def _one_long_c_call(q, k, v):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as if inside one C call
    time.sleep(2.0)
    return sm.attention_one_query(q, k, v)


@pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD)
def test_one_long_c_call_is_killed_at_the_limit_in_a_child():
    t0 = time.perf_counter()
    r = run_check(_fast(0.5), _one_long_c_call, isolate=True)
    assert r.layer == "timeout", r.text()
    assert _elapsed(r.message) < 1.9 and time.perf_counter() - t0 < 1.9


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")
def test_one_long_c_call_in_process_reports_the_real_elapsed_time():
    r = run_check(_fast(0.5), _one_long_c_call, isolate=False)
    assert r.layer == "timeout", r.text()
    assert _elapsed(r.message) >= 2.0 and "limit is 0.5 s" in r.message
    assert signal.SIGALRM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # mask undone


# --- global state is restored ----------------------------------------------------------------


@pytest.mark.parametrize("isolate", MODES)
def test_global_state_changed_by_the_function_is_restored(isolate, tmp_path):
    originals = (torch.allclose, torch.equal, torch.Tensor.abs, math.isclose)
    stdout, stderr, cwd = sys.stdout, sys.stderr, os.getcwd()
    threads = torch.get_num_threads()
    rng, py_rng = torch.get_rng_state(), random.getstate()

    def attention_one_query(q, k, v):
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1 if threads > 1 else 2)
        torch.manual_seed(123)
        random.seed(5)
        os.chdir(tmp_path)
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        torch.allclose = lambda *a, **k: True
        torch.equal = lambda *a, **k: True
        torch.Tensor.abs = lambda self: self * 0
        math.isclose = lambda *a, **k: True
        torch.set_default_device("meta")
        return torch.zeros(v.shape[-1], dtype=torch.float64, device="cpu")  # wrong

    r = run_check(get("01.1"), attention_one_query, isolate=isolate)
    assert r.status == "fail" and r.layer == "numbers", r.text()
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    assert torch.get_default_device() == torch.device("cpu") and torch.zeros(1).device.type == "cpu"
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng) and random.getstate() == py_rng
    assert os.getcwd() == cwd and sys.stdout is stdout and sys.stderr is stderr
    assert (torch.allclose, torch.equal, torch.Tensor.abs, math.isclose) == originals
    # the next check works, and a wrong answer still fails
    assert check("01.1", _ok, show=False).passed
    assert not check(
        "01.1", lambda q, k, v: torch.zeros(v.shape[-1], dtype=v.dtype), show=False
    ).passed


def _loosens_the_tolerance(q, k, v):
    import lintutor.course.exercises as exercises

    exercises.get("01.1").rtol = exercises.get("01.1").atol = 1e9
    return _ok(q, k, v) + 1e-3


def _rewrites_the_reference(q, k, v):
    sm.attention_one_query.__code__ = (lambda q, k, v: v[0] * 0).__code__
    return v[0] * 0


def _replaces_the_checkers_allclose(q, k, v):
    import lintutor.course.checker as checker

    checker._allclose = lambda *a, **k: True
    return v[0] * 0


@pytest.mark.parametrize("isolate", MODES)
@pytest.mark.parametrize(
    "fn",
    [_loosens_the_tolerance, _rewrites_the_reference, _replaces_the_checkers_allclose],
    ids=lambda f: f.__name__,
)
def test_what_the_checker_compares_with_cannot_be_changed_by_the_function(fn, isolate):
    """The exercise (its tolerance), the reference's code and the checker's own functions are
    put back after every call: neither this check nor a later one passes a wrong answer."""
    code = sm.attention_one_query.__code__
    r = run_check(get("01.1"), fn, isolate=isolate)
    assert r.status == "fail" and r.layer == "numbers", r.text()
    assert get("01.1").rtol == 1e-9 and sm.attention_one_query.__code__ is code
    assert check("01.1", _ok, show=False).passed
    assert not check("01.1", lambda q, k, v: v[0] * 0, show=False).passed


def test_a_default_device_set_before_the_check_does_not_break_it():
    torch.set_default_device("meta")
    try:
        result = check("01.1", _ok, show=False)
        assert torch.get_default_device().type == "meta"  # the learner's own setting is kept
    finally:
        torch.set_default_device(None)
    assert result.passed, result.text()


def test_comparisons_do_not_use_functions_the_learner_replaced(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "equal", lambda *a, **k: True)
    monkeypatch.setattr(torch, "isfinite", lambda x: torch.ones_like(x, dtype=torch.bool))

    def attention_one_query(q, k, v):
        q.mul_(2)  # in place, and wrong
        return torch.full((v.shape[-1],), float("nan"), dtype=v.dtype)

    r = check("01.1", attention_one_query, show=False)
    assert r.status == "fail" and r.layer in {"in-place", "nan"}, r.text()


def test_a_tensor_subclass_cannot_vote_for_itself():
    class Agreeable(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.allclose, torch.equal, torch.Tensor.allclose):
                return True
            if func in (torch.isfinite, torch.Tensor.isfinite):
                return torch.ones(args[0].shape, dtype=torch.bool)
            return super().__torch_function__(func, types, args, kwargs or {})

    def attention_one_query(q, k, v):
        return torch.zeros(v.shape[-1], dtype=v.dtype).as_subclass(Agreeable)

    r = check("01.1", attention_one_query, show=False)
    assert r.status == "fail" and r.layer == "numbers", r.text()


@pytest.mark.parametrize("isolate", MODES)
def test_an_output_on_the_meta_device_gets_a_verdict(isolate):
    def attention_one_query(q, k, v):
        return torch.empty(v.shape[-1], dtype=v.dtype, device="meta")

    r = run_check(get("01.1"), attention_one_query, isolate=isolate)
    assert r.status == "fail" and r.layer == "structure", r.text()
    assert "meta" in r.message and "checker itself" not in r.message


# --- printing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("isolate", MODES)
def test_a_huge_print_is_shown_once_truncated(isolate, capsys):
    def attention_one_query(q, k, v):
        print("x" * 5_000_000)
        return _ok(q, k, v)

    r = run_check(get("01.1"), attention_one_query, isolate=isolate)
    assert capsys.readouterr().out == ""  # nothing printed while checking
    assert r.passed, r.text()
    text = r.text()
    assert len(text) < sandbox.CAPTURE_LIMIT + 1000
    assert "more characters" in text and "x" * 100 in text


def test_a_print_is_shown_once_not_once_per_case(capsys):
    def attention_one_query(q, k, v):
        print("checking my shapes", tuple(q.shape))
        return _ok(q, k, v)

    r = check("01.1", attention_one_query)
    out = capsys.readouterr().out
    assert r.passed and out.count("checking my shapes") == 1, out


@pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD)
def test_an_in_process_check_leaves_nothing_that_breaks_a_later_child():
    """Clearing the watchdog's exception with PyThreadState_SetAsyncExc(id, NULL) when none
    was pending left CPython's pending flag set, and every later forked check hung in its
    form check (found in lintutor check's tests)."""
    assert run_check(get("01.1"), _ok, isolate=False).passed
    assert run_check(_fast(0.3), _ignores_the_alarm, isolate=False).layer == "timeout"
    t0 = time.perf_counter()
    r = run_check(get("03.2"), get("03.2").reference, isolate=True)
    assert r.passed and time.perf_counter() - t0 < 8, r.text()


@pytest.mark.skipif(not sandbox.can_isolate(), reason=NO_CHILD)
def test_the_stop_button_stops_a_check_in_a_child_and_its_cell():
    """An interrupt of the notebook's process (what Jupyter's stop button sends) while the
    check runs in a child ends the child and stops the cell, so "Run all" stops too."""

    def attention_one_query(q, k, v):
        os.kill(os.getppid(), signal.SIGINT)  # the parent is the notebook's process
        time.sleep(30)

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        check("01.1", attention_one_query, show=False)
    assert time.perf_counter() - t0 < 20


def test_a_process_using_cuda_checks_in_process_even_when_a_child_is_asked_for(monkeypatch):
    """A child forked after this process made a CUDA context cannot use CUDA ("Cannot
    re-initialize CUDA in forked subprocess"): on the H200, check('08.1') with isolate=True
    after CUDA was in use was 'the checker itself failed'. Then there is no child, asked for or
    not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert not sandbox.can_isolate()
    forks = []
    monkeypatch.setattr(sandbox, "run_in_child", lambda *a, **k: forks.append(a))
    ex = get("01.1")
    r = run_check(ex, ex.reference, isolate=True)
    assert r.passed and forks == []


def test_the_checkers_clean_up_is_shielded_from_the_limit():
    """The limit's Timeouts never land in the sandbox's, contextlib's or warnings' frames (the
    clean-up after a call), only in the learner's."""
    import contextlib
    import warnings

    frames = []
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: frames.append(sys._getframe(1)))  # called from ExitStack.__exit__
    with warnings.catch_warnings():
        pass
    assert sandbox._shielded(frames[0]) and not sandbox._shielded(sys._getframe())


FIGHTS_IN_PROCESS = """
import dataclasses, os, signal, sys
from lintutor.course.exercises import get, run_check

def fights(q, k, v):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass

ex = dataclasses.replace(get("01.1"), timeout=0.3)
for _ in range(8):
    r = run_check(ex, fights, isolate=False)
    assert r.layer == "timeout", r.text()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    if os.path.exists("/proc/self/timers"):  # Linux: the thread's POSIX timer is deleted
        assert open("/proc/self/timers").read() == "", open("/proc/self/timers").read()
print("clean")
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timer on this platform")
def test_a_fight_with_the_limit_leaves_no_alarm_running(tmp_path):
    """Under load, 6 of 25 such checks in a row ended their process ("Alarm clock"), and others
    printed Timeouts at exit: a Timeout raised inside a context manager's exit skipped the
    disarm, so the 20 us alarm outlived the call. Then, with that shielded, 7 of 25 printed
    "Signal 14 ignored due to race condition" and one ended with "Alarm clock": setitimer's
    alarm, blocked in the checking thread, went to another thread whose handler ran after the
    default one was back (the alarm now goes to the checking thread alone). Eight in a row, in
    a fresh process, must end with the timers off, the default handler back, and nothing
    printed."""
    import subprocess

    run = subprocess.run([sys.executable, "-c", FIGHTS_IN_PROCESS], capture_output=True,
                         text=True, timeout=120, cwd=str(tmp_path))  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "clean", run.stdout + run.stderr
    assert "Timeout" not in run.stderr and "race condition" not in run.stderr, run.stderr


@pytest.mark.skipif(not sandbox._ThreadTimer.usable(), reason="thread timers are Linux-only")
def test_the_limits_alarm_waits_for_the_checking_thread():
    """With the checking thread blocking SIGALRM and another thread free to take it, the
    limit's alarm stays pending for the checking thread (where the clean-up drops it) instead of
    running a handler in the other thread (a process-wide setitimer alarm would)."""
    import threading

    other_ready, done = threading.Event(), threading.Event()
    other = threading.Thread(target=lambda: (other_ready.set(), done.wait(5)), daemon=True)
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(threading.get_ident()))
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    timer = sandbox._timer()
    try:
        other.start()
        other_ready.wait(5)
        timer.set(0.001, 0)
        time.sleep(0.05)
        assert signal.SIGALRM in signal.sigpending(), type(timer).__name__
        assert signal.sigtimedwait({signal.SIGALRM}, 0) is not None
    finally:
        timer.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        signal.signal(signal.SIGALRM, old)
        done.set()
    assert seen == []
