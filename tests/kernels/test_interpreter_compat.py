"""Triton's interpreter across the versions the package allows (triton >= 3.2, NumPy >= 1.24)."""

import operator
from types import SimpleNamespace

import numpy as np
import pytest

import lintutor.kernels  # noqa: F401  installs the fix
from lintutor.kernels._common import wrap_index_patch


def _old_patch(tensor, scope):
    """Triton <= 3.6's `_patch_lang_tensor`, the part that matters: a scalar argument is a
    1-element array, indexed with int() of the whole array."""
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))


def _scalar(cls, value):
    t = cls()
    t.handle = SimpleNamespace(data=np.array([value], dtype=np.int32))
    return t


def test_a_scalar_argument_indexes_with_every_numpy():
    """With triton 3.6 (pinned by torch 2.11) and NumPy >= 2.4, `range(0, T, C)` over a runtime T
    raised "only 0-dimensional arrays can be converted to Python scalars" in every kernel of
    lessons 08-09 in the interpreter; the wrapped patch reads the one element."""
    from triton.runtime import interpreter

    class Old:
        pass

    class Fixed:
        pass

    scope = interpreter._LangPatchScope()
    _old_patch(Old, scope)
    wrap_index_patch(_old_patch)(Fixed, scope)
    if tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4):
        with pytest.raises(TypeError, match="0-dimensional"):
            operator.index(_scalar(Old, 21))
    n = _scalar(Fixed, 21)
    assert operator.index(n) == 21 and list(range(0, n, 8)) == [0, 8, 16]
    scope.restore()  # the patch is part of the launch's scope: it goes with it
    assert "__index__" not in vars(Fixed) and "__index__" not in vars(Old)


def test_the_fix_is_installed_once():
    from triton.runtime import interpreter

    from lintutor.kernels._common import fix_interpreter_index

    installed = interpreter._patch_lang_tensor
    assert installed.lintutor_index_fix
    fix_interpreter_index()
    assert interpreter._patch_lang_tensor is installed
