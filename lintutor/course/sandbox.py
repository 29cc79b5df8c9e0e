"""Running a learner's code so that nothing it does escapes a check: an exit, an endless loop, a
crash, a changed global or a flood of prints.

Two ways to run a check, the first where it exists:

  in a child    (Linux, `can_isolate()`) the whole check runs in a forked copy of this process.
                The parent watches it through a pipe: before each call of the learner's function
                the child says so, and the parent kills it (SIGKILL, which no Python code can
                catch or ignore) when that call passes its time limit, measuring the real
                elapsed time. A child that dies (`os._exit`, `abort()`, a segfault in C code)
                becomes a verdict, and nothing the function changes reaches this process. The
                child runs torch on one thread: a forked process must not use the parent's
                OpenMP thread pool (it would hang), so `torch.set_num_threads` does nothing there.
  in-process    elsewhere (Windows, macOS, a process that already uses CUDA, which a forked
                child cannot touch): a SIGALRM timer that re-arms ever more often (50 ms,
                then down to 20 us; on Linux its signal goes to the checking thread alone),
                and a watchdog thread that raises the timeout inside the function however
                it handles signals; neither raises inside the checker's own clean-up. Both
                are exceptions, so a function that ignores SIGALRM *and* catches every
                exception, or sits in one long C call, can outlast them; the time it really
                took is reported either way.

Either way every call goes through `Calls.call`: the process-wide state is put back after it
(grad mode, default dtype and device, torch function and dispatch modes, RNG states, thread
count, sys.stdout/stderr, the working directory, signal handlers, the signal mask and alarm
timer, trace functions, warning filters, the recursion limit, torch's deterministic, matmul
precision and anomaly flags, any function replaced in torch, torch.Tensor,
torch.nn.functional, torch.linalg, torch.special, torch.testing, math, builtins, the lintutor
lesson modules or the checker's own modules, the code and defaults of every lintutor function,
and the fields of every exercise), and what it prints is captured: the first call's output is
kept up to CAPTURE_LIMIT characters, the rest only counted.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import faulthandler
import io
import math
import os
import pickle
import random
import select
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

CAPTURE_LIMIT = 2000  # characters of a learner's print that a verdict shows
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lintutor/
_MISSING = object()


def library_file(filename: str) -> bool:
    """Whether code in `filename` is the package's or an installed library's (not the learner's:
    a notebook cell, an exercise cell run by `lintutor check`, a file of their own)."""
    if filename.startswith("<frozen"):
        return True
    f = os.path.abspath(filename)
    return f.startswith(PACKAGE_DIR + os.sep) or "site-packages" in f or "lib/python" in f


_set_num_threads = torch.set_num_threads  # the real one, also in a child where it is disabled


class Timeout(BaseException):
    """Raised inside the learner's code when a call runs too long (a BaseException, so that a
    learner's `except Exception` does not swallow it)."""


# --- what a call printed ----------------------------------------------------------------------


class _Sink(io.TextIOBase):
    """A text stream that keeps the first `limit` characters written to it and counts the rest."""

    def __init__(self, limit: int = CAPTURE_LIMIT):
        self.limit, self.parts, self.kept, self.count = limit, [], 0, 0

    def write(self, s) -> int:
        s = str(s)
        self.count += len(s)
        if self.kept < self.limit:
            part = s[: self.limit - self.kept]
            self.parts.append(part)
            self.kept += len(part)
        return len(s)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return "utf-8"

    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class Printed:
    """What the learner's function printed over a check: the first printing call's text (up to
    CAPTURE_LIMIT characters), and how many characters every call printed in all."""

    first: str = ""
    first_count: int = 0
    total: int = 0
    calls: int = 0

    def add(self, sink: _Sink) -> None:
        if sink.count == 0:
            return
        if self.calls == 0:
            self.first, self.first_count = sink.text(), sink.count
        self.calls += 1
        self.total += sink.count

    def report(self) -> str:
        """The text a verdict shows once, or "" when nothing was printed."""
        if not self.total:
            return ""
        more = self.total - len(self.first)
        head = "Your function printed"
        if self.calls > 1:
            head += f" on {self.calls} calls ({self.total:,} characters); the first call's output"
        lines = [f"{head}:", self.first.rstrip("\n")]
        if more > 0:
            lines.append(f"... {more:,} more characters")
        return "\n".join(lines)


# --- process-wide state -----------------------------------------------------------------------


