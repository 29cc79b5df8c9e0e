"""Progress bars for trainings and long cells that work in JupyterLab, Colab and a terminal.

`bar(iterable, desc=...)` is tqdm's: the widget bar in a notebook kernel whose ipywidgets can
draw one (JupyterLab, Colab's ipywidgets 7), the text bar elsewhere (a terminal, a kernel
without ipywidgets), and a plain pass-through when tqdm itself is missing.
$LINTUTOR_PROGRESS picks one: "text" (a text bar even in a notebook: `lintutor build` sets it,
since a static page cannot draw a widget), "off" (no bar), "auto" (the default).
"""

from __future__ import annotations

import os
import sys


def _kind() -> str:
    kind = os.environ.get("LINTUTOR_PROGRESS", "auto").strip().lower()
    return kind if kind in ("auto", "text", "off") else "auto"


def bar(iterable=None, desc: str = "", total: int | None = None, disable: bool = False,
        leave: bool = True):  # fmt: skip
    """A tqdm bar over `iterable` (set_postfix, update and close work as in tqdm)."""
    kind = _kind()
    disable = disable or kind == "off"
    try:
        from tqdm.std import tqdm as text_bar
    except ImportError:
        return _Plain(iterable)
    if kind == "auto" and not disable:
        try:
            from tqdm.auto import tqdm as auto_bar

            return auto_bar(iterable, desc=desc, total=total, leave=leave)
        except ImportError:  # a notebook whose ipywidgets cannot draw tqdm's widget
            pass
    return text_bar(iterable, desc=desc, total=total, disable=disable, leave=leave,
                    file=sys.stderr, dynamic_ncols=True)  # fmt: skip


class _Plain:
    """Stands in for a tqdm bar when tqdm is not installed."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass
