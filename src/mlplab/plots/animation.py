"""Animated GIFs: the network (or the decision boundary) at each weight snapshot.

``snapshots`` maps an epoch (0 = the initial weights, then counted from 1) to the list of
weight matrices at the end of that epoch, as the trainer records them. Frames are drawn
in epoch order, one per snapshot, and the GIF holds exactly ``len(snapshots)`` frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mlplab.plots._common import DEFAULT_DPI, figure_to_image, new_figure
from mlplab.plots.network import (
    GraphDrawing,
    draw_network,
    layer_sizes,
    max_abs_weight,
    network_layout_mode,
)
from mlplab.plots.predictions import draw_decision_boundary

#: Frame size in inches, and its dots per inch at ``dpi=DEFAULT_DPI`` (6 × 4 in at 80 dpi
#: = 480 × 320 px); another ``dpi`` scales the frames in proportion.
FRAME_SIZE = (6.0, 4.0)
FRAME_DPI = 80


def _frame_dpi(dpi: float) -> float:
    """Dots per inch of a frame for the figures' ``dpi`` (``FRAME_DPI`` at the default)."""
    return FRAME_DPI * dpi / DEFAULT_DPI


def _rmse_at(rmse: np.ndarray | None, epoch: int) -> str:
    """RMSE after ``epoch`` (``rmse[epoch - 1]``; ``rmse[0]`` for epoch 0), formatted."""
    if rmse is None:
        return ""
    arr = np.asarray(rmse, dtype=float).ravel()
    if arr.size == 0:
        return " — RMSE n/a"
    idx = min(max(epoch - 1, 0), arr.size - 1)
    return f" — RMSE {arr[idx]:.4g}"


def save_gif(frames: Sequence[Image.Image], path: str | Path, fps: int = 5) -> Path:
    """Save ``frames`` as a looping GIF at ``fps`` frames per second; return the path.

    Pillow merges a frame identical to the previous one into it; to keep exactly one
    GIF frame per input frame, such a frame gets one corner pixel inverted. The frame
    count of the written file is checked.
    """
    if not frames:
        raise ValueError("no frames to save")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] = []
    previous: np.ndarray | None = None
    for frame in frames:
        arr = np.array(frame.convert("RGB"))
        if previous is not None and arr.shape == previous.shape and np.array_equal(arr, previous):
            arr[-1, -1] = 255 - arr[-1, -1]
        previous = arr
        images.append(Image.fromarray(arr))
    duration = max(20, round(1000 / fps))
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        optimize=False,
    )
    with Image.open(out) as gif:
        written = getattr(gif, "n_frames", 1)
    if written != len(images):
        raise RuntimeError(f"{out}: wrote {written} GIF frames instead of {len(images)}")
    return out


def animate_network(
    snapshots: Mapping[int, list[np.ndarray]],
    rmse: np.ndarray | None,
    path: str | Path,
    fps: int = 5,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Write a GIF of the network diagram, one frame per snapshot in epoch order.

    Each frame is titled ``epoch E — RMSE r`` with r = ``rmse[E - 1]`` (``rmse[0]`` for
    epoch 0), ``rmse`` being the per-epoch train RMSE (epoch counted from 1). The
    edge-width scale (graph) or colour scale (heatmaps) is the largest |w| over all
    snapshots, and the drawing mode is the same for every frame. Frames are 480 × 320
    pixels at the default ``dpi``, scaled in proportion to ``dpi`` otherwise.
    """
    if not snapshots:
        raise ValueError("snapshots is empty: nothing to animate")
    epochs = sorted(snapshots)
    max_abs = max_abs_weight([snapshots[e] for e in epochs])
    mode = network_layout_mode(snapshots[epochs[0]])
    frames = []
    graph: GraphDrawing | None = None  # a graph is drawn on one figure, refilled each frame
    for epoch in epochs:
        if graph is None:
            fig = new_figure(FRAME_SIZE, dpi=_frame_dpi(dpi), layout=None)
            ax = fig.add_axes((0.01, 0.06, 0.98, 0.84))
            if mode == "graph":
                graph = GraphDrawing(ax, layer_sizes(snapshots[epoch]))
                graph.fix_label_angles()
        if graph is None:
            draw_network(ax, snapshots[epoch], max_abs=max_abs, mode=mode)
        else:
            graph.fill(snapshots[epoch], max_abs)
        fig.suptitle(f"epoch {epoch}{_rmse_at(rmse, epoch)}", fontsize=11, y=0.99, va="top")
        frames.append(figure_to_image(fig, release=graph is None))
    return save_gif(frames, path, fps)


def animate_decision_boundary(
    snapshots: Mapping[int, list[np.ndarray]],
    predict: Callable[[list[np.ndarray], np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    path: str | Path,
    fps: int = 5,
    rmse: np.ndarray | None = None,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Write a GIF of the decision boundary of each snapshot, in epoch order.

    ``predict(weights, X)`` returns the network's output for ``X`` (n × 2) with those
    weights. Frames are titled ``epoch E`` (plus ``— RMSE r`` when ``rmse`` is given) and
    sized as in :func:`animate_network`.
    """
    if not snapshots:
        raise ValueError("snapshots is empty: nothing to animate")
    frames = []
    for epoch in sorted(snapshots):
        weights = snapshots[epoch]
        fig = new_figure(FRAME_SIZE, dpi=_frame_dpi(dpi))
        ax = fig.add_subplot()

        def predict_at(points: np.ndarray, weights: list[np.ndarray] = weights) -> np.ndarray:
            return predict(weights, points)

        draw_decision_boundary(ax, predict_at, X, Y, resolution=100)
        ax.set_title(f"epoch {epoch}{_rmse_at(rmse, epoch)}", fontsize=11)
        frames.append(figure_to_image(fig))
    return save_gif(frames, path, fps)