def _namespaces() -> list:
    """The modules and classes whose functions a learner might replace."""
    owners = [
        torch,
        torch.Tensor,
        torch.nn.functional,
        torch.linalg,
        torch.special,
        torch.testing,
        math,
        builtins,
    ]
    for name, mod in list(sys.modules.items()):
        if (
            mod
            and name.startswith("lintutor.")
            and (not name.startswith("lintutor.course") or name.startswith(_CHECKER_MODULES))
        ):
            owners.append(mod)
    return owners


# the checker's own modules (no state of their own changes while a learner's function runs):
# replacing checker._allclose or a lesson's wrong-variant library must not outlive the call
_CHECKER_MODULES = (
    "lintutor.course.checker",
    "lintutor.course.forms",
    "lintutor.course.sandbox",
    "lintutor.course.exercises",
)


def _functions(namespaces) -> list:
    """(function, its code, defaults, keyword defaults) of every function of the lintutor
    modules: a learner who sets reference.__code__ (or __defaults__) would change the answer the
    checker compares with."""
    out, seen = [], set()
    for owner, saved in namespaces:
        if not isinstance(owner, types.ModuleType) or not owner.__name__.startswith("lintutor."):
            continue
        for value in saved.values():
            if isinstance(value, types.FunctionType) and id(value) not in seen:
                seen.add(id(value))
                out.append((value, value.__code__, value.__defaults__, value.__kwdefaults__))
    return out


def _exercises() -> list:
    """(Exercise, its fields) of every exercise loaded: get("01.1").rtol = 1e9 in a learner's
    function must not let this or a later check pass wrong answers."""
    mod = sys.modules.get("lintutor.course.exercises")
    load = getattr(mod, "_load_all", None)
    if load is None or not load.cache_info().currsize:
        return []  # not loaded yet: nothing to protect, and nothing to import here
    return [(ex, dict(vars(ex))) for ex in load().values()]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_SIGNALS = [s for s in ("SIGALRM", "SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, s)]


class State:
    """A snapshot of the process-wide state a learner's code can change; `restore()` puts it
    back. Taking one costs well under a millisecond."""

    def __init__(self):
        self.namespaces = [(o, dict(vars(o))) for o in _namespaces()]
        self.functions = _functions(self.namespaces)
        self.exercises = _exercises()
        self.grad = torch.is_grad_enabled()
        self.dtype = torch.get_default_dtype()
        self.device_context = getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None)
        self.function_modes = _function_modes()
        self.dispatch_modes = _dispatch_modes()
        self.threads = torch.get_num_threads()
        self.rng = torch.get_rng_state()
        self.py_rng = random.getstate()
        np = sys.modules.get("numpy")
        self.np_rng = np.random.get_state() if np is not None else None
        self.streams = (sys.stdout, sys.stderr, sys.stdin)
        try:
            self.cwd = os.getcwd()
        except OSError:
            self.cwd = None
        self.trace, self.profile = sys.gettrace(), sys.getprofile()
        self.recursion = sys.getrecursionlimit()
        self.warning_filters = list(warnings.filters)
        self.deterministic = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        self.matmul_precision = torch.get_float32_matmul_precision()
        self.anomaly = torch.is_anomaly_enabled()
        self.main = _main_thread()
        if self.main:
            self.handlers = {s: signal.getsignal(getattr(signal, s)) for s in _SIGNALS}
            self.itimer = (
                signal.getitimer(signal.ITIMER_REAL) if hasattr(signal, "getitimer") else None
            )
            self.sigmask = (
                signal.pthread_sigmask(signal.SIG_BLOCK, [])
                if hasattr(signal, "pthread_sigmask")
                else None
            )

    def restore(self) -> None:
        if sys.gettrace() is not self.trace:
            sys.settrace(self.trace)
        if sys.getprofile() is not self.profile:  # (a profiler running the check stays as is)
            sys.setprofile(self.profile)
        for owner, saved in self.namespaces:  # first: what follows calls torch functions
            current = vars(owner)
            for name, value in saved.items():
                if current.get(name, _MISSING) is not value:
                    with contextlib.suppress(AttributeError, TypeError):
                        setattr(owner, name, value)
            if isinstance(owner, type):  # new attributes on a class shadow its methods
                for name in [n for n in current if n not in saved]:
                    with contextlib.suppress(AttributeError, TypeError):
                        delattr(owner, name)
        for fn, code, defaults, kwdefaults in self.functions:
            if fn.__code__ is not code:
                with contextlib.suppress(ValueError, TypeError):  # (a closure of another size)
                    fn.__code__ = code
            if fn.__defaults__ is not defaults:
                fn.__defaults__ = defaults
            if fn.__kwdefaults__ is not kwdefaults:
                fn.__kwdefaults__ = kwdefaults
        for ex, fields in self.exercises:
            current = vars(ex)
            for name in [n for n in current if n not in fields]:
                delattr(ex, name)
            for name, value in fields.items():
                if current.get(name, _MISSING) is not value:
                    setattr(ex, name, value)
        sys.stdout, sys.stderr, sys.stdin = self.streams
        if _function_modes() != self.function_modes or (
            getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None) is not self.device_context
        ):
            _set_function_modes(self.function_modes)
            torch._GLOBAL_DEVICE_CONTEXT.device_context = self.device_context
        if _dispatch_modes() != self.dispatch_modes:
            _set_dispatch_modes(self.dispatch_modes)
        torch._C._set_grad_enabled(self.grad)
        if torch.get_default_dtype() != self.dtype:
            torch.set_default_dtype(self.dtype)
        if torch.get_num_threads() != self.threads:
            _set_num_threads(self.threads)
        torch.set_rng_state(self.rng)
        random.setstate(self.py_rng)
        np = sys.modules.get("numpy")
        if self.np_rng is not None and np is not None:
            np.random.set_state(self.np_rng)
        if self.cwd is not None:
            try:
                here = os.getcwd()
            except OSError:
                here = None
            if here != self.cwd:
                with contextlib.suppress(OSError):
                    os.chdir(self.cwd)
        if sys.getrecursionlimit() != self.recursion:
            sys.setrecursionlimit(self.recursion)
        warnings.filters[:] = self.warning_filters
        if (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ) != self.deterministic:
            torch.use_deterministic_algorithms(
                self.deterministic[0], warn_only=self.deterministic[1]
            )
        if torch.get_float32_matmul_precision() != self.matmul_precision:
            torch.set_float32_matmul_precision(self.matmul_precision)
        if torch.is_anomaly_enabled() != self.anomaly:
            torch.autograd.set_detect_anomaly(self.anomaly)
        if self.main and _main_thread():
            self._restore_signals()

    def _restore_signals(self) -> None:
        if self.itimer is not None and signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
            signal.setitimer(signal.ITIMER_REAL, *self.itimer)
        if (
            self.sigmask is not None
            and signal.pthread_sigmask(signal.SIG_BLOCK, []) != self.sigmask
        ):
            # a signal the learner blocked may be pending: drop it before the mask opens
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []) - self.sigmask
            for sig in blocked:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
        for name, handler in self.handlers.items():
            sig = getattr(signal, name)
            if signal.getsignal(sig) is not handler and handler is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, handler)


