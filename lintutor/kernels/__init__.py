"""Triton kernels for linear attention (lesson 08). Lessons 00-07 never import this package.

    causal_linear_attention_triton        chunked causal forward + backward (autograd), any T
    causal_linear_attention_step_triton   one-token decode for a batch of sequences
    gated_linear_attention_triton         the same kernels with lesson 04's scalar gate
    gated_linear_attention_step_triton    gated one-token decode
    linear_attention_triton               non-causal linear attention
    checked_launch                        run a learner's kernel on guard-padded buffers

    causal.py        the causal launchers and the autograd Function (backward= picks a version)
    chunked.py       forward scan kernels and their driver;  chunked_bwd.py  backward kernels
    decode.py        the decode kernel;  linear.py  the non-causal kernels and launcher
    teaching.py      the exercise-level kernels (v0), self-contained on purpose
    checked.py       checked_launch, explain_error;  _common.py  interpreter switch, SM count,
                     tile sizes, input checks

Glossary: B batch, H heads, T tokens, D key/query dim, E value dim, C chunk size, S the state
(B, H, D, E) in fp32. q and k are already feature-mapped (lesson 02).

On a machine without a GPU, importing this package sets TRITON_INTERPRET=1 (if triton is not
imported yet) so that the same launchers run in Triton's CPU interpreter on CPU tensors.
"""

from lintutor.kernels._common import fix_interpreter_index, use_interpreter_if_no_gpu

use_interpreter_if_no_gpu()
fix_interpreter_index()  # triton <= 3.6 with NumPy >= 2.4: see _common.wrap_index_patch

from lintutor.kernels.causal import (  # noqa: E402
    causal_linear_attention_step_triton,
    causal_linear_attention_triton,
    gated_linear_attention_step_triton,
    gated_linear_attention_triton,
)
from lintutor.kernels.checked import checked_launch, explain_error  # noqa: E402
from lintutor.kernels.linear import linear_attention_triton  # noqa: E402

__all__ = [
    "causal_linear_attention_triton",
    "causal_linear_attention_step_triton",
    "gated_linear_attention_triton",
    "gated_linear_attention_step_triton",
    "linear_attention_triton",
    "checked_launch",
    "explain_error",
]
