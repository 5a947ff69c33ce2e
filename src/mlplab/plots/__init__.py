"""Figures of a run: RMSE curves, predictions, the network diagram and its animation, and
the figures of a sweep's report.

All drawing is headless (Agg canvas, no pyplot state) and knows nothing of MLflow:
every ``plot_*`` / ``animate_*`` function writes one file and returns its path, drawn at
``dpi`` dots per inch (the config's ``plot.dpi``). A :class:`Painter` draws the still
figures of many runs of one shape (a population's members) fast, reusing its figures.

The public functions are loaded on first use, see ``__getattr__`` below.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: Public name → the submodule of ``mlplab.plots`` that defines it.
_SUBMODULES = {
    "animate_decision_boundary": "animation",
    "animate_network": "animation",
    "save_gif": "animation",
    "Painter": "painter",
    "plot_rmse": "curves",
    "draw_network": "network",
    "layer_sizes": "network",
    "network_layout_mode": "network",
    "network_node_names": "network",
    "plot_network": "network",
    "draw_decision_boundary": "predictions",
    "plot_decision_boundary": "predictions",
    "plot_predictions": "predictions",
    "plot_objective": "sweep",
    "plot_sweep_curves": "sweep",
    "plot_sweep_params": "sweep",
    "plot_sweep_replicates": "sweep",
}

__all__ = [
    "Painter",
    "animate_decision_boundary",
    "animate_network",
    "draw_decision_boundary",
    "draw_network",
    "layer_sizes",
    "network_layout_mode",
    "network_node_names",
    "plot_decision_boundary",
    "plot_network",
    "plot_objective",
    "plot_predictions",
    "plot_rmse",
    "plot_sweep_curves",
    "plot_sweep_params",
    "plot_sweep_replicates",
    "save_gif",
]

if TYPE_CHECKING:
    from mlplab.plots.animation import animate_decision_boundary, animate_network, save_gif
    from mlplab.plots.curves import plot_rmse
    from mlplab.plots.network import (
        draw_network,
        layer_sizes,
        network_layout_mode,
        network_node_names,
        plot_network,
    )
    from mlplab.plots.painter import Painter
    from mlplab.plots.predictions import (
        draw_decision_boundary,
        plot_decision_boundary,
        plot_predictions,
    )
    from mlplab.plots.sweep import (
        plot_objective,
        plot_sweep_curves,
        plot_sweep_params,
        plot_sweep_replicates,
    )
else:
    # Lazy loading (PEP 562): the submodules import Matplotlib, which costs 0.4 s or more,
    # and a run with plot.enabled=false never draws, so importing mlplab.plots alone must
    # not import it; the first use of a function does. The type checker reads the imports
    # above instead and does not see this ``__getattr__`` (which would make it accept any
    # attribute name).

    def __getattr__(name: str) -> Any:
        """Import the submodule defining the public ``name`` and cache the object here."""
        if name not in _SUBMODULES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{__name__}.{_SUBMODULES[name]}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