def _function_modes() -> list:
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())


def _set_function_modes(modes) -> None:
    while torch._C._len_torch_function_stack():
        torch._C._pop_torch_function_stack()
    for mode in modes:
        torch._C._push_on_torch_function_stack(mode)


def _dispatch_modes() -> list:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return list(_get_current_dispatch_mode_stack())


def _set_dispatch_modes(modes) -> None:
    while torch._C._len_torch_dispatch_stack():
        torch._C._pop_torch_dispatch_stack(None)
    for mode in modes:
        torch._C._push_on_torch_dispatch_stack(mode)


def standardize() -> None:
    """The state every check runs in: grad on, float32 default dtype, CPU default device, no
    torch function or dispatch modes, no trace function. (What the learner set is put back when
    the check ends.)"""
    sys.settrace(None)
    _set_function_modes([])
    torch._GLOBAL_DEVICE_CONTEXT.device_context = None
    _set_dispatch_modes([])
    torch._C._set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)


# --- one call of the learner's function -------------------------------------------------------


@dataclass
class Call:
    """What one call did. kind: "ok", "not attempted", "exception", "exit" (SystemExit,
    KeyboardInterrupt and other BaseExceptions), or "timeout"; elapsed: wall seconds."""

    kind: str
    value: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0


class Calls:
    """Runs the learner's function, one guarded call at a time, in this process. A check makes
    one for its whole run: `standard` is the state every call starts from and returns to."""

    soft_limit = True  # the limit is enforced by exceptions (see the module docstring)

    def __init__(self):
        self.printed = Printed()
        self.standard: State | None = None

    @contextlib.contextmanager
    def session(self):
        """One check: the standard state for every call inside, the caller's state after."""
        user = State()
        try:
            standardize()
            self.standard = State()
            yield self
        finally:
            user.restore()

    def call(self, fn: Callable, kwargs: dict, limit: float, where: str, watch=None) -> Call:
        """fn(**kwargs) with a time limit, its prints captured and the state put back after.
        `watch`: a context manager entered just around the call (the form probe's counter)."""
        sink = _Sink()
        self._started(where, limit)
        t0 = time.perf_counter()
        try:
            try:
                sys.stdout = sys.stderr = sink
                with self._limit(limit), warnings.catch_warnings(), _launch_checks():
                    warnings.simplefilter("ignore")
                    with watch or contextlib.nullcontext():
                        value = fn(**kwargs)
                call = Call("ok", value)
            finally:
                elapsed = time.perf_counter() - t0
                self._restore(sink)
        except NotImplementedError as err:
            call = Call("not attempted", error=err)
        except Timeout as err:
            call = Call("timeout", error=err)
        except Exception as err:
            call = Call("exception", error=err)
        except BaseException as err:  # SystemExit, KeyboardInterrupt, GeneratorExit, ...
            call = Call("exit", error=err)
        call.elapsed = elapsed
        if call.kind == "ok" and elapsed > limit:  # it returned, but only after its limit
            call = Call("timeout", elapsed=elapsed)
        self._finished()
        return call

    def _restore(self, sink) -> None:
        for _ in range(100):  # a watchdog exception may land in here: finish anyway
            try:
                self.standard.restore()
                self.printed.add(sink)
                return
            except Timeout:
                continue

    def _limit(self, limit):
        return _soft_limit(limit)

    def _started(self, where, limit) -> None:
        pass

    def _finished(self) -> None:
        pass


