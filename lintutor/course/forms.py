"""Which form a learner's function computes: a loop over t (recurrent), a loop over chunks
(chunked), neither (parallel), and whether it builds a T x S map (quadratic).

The check counts what the function does while T grows, on inputs of the exercise's own
`make_inputs` (its smallest named case, with T, and S where there is one, set by the probe):

  events    every call into torch (under a `torch.overrides.TorchFunctionMode`: functions,
            methods, operators and indexing all count) plus every line of the learner's own
            Python that runs (a trace function on frames outside the installed packages, so a
            loop in numpy, in plain Python or in a list comprehension counts too)
  steps     T = 16, 17, ..., 24: a loop over t adds events with every token; a loop over
            chunks of C tokens only when T passes a multiple of C (the probe uses C = 4)
  growth    T = 32, 64, 128, then 256 (skipped when the loop is already clear) and 512 while
            the growth is unclear (blocks of 48 tokens: 1, 2, 3, 6 of them): a loop over t or
            over chunks grows linearly with T; the parallel form does the same work whatever T
            (a log T count, as in a tree scan, is parallel)
  chunk     for the chunked form, chunk_size = 4 and 8 at T = 128: the loop must follow it
  memory    for the linear form, the largest tensor allocated at T = S = 64 and 128, and the
            peak of what is allocated outside torch (tracemalloc, unless it is already running:
            numpy arrays, Python objects): a T x S map grows 4x when T doubles, the linear
            form's tensors 2x

What it cannot see: work that torch does in one call (a cumulative sum or a scan kernel is
parallel to it, as it should be), code that hides from both counters (a TorchScript loop, a
C extension), and a loop over fixed blocks of about 200 tokens or more (their count grows too
little over the probes).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tracemalloc

import torch
from torch.overrides import TorchFunctionMode

from lintutor.course.sandbox import Call, Calls, library_file

FORMS = ("recurrent", "parallel", "chunked", "no loop over t", "linear")
TIME_KEYS = ("T", "S")
CHUNK_KEYS = ("C", "chunk_size")
WINDOW = range(16, 25)
LONG = (32, 64, 128)
FURTHER = (256, 512)  # where the growth over LONG is unclear (see _loops)
PROBE_CHUNK = 4

ASKED = {
    "recurrent": "the recurrent form (a loop over t)",
    "parallel": "the parallel form (no loop over t)",
    "chunked": "the chunked form (a loop over chunks of chunk_size tokens)",
    "no loop over t": "no loop over t (one tensor expression for every token at once)",
    "linear": "the linear form (K^T V first: no loop over t and no T x S map)",
}
SEEN = {
    "recurrent": "the recurrent form (a loop over t)",
    "parallel": "the parallel form (the same torch calls whatever T)",
    "chunked": "the chunked form (the work grows once per chunk of chunk_size tokens)",
    "no loop over t": "no loop over t (the same torch calls whatever T)",
    "linear": "the linear form (no loop over t, no T x S map)",
}


def _asked(ex) -> str:
    """What the wrong-form message says the exercise asks for: the exercise's own `form_asked`
    where it sets one (07.1 asks for no loop over groups, which its form "parallel" implies),
    else the sentence of its form."""
    return ex.form_asked or ASKED[ex.form]


class _Counter(TorchFunctionMode):
    """Counts torch calls, and the largest tensor they allocate (in elements)."""

    def __init__(self, trace_memory: bool = False):
        super().__init__()
        self.calls, self.lines, self.largest = 0, 0, 0
        self.trace_memory = trace_memory  # also the peak of memory allocated outside torch
        self.outside = 0  # that peak, in bytes (numpy arrays, Python objects)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                with contextlib.suppress(Exception):
                    self.largest = max(
                        self.largest, t.untyped_storage().nbytes() // t.element_size()
                    )
        return out

    @property
    def events(self) -> int:
        return self.calls + self.lines


@contextlib.contextmanager
def _counting(counter: _Counter):
    mine: dict[str, bool] = {}

    def local(frame, event, arg):
        if event == "line":
            counter.lines += 1
        return local

    def calls(frame, event, arg):
        name = frame.f_code.co_filename
        if name not in mine:
            mine[name] = not library_file(name)
        return local if mine[name] else None

    traced = counter.trace_memory and not tracemalloc.is_tracing()
    if traced:
        tracemalloc.start()
    with counter:
        sys.settrace(calls)
        try:
            yield
        finally:
            sys.settrace(None)
            if traced:
                counter.outside = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()


def _base_sizes(ex) -> dict:
    if ex.form_sizes:
        return dict(ex.form_sizes)

    def weight(case):
        sizes = case[1]
        w = 1
        for key, value in sizes.items():
            if key not in TIME_KEYS + CHUNK_KEYS and isinstance(value, int) and value > 0:
                w *= value
        return w

    timed = [case for case in ex.named_sizes if any(k in case[1] for k in TIME_KEYS)]
    if not timed:
        raise ValueError(f"{ex.id}: the form check needs a named case with T (or form_sizes)")
    return dict(min(timed, key=weight)[1])


class _Probe:
    def __init__(self, ex, fn, calls: Calls):
        self.ex, self.fn, self.calls = ex, fn, calls
        self.base = _base_sizes(ex)
        self.time_keys = [k for k in TIME_KEYS if k in self.base] or ["T"]
        self.chunk_key = next((k for k in CHUNK_KEYS if k in self.base), None)
        self.failed: Call | None = None
        self.cache: dict = {}

    def count(self, T: int, C: int | None = None) -> _Counter | None:
        key = (T, C)
        if key in self.cache or self.failed:
            return self.cache.get(key)
        sizes = dict(self.base)
        for k in self.time_keys:
            sizes[k] = T
        if C is not None and self.chunk_key:
            sizes[self.chunk_key] = C
        g = torch.Generator().manual_seed(4242)
        inputs = self.ex.make_inputs(dict(sizes), g)
        counter = _Counter(trace_memory=self.ex.form == "linear" and T in LONG[1:] and not C)
        where = f"the form check (T={T}" + (f", chunk_size={C})" if C else ")")
        call = self.calls.call(self.fn, inputs, self.ex.timeout, where, watch=_counting(counter))
        if call.kind != "ok":
            self.failed = call
            self.failed_where = where
            return None
        self.cache[key] = counter
        return counter


def _per_token(parts: list[tuple[float, str]]) -> str:
    said = [f"~{x:.0f} {what}" if x >= 1 else f"~{x:.1f} {what}" for x, what in parts if x >= 0.05]
    return " and ".join(said) or "~0 torch calls"


def _loops(probe: _Probe, counts: list[int], C: int | None) -> bool:
    """Whether the events grow linearly with T (a loop over tokens or blocks of them), from the
    counts at T = LONG: each doubling of T doubles a linear count's increase, while a count that
    grows as log T (a tree scan: parallel) adds the same amount each time. Blocks of more than
    about a third of the longest probe make the increases uneven (1, 2, 3 blocks of 48 at T = 32,
    64, 128), and blocks of 128 or more look constant there: so T doubles again, to 256
    always unless the growth is already clearly linear, and to 512 while it is unclear."""
    d_prev, d = counts[1] - counts[0], counts[2] - counts[1]
    last = counts[2]
    for i, T in enumerate(FURTHER):
        if d_prev > 0 and d >= max(2, 1.5 * d_prev):
            break  # clearly linear
        if d == 0 and (d_prev > 0 or i > 0):
            break  # constant at the end (an extra branch); the same from 32 to 256: no blocks
        more = probe.count(T, C)
        if more is None:
            return False
        d_prev, d, last = d, more.events - last, more.events
    return d_prev > 0 and d >= max(2, 1.5 * d_prev)


def check_form(ex, fn, calls: Calls):
    """(None, sentence for a pass) when fn computes the asked form; (message, None) when it does
    not; (Call, where) when a probe call itself failed (the caller reports it)."""
    probe = _Probe(ex, fn, calls)
    C = PROBE_CHUNK if ex.form == "chunked" else None
    window = [probe.count(T, C) for T in WINDOW]
    long = [probe.count(T, C) for T in LONG]
    if probe.failed:
        return probe.failed, probe.failed_where
    events = [c.events for c in window]
    steps = [b - a for a, b in zip(events, events[1:])]
    stepping = sum(s > 0 for s in steps) / len(steps)
    n_short, n_mid, n_long = (c.events for c in long)
    span = LONG[2] - LONG[1]
    calls_rate = (long[2].calls - long[1].calls) / span
    lines_rate = (long[2].lines - long[1].lines) / span
    rate = calls_rate + lines_rate
    loops = _loops(probe, [n_short, n_mid, n_long], C)
    if probe.failed:
        return probe.failed, probe.failed_where
    if stepping >= 0.75 and rate >= 0.5:
        seen = "recurrent"
    elif loops:
        seen = "chunked"
    else:
        seen = "parallel"

    per_token = _per_token([(calls_rate, "torch calls"), (lines_rate, "Python lines")])
    if seen == "recurrent":
        what = (
            f"your function costs {per_token} per token, more with every token: it loops "
            "over t, which is the recurrent form"
        )
    elif seen == "chunked":
        jumps = [s for s in steps if s > 0]
        block = statistics.median(jumps) / rate if jumps and rate > 0 else None
        size = f" of about {block:.0f} tokens" if block else " (longer than 8 tokens)"
        if rate == 0:  # blocks longer than the probes from 64 to 128: the rate over all of them
            far = max(T for T, c in probe.cache if c == C)
            span = far - LONG[0]
            calls_rate = (probe.cache[(far, C)].calls - long[0].calls) / span
            lines_rate = (probe.cache[(far, C)].lines - long[0].lines) / span
            per_token = _per_token([(calls_rate, "torch calls"), (lines_rate, "Python lines")])
        blocks = (
            f"your function's work grows in steps, in blocks{size} ({per_token} per token "
            "on average)"
        )
        what = f"{blocks}: it loops over blocks of tokens, which is a chunked form"
    else:
        same = "the same" if n_long == events[0] else "about the same"
        far = max(T for T, c in probe.cache if c == C)
        what = (
            f"your function makes {same} {long[2].calls} torch calls whatever T (T = "
            f"{WINDOW[0]} to {far}): that is the parallel form, with no loop over t"
        )

    asked = ex.form
    if asked == "recurrent":
        ok = seen == "recurrent"
    elif asked == "chunked":
        ok = seen == "chunked"
        if ok and probe.chunk_key:
            other = probe.count(LONG[2], 2 * PROBE_CHUNK)
            if probe.failed:
                return probe.failed, probe.failed_where
            if other.events >= n_long:
                return (
                    f"{blocks}, the same for chunk_size = {PROBE_CHUNK} and {2 * PROBE_CHUNK}: "
                    "it ignores chunk_size. The chunked form cuts T into chunks of chunk_size "
                    "tokens (the last one may be shorter).",
                    None,
                )
    else:  # parallel, no loop over t, linear
        ok = seen == "parallel"
        if ok and asked == "linear":
            small, big = probe.count(LONG[1]), long[2]
            if big.largest >= 3 * max(small.largest, 1):
                keys = " = ".join(probe.time_keys)
                return (
                    f"your function builds a tensor that grows as T^2 (the largest has "
                    f"{small.largest:,} elements at {keys} = {LONG[1]} and {big.largest:,} at "
                    f"{LONG[2]}): a T x S map of scores, which is the quadratic form, but this "
                    f"exercise asks for {_asked(ex)}.",
                    None,
                )
            if big.outside >= 3 * max(small.outside, 1) and big.outside > 1 << 16:
                keys = " = ".join(probe.time_keys)
                return (
                    f"your function allocates memory outside torch that grows as T^2 (at most "
                    f"{small.outside:,} bytes at {keys} = {LONG[1]} and {big.outside:,} at "
                    f"{LONG[2]}, in numpy or Python objects): a T x S map of scores, which is "
                    f"the quadratic form, but this exercise asks for {_asked(ex)}.",
                    None,
                )
    if ok:
        return None, SEEN[asked]
    return f"{what}, but this exercise asks for {_asked(ex)}.", None
