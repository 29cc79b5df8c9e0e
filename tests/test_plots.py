"""lintutor.plots: a title stays clear of a top x axis, numbers on small heatmaps, sizes that fit
a notebook's output area."""

import numpy as np

from lintutor.plots import WIDGET_STYLE, cost_plot, heatmap, title_above_top_axis


def test_heatmap_title_sits_above_its_top_axis():
    fig = heatmap(np.eye(4), title="a title")
    assert fig.layout.xaxis.side == "top"
    assert fig.layout.title.text == "a title"
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"
    # the margin holds the tick labels, the axis title and the figure title
    assert fig.layout.margin.t >= 90
    fig.layout.title.text = "another"  # how a widget or slider should change it
    assert fig.layout.title.yref == "container" and fig.layout.margin.t >= 90


def test_title_margin_grows_with_its_lines():
    one = title_above_top_axis(heatmap(np.eye(3)), "one line").layout.margin.t
    two = title_above_top_axis(heatmap(np.eye(3)), "two<br>lines").layout.margin.t
    assert two > one


def test_small_heatmaps_carry_numbers_and_large_ones_do_not():
    assert heatmap(np.eye(12)).data[0].texttemplate == "%{text}"
    assert heatmap(np.eye(13)).data[0].texttemplate is None
    assert heatmap(np.eye(13), numbers=True).data[0].texttemplate == "%{text}"


def test_figures_fit_a_notebook_output_area():
    assert heatmap(np.eye(3)).layout.width <= 900
    fig = cost_plot([1, 2, 4], {"a": [1.0, 4.0, 16.0]}, "y", "t")
    assert fig.layout.width <= 900 and len(fig.data) == 2  # the curve and the T^2 reference
    assert WIDGET_STYLE == {"description_width": "initial"}