@contextlib.contextmanager
def _launch_checks():
    """Triton launches inside the call go through the checked launcher (when Triton is loaded)."""
    if "triton" not in sys.modules:
        yield
        return
    try:
        from lintutor.kernels.checked import checking_launches
    except Exception:  # a Triton that cannot load: the learner's launch will say so itself
        yield
        return
    with checking_launches():
        yield


def _ignore(signum, frame) -> None:
    """A Python handler that does nothing (SIG_IGN itself would make CPython print "Signal 14
    ignored due to race condition" for an alarm already caught but not yet handled)."""


_SHIELDED: set | None = None


def _shielded(frame) -> bool:
    """Whether `frame` is the checker's own clean-up (the sandbox, the checker, the launch
    checks, contextlib, warnings, threading): the limit's Timeouts wait until it is left. At
    the end of a call that fights its limit the alarm fires every 20 us; a Timeout raised inside
    a context manager's exit skipped the disarm, the alarm kept firing, and once the signal
    handlers were put back the default action ended the process ("Alarm clock")."""
    global _SHIELDED
    if _SHIELDED is None:
        here = os.path.dirname(os.path.abspath(__file__))  # lintutor/course
        files = {os.path.join(here, f) for f in os.listdir(here) if f.endswith(".py")}
        files.add(os.path.join(os.path.dirname(here), "kernels", "checked.py"))
        files |= {os.path.abspath(m.__file__) for m in (contextlib, warnings, threading)}
        _SHIELDED = files
    return frame is not None and frame.f_code.co_filename in _SHIELDED


class _Watchdog(threading.Thread):
    """After `limit` seconds, raise Timeout in the target thread every 20 ms until stopped."""

    def __init__(self, limit: float, target: int):
        super().__init__(daemon=True)
        self.limit, self.target = limit, target
        self.stop = threading.Event()

    fired = False

    def run(self) -> None:
        if self.stop.wait(self.limit):
            return
        while not self.stop.is_set():
            if not _shielded(sys._current_frames().get(self.target)):
                self.fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.target), ctypes.py_object(Timeout)
                )
            self.stop.wait(0.02)


def _drain() -> None:
    """Let an injected Timeout that is still pending land here, once the watchdog has stopped.
    (Not PyThreadState_SetAsyncExc(id, NULL): with nothing pending, that leaves CPython's
    pending flag set, and a process forked later hangs.)"""
    for _ in range(100):
        try:
            for _ in range(1000):  # backward jumps: where a pending exception is raised
                pass
            return
        except Timeout:
            continue


