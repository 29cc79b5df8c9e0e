"""Plotly figures that render in JupyterLab, Colab and exported HTML alike.

`use_renderer()` picks the renderer once: Colab's own on Colab; otherwise the plotly mimetype
(JupyterLab renders it natively) plus an embedded plotly.js copy, so a notebook exported to HTML
shows its figures offline too.
"""

from __future__ import annotations

import sys

import numpy as np

_RENDERER: str | None = None


def use_renderer() -> str:
    """Choose the plotly renderer for this front end (idempotent) and return its name."""
    global _RENDERER
    if _RENDERER is None:
        import plotly.io as pio

        if "google.colab" in sys.modules:
            _RENDERER = "colab"
        else:
            _RENDERER = "plotly_mimetype+notebook"
        pio.renderers.default = _RENDERER
    return _RENDERER


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
    """A labelled heatmap of a 2-D tensor/array; numbers on cells when it is small (<= 12x12)."""
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
            hovertemplate=f"{y_label}=%{{y}}<br>{x_label}=%{{x}}<br>value=%{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title=y_label)
    fig.update_xaxes(title=x_label, side="top")
    fig.update_layout(title=title, width=460, height=420, margin=dict(l=60, r=20, t=80, b=20))
    return fig


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
