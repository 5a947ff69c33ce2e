"""Figures of a run: RMSE curves, predictions, the network diagram and its animation.

All drawing is headless (Agg canvas, no pyplot state) and knows nothing of MLflow:
every ``plot_*`` / ``animate_*`` function writes one file and returns its path.
"""

from mlplab.plots.animation import animate_decision_boundary, animate_network, save_gif
from mlplab.plots.curves import plot_rmse
from mlplab.plots.network import (
    draw_network,
    layer_sizes,
    network_layout_mode,
    network_node_names,
    plot_network,
)
from mlplab.plots.predictions import (
    draw_decision_boundary,
    plot_decision_boundary,
    plot_predictions,
)

__all__ = [
    "animate_decision_boundary",
    "animate_network",
    "draw_decision_boundary",
    "draw_network",
    "layer_sizes",
    "network_layout_mode",
    "network_node_names",
    "plot_decision_boundary",
    "plot_network",
    "plot_predictions",
    "plot_rmse",
    "save_gif",
]