class _sigevent(ctypes.Structure):  # Linux, 64-bit: struct sigevent (64 bytes)
    _fields_ = [
        ("value", ctypes.c_void_p),
        ("signo", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("tid", ctypes.c_int),
        ("pad", ctypes.c_int * 11),
    ]


class _timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _itimerspec(ctypes.Structure):
    _fields_ = [("interval", _timespec), ("value", _timespec)]


def _timespec_of(seconds: float) -> _timespec:
    ns = max(int(round(seconds * 1e9)), 0)
    return _timespec(ns // 1_000_000_000, ns % 1_000_000_000)


class _ThreadTimer:
    """A POSIX timer whose SIGALRM goes to this thread only (Linux: timer_create with
    SIGEV_THREAD_ID). setitimer's alarm goes to the whole process, and the kernel hands it to
    any thread that does not block it: blocked here, it still reached a torch or watchdog
    thread, whose handler could run after the old handler was back (under load, 7 of 25 runs
    printed "Signal 14 ignored due to race condition", one ended with "Alarm clock"). An alarm
    for this thread alone waits while the thread blocks it, so the clean-up can drop it."""

    _CLOCK_MONOTONIC, _SIGEV_THREAD_ID = 1, 4
    _libc = None

    def __init__(self):
        if _ThreadTimer._libc is None:
            _ThreadTimer._libc = ctypes.CDLL(None, use_errno=True)
        libc = self._libc
        self.id = ctypes.c_void_p()
        event = _sigevent(None, signal.SIGALRM, self._SIGEV_THREAD_ID, threading.get_native_id())
        if libc.timer_create(self._CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self.id)):
            raise OSError(ctypes.get_errno(), "timer_create failed")

    def set(self, first: float, every: float) -> None:
        spec = _itimerspec(_timespec_of(every), _timespec_of(first))
        self._libc.timer_settime(self.id, 0, ctypes.byref(spec), None)

    def close(self) -> None:
        if self.id is not None:
            self._libc.timer_delete(self.id)
            self.id = None

    @staticmethod
    def usable() -> bool:
        return (
            sys.platform.startswith("linux")
            and ctypes.sizeof(ctypes.c_void_p) == 8
            and ctypes.sizeof(_sigevent) == 64
            and hasattr(signal, "pthread_sigmask")
            and hasattr(signal, "sigtimedwait")
        )


class _ProcessTimer:
    """setitimer's alarm (macOS and other Unixes without thread timers)."""

    def set(self, first: float, every: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, first, every)

    def close(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _timer():
    if _ThreadTimer.usable():
        with contextlib.suppress(OSError, AttributeError):
            return _ThreadTimer()
    return _ProcessTimer()


@contextlib.contextmanager
def _soft_limit(limit: float):
    """The in-process limit: SIGALRM re-armed every 50 ms (main thread, Unix) and a watchdog
    thread. Both raise Timeout; see the module docstring for what they cannot stop."""
    dog = _Watchdog(limit, threading.get_ident())
    alarm = hasattr(signal, "setitimer") and _main_thread()
    if alarm:
        fired = [0]
        timer = _timer()

        def _raise(signum, frame):
            # ever more often: a loop that catches every exception is stopped once one lands
            # between its `except` and its next iteration; never inside the clean-up
            if _shielded(frame):
                return
            fired[0] += 1
            if fired[0] in (2, 20, 200):
                every = {2: 1e-3, 20: 1e-4, 200: 2e-5}[fired[0]]
                timer.set(every, every)
            raise Timeout()

        old = signal.signal(signal.SIGALRM, _raise)
        timer.set(limit, 0.05)
    dog.start()

    masks = hasattr(signal, "pthread_sigmask")
    before = []  # the signal mask before disarm blocked the alarm

    def disarm():
        # The alarm may fire every 20 us by now: first block it, so no Timeout can land while it
        # is stopped; then stop it and drop one that is pending, and only then put the old
        # handler back (it may be the default action: end the process, "Alarm clock").
        for _ in range(100):  # a late Timeout may interrupt the clean-up itself: finish it
            try:
                if alarm and masks and not before:
                    before.append(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM}))
                dog.stop.set()
                dog.join()
                if alarm:
                    timer.close()
                    if masks:
                        if hasattr(signal, "sigtimedwait"):  # drop a pending alarm
                            while signal.sigtimedwait({signal.SIGALRM}, 0) is not None:
                                pass
                        signal.signal(signal.SIGALRM, _ignore)  # one that still comes: nothing
                        signal.pthread_sigmask(signal.SIG_SETMASK, before[0])
                    signal.signal(signal.SIGALRM, old)  # runs what is pending first
                if dog.fired:
                    _drain()
                return
            except Timeout:
                continue

    try:
        yield
    finally:
        disarm()


# --- the child process ------------------------------------------------------------------------


