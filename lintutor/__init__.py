"""lintutor: an interactive course on linear attention, and the code that goes with it.

Glossary (every module uses these letters):
    B  batch size               H  heads (never image height: images use height, width)
    T  sequence length (query)  S  key length (S = T for self-attention)
    D  query/key head dim       E  value head dim
    C  chunk size               q, k, v  (B, H, T, D) / (B, H, T, D) / (B, H, T, E)
    phi  feature map            S_t state (B, H, D, E), z_t normalizer (B, H, D)

Modules, in course order: softmax (01); featuremaps, linear (02); causal, data, models (03);
gated (04); mamba, mlla, vision, ablation (05); kernels, bench (08, need Triton). Plumbing:
exercises (the checker), notebook, grade, plots, measure, doctor, cli.
"""

__version__ = "0.1.0"

from lintutor.exercises import check, hint, solution  # noqa: E402
from lintutor.notebook import setup_notebook  # noqa: E402

__all__ = ["check", "hint", "solution", "setup_notebook", "__version__"]
