"""Plotly figures that render in JupyterLab, Colab and exported HTML alike.

`use_renderer()` picks the renderer once: Colab's own on Colab (a small HTML output that loads
plotly.js in the browser); elsewhere the plotly mimetype alone, which JupyterLab, Notebook 7 and
VS Code draw with their own plotly.js, so a saved lesson holds each figure's data and not a 4 MB
copy of plotly.js. `lintutor build` turns those outputs into HTML for the static site, with one
shared offline copy of plotly.js.

Sizes stay within a 900 px wide output cell (JupyterLab's and Colab's are about 960 px);
`WIDGET_STYLE` keeps ipywidgets' labels whole; `title_above_top_axis` keeps a title clear of an
x axis drawn at the top (as heatmaps of attention maps have it).
"""

from __future__ import annotations

import sys

import numpy as np

_RENDERER: str | None = None

WIDGET_STYLE = {"description_width": "initial"}  # ipywidgets: never truncate a label


def use_renderer() -> str:
    """Choose the plotly renderer for this front end (idempotent) and return its name:
    $LINTUTOR_PLOTLY_RENDERER if set, "colab" on Colab, else "plotly_mimetype"."""
    global _RENDERER
    if _RENDERER is None:
        import os

        import plotly.io as pio

        if os.environ.get("LINTUTOR_PLOTLY_RENDERER"):
            _RENDERER = os.environ["LINTUTOR_PLOTLY_RENDERER"]
        elif "google.colab" in sys.modules:
            _RENDERER = "colab"
        else:
            _RENDERER = "plotly_mimetype"
        pio.renderers.default = _RENDERER
    return _RENDERER


def title_above_top_axis(fig, title: str, axis_title: bool = True):
    """Put `title` above an x axis drawn at the top (ticks and axis title sit where a title
    would), with a top margin sized for the title's lines; returns fig. Later updates of the
    text (`fig.layout.title.text = ...`, or a slider step's {"title.text": ...}) keep the place.
    """
    lines = 1 + title.count("<br>") if title else 0
    top = 30 + (45 if axis_title else 25) + 22 * lines
    fig.update_layout(
        title=dict(text=title, y=1.0, yref="container", yanchor="top", pad=dict(t=10)),
        margin=dict(t=top),
    )
    return fig


def heatmap(
    matrix,
    title="",
    x_label="key position s",
    y_label="query position t",
    numbers=None,
    colorscale="Viridis",
    zmin=None,
    zmax=None,
):
    """A labelled heatmap of a 2-D tensor/array; numbers on cells when it is small (<= 12x12),
    the x axis on top, the title above it."""
    import plotly.graph_objects as go

    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"matrix: expected 2 dimensions, got shape {m.shape}")
    show_numbers = (max(m.shape) <= 12) if numbers is None else numbers
    fig = go.Figure(
        go.Heatmap(
            z=m,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            text=np.round(m, 2) if show_numbers else None,
            texttemplate="%{text}" if show_numbers else None,
            textfont=dict(size=11 if max(m.shape) <= 8 else 9),
            hovertemplate=f"{y_label}=%{{y}}<br>{x_label}=%{{x}}<br>value=%{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title=y_label)
    fig.update_xaxes(title=x_label, side="top")
    fig.update_layout(width=460, height=440, margin=dict(l=60, r=20, b=20))
    return title_above_top_axis(fig, title, axis_title=bool(x_label))


def cost_plot(
    lengths, series: dict, y_label: str, title: str, reference_power: int | None = 2, log=True
):
    """Measured curves vs T (log-log), with a dashed T^p curve through the last point of the
    first series to compare the slope with."""
    import plotly.graph_objects as go

    lengths = np.asarray(lengths, dtype=float)
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=lengths, y=ys, mode="lines+markers", name=name))
    if reference_power is not None and series:
        first = np.asarray(next(iter(series.values())), dtype=float)
        ref = first[-1] * (lengths / lengths[-1]) ** reference_power
        fig.add_trace(
            go.Scatter(
                x=lengths,
                y=ref,
                mode="lines",
                name=f"~ T^{reference_power}",
                line=dict(dash="dash", color="gray"),
            )
        )
    kind = "log" if log else "linear"
    fig.update_xaxes(title="sequence length T", type=kind)
    fig.update_yaxes(title=y_label, type=kind)
    fig.update_layout(title=title, width=620, height=400)
    return fig