def can_isolate() -> bool:
    """Whether a check can run in a forked child here: Linux, and no CUDA context in this
    process (a child forked after CUDA was initialized here cannot use CUDA at all: "Cannot
    re-initialize CUDA in forked subprocess"). LINTUTOR_NO_FORK=1 turns it off."""
    if os.environ.get("LINTUTOR_NO_FORK") == "1" or not hasattr(os, "fork"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_initialized())


class _ChildCalls(Calls):
    """Calls inside the child: the parent holds the time limit and kills the child at it."""

    soft_limit = False

    def __init__(self, channel):
        super().__init__()
        self.channel = channel

    def _limit(self, limit):
        return contextlib.nullcontext()

    def _started(self, where, limit) -> None:
        self.channel.send(("call", where, limit))

    def _finished(self) -> None:
        self.channel.send(("done",))


class _Channel:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message) -> None:
        data = pickle.dumps(message)
        data = struct.pack("<I", len(data)) + data
        while data:
            n = os.write(self.fd, data)
            data = data[n:]


@dataclass
class ChildOutcome:
    """How a check in a child ended. kind: "result" (value is what the work returned),
    "timeout" (killed during a call: where, limit, elapsed), "died" (the child ended without a
    result: where, status, output), "error" (the work itself raised: output is its traceback),
    "stuck" (no sign of life outside the learner's calls for `idle_limit` seconds), or
    "unavailable" (fork failed)."""

    kind: str
    value: Any = None
    where: str = ""
    after: str = ""  # the last call's case, when the child died between calls
    limit: float = 0.0
    elapsed: float = 0.0
    status: str = ""
    output: str = ""


def run_in_child(work: Callable[[Calls], Any], idle_limit: float = 120.0) -> ChildOutcome:
    """Run `work(calls)` in a forked child and return its value, or why there is none."""
    try:
        r, w = os.pipe()
        out = tempfile.TemporaryFile()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "use of fork() may lead to deadlocks" (3.12+)
            pid = os.fork()
    except OSError:
        return ChildOutcome("unavailable")
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            faulthandler.enable(file=out)  # a crash's Python traceback goes to the report
            sys.stdout = sys.stderr = _Sink()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is the parent's to handle
            _set_num_threads(1)  # the parent's OpenMP pool does not exist here
            torch.set_num_threads = lambda n: None
            channel = _Channel(w)
            channel.send(("result", work(_ChildCalls(channel))))
        except BaseException:
            code = 70
            with contextlib.suppress(BaseException):
                _Channel(w).send(("error", traceback.format_exc()))
        finally:
            os._exit(code)
    os.close(w)
    try:
        return _watch_child(pid, r, out, idle_limit)
    finally:
        os.close(r)
        out.close()


def _watch_child(pid: int, fd: int, out, idle_limit: float) -> ChildOutcome:
    buffer, call, result, error, last_where = b"", None, _MISSING, None, ""
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            deadline = call[2] + call[1] if call else last + idle_limit
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - now))
            if not ready:
                _kill(pid)
                if call:
                    where, limit, start = call
                    return ChildOutcome(
                        "timeout", where=where, limit=limit, elapsed=time.monotonic() - start
                    )
                return ChildOutcome("stuck", elapsed=time.monotonic() - last)
            data = os.read(fd, 1 << 16)
            if not data:
                break
            buffer += data
            while len(buffer) >= 4:
                (n,) = struct.unpack("<I", buffer[:4])
                if len(buffer) < 4 + n:
                    break
                message, buffer = pickle.loads(buffer[4 : 4 + n]), buffer[4 + n :]
                last = time.monotonic()
                if message[0] == "call":
                    call = (message[1], message[2], last)
                    last_where = message[1]
                elif message[0] == "done":
                    call = None
                elif message[0] == "result":
                    result = message[1]
                elif message[0] == "error":
                    error = message[1]
            if result is not _MISSING:
                threading.Thread(target=_reap, args=(pid,), daemon=True).start()
                return ChildOutcome("result", result)
    except BaseException:  # an interrupt of the parent (the stop button): end the child too
        _kill(pid)
        raise
    _, status = os.waitpid(pid, 0)
    if error:
        return ChildOutcome("error", output=error)
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    if len(text) > 5000:  # a crash report's start (the error, the innermost frames) and end
        text = text[:4000] + "\n...\n" + text[-1000:]
    return ChildOutcome(
        "died",
        where=call[0] if call else "",
        after=last_where,
        status=_status(status),
        output=text,
        elapsed=time.monotonic() - last,
    )


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)


def _reap(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)
