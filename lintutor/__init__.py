"""lintutor: an interactive course on linear attention, and the code that goes with it.

Glossary (every module uses these letters):
    B  batch size               H  heads (never image height: images use height, width)
    T  sequence length (query)  S  key length (S = T for self-attention)
    D  query/key head dim       E  value head dim
    C  chunk size               q, k, v  (B, H, T, D) / (B, H, T, D) / (B, H, T, E)
    phi  feature map            S_t state (B, H, D, E), z_t normalizer (B, H, D)

Four bands, each importing only from the bands below it:
    lesson code   softmax (01); featuremaps, linear (02); causal (03); gated (04);
                  mamba, mlla (05); efficientvit (06); linearized, speculative, verify (07);
                  associative, delta, delta_gated (09); kernels (08, 09; needs Triton)
    models, data  models, data, vision, segmentation (06), decoder (07); plots, measure, progress
    experiments   lintutor.experiments: runs that store results in assets/ (lessons 05-09)
    the tutor     lintutor.course: the exercise checker, notebook helpers, the `lintutor` command

`check`, `hint`, `solution`, `show` and `setup_notebook` are re-exported here for the lessons,
lazily: `import lintutor.causal` loads no tutor code.
"""

__version__ = "0.1.0"

# name -> the module that defines it; imported on first use (module-level __getattr__, PEP 562)
_LAZY = {
    "check": "lintutor.course.exercises",
    "hint": "lintutor.course.exercises",
    "solution": "lintutor.course.exercises",
    "setup_notebook": "lintutor.course.notebook",
    "show": "lintutor.course.notebook",
}

__all__ = ["check", "hint", "solution", "setup_notebook", "show", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lintutor' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
