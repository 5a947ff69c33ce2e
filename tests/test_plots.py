"""Tests of mlplab.plots: every figure is written, opens, has content, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import mlplab.plots
from mlplab.plots import (
    Painter,
    animate_decision_boundary,
    animate_network,
    layer_sizes,
    network_layout_mode,
    network_node_names,
    plot_decision_boundary,
    plot_network,
    plot_objective,
    plot_predictions,
    plot_rmse,
    plot_sweep_curves,
    plot_sweep_params,
    save_gif,
)
from mlplab.plots import predictions as predictions_module
from mlplab.plots.curves import RmseFigure, wants_log_scale
from mlplab.plots.network import NetworkFigure
from mlplab.plots.predictions import PredictionsFigure
from mlplab.plots.sweep import natural_key
from mlplab.report import ChildRecord, summary_rows

GREEN = (0, 128, 0)  # matplotlib "green"
RED = (255, 0, 0)  # "red"
BLUE = (0, 0, 255)  # "blue"
GREY = (128, 128, 128)  # "grey": edges of non-finite weights, medians of a sweep panel
RED_HALF = (255, 128, 128)  # "red" at alpha 0.5 over white: predicted points
TAB_BLUE = (31, 119, 180)  # "tab:blue" = "C0"
TAB_ORANGE = (255, 127, 14)  # "C1"
TAB_GREEN = (44, 160, 44)  # "C2"
TAB_RED = (214, 39, 40)  # "C3"


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=int)


def _near(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> int:
    """Number of pixels within ``tol`` (each channel) of ``colour``."""
    return int(np.all(np.abs(arr - np.asarray(colour)) <= tol, axis=-1).sum())


def _tint(hex_colour: str, alpha: float) -> tuple[int, int, int]:
    """``hex_colour`` drawn with ``alpha`` over white."""
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    r, g, b = (round(255 - alpha * (255 - c)) for c in rgb)
    return r, g, b


def _reddish(arr: np.ndarray) -> int:
    """Pixels clearly red (red well above green and blue), whatever their shade."""
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    return int(((r - g > 60) & (r - b > 40)).sum())


def _greenish(arr: np.ndarray) -> int:
    """Pixels clearly green (green well above red and blue), whatever their shade."""
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    return int(((g - r > 40) & (g - b > 20)).sum())


def _distinct_colours(arr: np.ndarray) -> int:
    packed = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    return int(np.unique(packed).size)


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _check_png(path: Path, size: tuple[int, int], min_colours: int = 50) -> np.ndarray:
    """The file exists, is a PNG of ``size`` (±1 px) and is not blank."""
    width, height = _png_size(path)
    assert abs(width - size[0]) <= 1 and abs(height - size[1]) <= 1, (width, height)
    arr = _rgb(path)
    assert _distinct_colours(arr) > min_colours, _distinct_colours(arr)
    assert (arr < 250).any(axis=-1).mean() > 0.01  # more than 1 % of the pixels drawn
    return arr


def _random_weights(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((a + 1, b)) for a, b in pairwise(sizes)]


TUTORIAL_V = np.array([[0.35, -0.62], [1.42, -0.91], [-1.10, 0.77]])
TUTORIAL_W = np.array([[-0.48, 1.21], [0.93, -1.37], [-0.25, 0.66]])


# ---------------------------------------------------------------- network


def test_node_names_follow_the_tutorial() -> None:
    assert network_node_names([TUTORIAL_V, TUTORIAL_W]) == [
        ["B1", "X1", "X2"],
        ["B2", "Z1", "Z2"],
        ["Y1", "Y2"],
    ]
    deep = network_node_names(_random_weights([2, 3, 2, 1]))
    assert deep == [
        ["B1", "X1", "X2"],
        ["B2", "H1_1", "H1_2", "H1_3"],
        ["B3", "H2_1", "H2_2"],
        ["Y1"],
    ]


def test_layer_sizes_and_shape_errors() -> None:
    assert layer_sizes(_random_weights([3, 5, 2])) == [3, 5, 2]
    with pytest.raises(ValueError, match="rows"):
        layer_sizes([np.zeros((4, 5)), np.zeros((5, 2))])  # needs 6 rows
    with pytest.raises(ValueError, match="empty"):
        layer_sizes([])


def test_layout_mode_thresholds() -> None:
    assert network_layout_mode([TUTORIAL_V, TUTORIAL_W]) == "graph"
    assert network_layout_mode(_random_weights([3, 64, 64, 2])) == "graph"
    assert network_layout_mode(_random_weights([3, 200, 2])) == "heatmap"  # > 64 units
    assert network_layout_mode(_random_weights([60, 60, 60, 2])) == "heatmap"  # > 5000 edges


def test_tutorial_network_has_green_and_red_edges(tmp_path: Path) -> None:
    path = plot_network([TUTORIAL_V, TUTORIAL_W], tmp_path / "network.png", subtitle="epoch 42")
    arr = _check_png(path, (700, 420))
    assert _near(arr, GREEN) > 300
    assert _near(arr, RED) > 300


def test_all_positive_network_has_no_red(tmp_path: Path) -> None:
    weights = [np.abs(TUTORIAL_V) + 0.1, np.abs(TUTORIAL_W) + 0.1]
    arr = _check_png(plot_network(weights, tmp_path / "pos.png"), (700, 420))
    assert _near(arr, GREEN) > 300
    assert _reddish(arr) < 20


def test_wide_network_graph(tmp_path: Path) -> None:
    weights = _random_weights([3, 64, 64, 2])
    arr = _check_png(plot_network(weights, tmp_path / "wide.png"), (900, 1100))
    # faint edges: green and red blended with white
    assert _greenish(arr) > 500 and _reddish(arr) > 500


def test_very_wide_network_falls_back_to_heatmaps(tmp_path: Path) -> None:
    weights = _random_weights([3, 200, 2])
    arr = _check_png(plot_network(weights, tmp_path / "huge.png"), (820, 550))
    # RdYlGn heatmaps: plenty of distinct shades, large red and green areas, and no edge
    # drawn in the graph's pure green (RdYlGn's greens are bluer than that).
    assert _distinct_colours(arr) > 200
    assert _reddish(arr) > 5000 and _greenish(arr) > 5000
    assert _near(arr, GREEN) < 20


def test_network_with_non_finite_weights_does_not_crash(tmp_path: Path) -> None:
    v = TUTORIAL_V.copy()
    v[1, 0] = np.nan
    w = TUTORIAL_W.copy()
    w[0, 1] = np.inf
    arr = _check_png(plot_network([v, w], tmp_path / "nan.png"), (700, 420))
    # the two non-finite weights are drawn as the widest edges, in grey (anti-aliased
    # text alone gives a few hundred such pixels); the finite ones keep their colours
    assert _near(arr, GREY, tol=10) > 1500
    assert _near(arr, GREEN) > 300 and _near(arr, RED) > 300


# ---------------------------------------------------------------- curves


def test_log_scale_rule() -> None:
    assert wants_log_scale(np.geomspace(1.0, 1e-3, 10))
    assert not wants_log_scale(np.linspace(0.5, 0.1, 10))
    assert not wants_log_scale(np.array([np.nan, np.inf, 0.2, 0.1]))


def test_plot_rmse(tmp_path: Path) -> None:
    history = {"train_rmse": np.geomspace(0.5, 1e-4, 200), "val_rmse": np.geomspace(0.6, 2e-4, 200)}
    arr = _check_png(plot_rmse(history, tmp_path / "rmse.png"), (700, 450))
    assert _near(arr, (31, 119, 180), tol=10) > 100  # tab:blue train curve


def test_the_kept_epoch_is_marked_and_gone_from_the_next_member(tmp_path: Path) -> None:
    """An early-stopped run's RMSE figure marks the epoch whose weights were kept (a grey
    dashed line, named in the legend); the next member drawn on that figure has none."""
    history = {"train_rmse": np.geomspace(0.5, 1e-2, 60), "val_rmse": np.geomspace(0.6, 2e-2, 60)}
    grey = (89, 89, 89)  # the line's colour, "0.35"
    plain = _rgb(plot_rmse(history, tmp_path / "plain.png"))
    marked = _rgb(plot_rmse(history, tmp_path / "marked.png", kept=40))
    assert _near(marked, grey, tol=6) > _near(plain, grey, tol=6) + 150  # text is grey too
    painter = Painter()
    assert np.array_equal(_rgb(painter.rmse(history, tmp_path / "p1.png", kept=40)), marked)
    assert np.array_equal(_rgb(painter.rmse(history, tmp_path / "p2.png")), plain)


def test_plot_rmse_with_accuracy_and_divergence(tmp_path: Path) -> None:
    rmse = np.array([0.5, 0.4, 0.6, np.inf, np.nan])
    history = {"train_rmse": rmse, "train_accuracy": np.array([0.2, 0.5, 0.6, 0.1, 0.0])}
    arr = _check_png(plot_rmse(history, tmp_path / "acc.png", title="diverged"), (700, 650))
    assert _near(arr, TAB_BLUE, tol=10) > 100  # the finite part of the train RMSE
    assert _near(arr, TAB_GREEN, tol=10) > 100  # train accuracy, in its own panel
    assert _near(arr, TAB_RED, tol=10) < 20  # no validation accuracy was given


# ---------------------------------------------------------------- predictions


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_predictions_tutorial_2_to_2(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.random((50, 2))
    Y = _sigmoid(_sigmoid(X) + 0.05) + 0.02
    Y_pred = Y + 0.02 * rng.standard_normal(Y.shape)
    arr = _check_png(plot_predictions(X, Y, Y_pred, tmp_path / "pred.png"), (600, 740))
    assert _near(arr, BLUE, tol=20) > 200  # actual points
    assert _near(arr, RED_HALF, tol=20) > 200  # predicted points, red at alpha 0.5


def test_predictions_one_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, (60, 1))
    arr = _check_png(plot_predictions(x, np.sin(x), np.tanh(x), tmp_path / "p1.png"), (600, 400))
    assert _near(arr, RED, tol=20) > 200  # the prediction line


def test_predictions_many_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 10))
    Y = X[:, :3] * 2.0
    path = plot_predictions(X, Y, Y + 0.1 * rng.standard_normal(Y.shape), tmp_path / "p10.png")
    arr = _check_png(path, (780, 720))
    # predicted against actual: red points (alpha 0.5) only, no blue "actual" series
    assert _near(arr, RED_HALF, tol=20) > 150
    assert _near(arr, BLUE, tol=20) == 0


def test_predictions_panels_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictions_module, "MAX_PANELS", 2)
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((30, 5))
    path = plot_predictions(rng.standard_normal((30, 3)), Y, Y, tmp_path / "cap.png")
    arr = _check_png(path, (780, 390))  # 1 × 2 grid of panels, not 2 × 3
    assert _near(arr, RED_HALF, tol=20) > 50


def test_predictions_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 90)
    Y = np.eye(3)[labels]
    Y_pred = Y * 0.6 + rng.random((90, 3)) * 0.5
    path = plot_predictions(
        rng.standard_normal((90, 2)), Y, Y_pred, tmp_path / "cm.png", classification=True
    )
    arr = _check_png(path, (660, 545))
    # a "Blues" confusion matrix whose diagonal (most samples) is dark; no scatter
    assert _near(arr, (8, 48, 107), tol=20) > 5000
    assert _near(arr, RED_HALF, tol=20) == 0


def test_predictions_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        plot_predictions(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 3)), Path("unused.png"))


def test_decision_boundary(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((100, 2))
    Y = np.eye(2)[(X[:, 0] + X[:, 1] > 0).astype(int)]

    def predict(points: np.ndarray) -> np.ndarray:
        s = points[:, 0] + points[:, 1]
        return np.column_stack([-s, s])

    arr = _check_png(plot_decision_boundary(predict, X, Y, tmp_path / "db.png"), (600, 500))
    # Both class regions are filled (tab:blue and tab:orange at alpha 0.35 over white).
    assert _near(arr, _tint("#1f77b4", 0.35), tol=4) > 10_000
    assert _near(arr, _tint("#ff7f0e", 0.35), tol=4) > 10_000


# ---------------------------------------------------------------- animations


def _gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as im:
        assert im.format == "GIF"
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB"), dtype=int))
    return frames


def test_animate_network(tmp_path: Path) -> None:
    base = [TUTORIAL_V, TUTORIAL_W]
    snapshots = {e: [w * (1.0 + e / 10.0) for w in base] for e in (20, 0, 1, 5, 10)}
    rmse = np.geomspace(0.5, 0.05, 20)
    path = animate_network(snapshots, rmse, tmp_path / "net.gif", fps=4)
    frames = _gif_frames(path)
    assert len(frames) == len(snapshots)
    assert frames[0].shape == (320, 480, 3)
    assert not np.array_equal(frames[0], frames[-1])
    assert _near(frames[0], GREEN) > 100 and _near(frames[0], RED) > 100


def test_animate_network_unchanged_weights_keeps_every_frame(tmp_path: Path) -> None:
    snapshots = {e: [TUTORIAL_V, TUTORIAL_W] for e in range(4)}
    path = animate_network(snapshots, np.full(3, 0.1), tmp_path / "same.gif")
    assert len(_gif_frames(path)) == 4


def test_animate_network_heatmap_mode(tmp_path: Path) -> None:
    snapshots = {e: _random_weights([3, 100, 2], seed=e) for e in (0, 1)}
    frames = _gif_frames(animate_network(snapshots, np.array([0.3]), tmp_path / "hm.gif"))
    assert len(frames) == 2 and not np.array_equal(frames[0], frames[1])


def test_save_gif_keeps_identical_frames(tmp_path: Path) -> None:
    frame = Image.new("RGB", (40, 30), (200, 10, 10))
    path = save_gif([frame, frame, frame], tmp_path / "id.gif", fps=10)
    assert len(_gif_frames(path)) == 3


def test_animate_decision_boundary(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 2))
    Y = np.eye(2)[(X[:, 0] > 0).astype(int)]

    def predict(weights: list[np.ndarray], points: np.ndarray) -> np.ndarray:
        hidden = np.tanh(np.column_stack([np.ones(len(points)), points]) @ weights[0])
        return np.column_stack([np.ones(len(hidden)), hidden]) @ weights[1]

    snapshots = {e: _random_weights([2, 4, 2], seed=10 + e) for e in range(3)}
    path = animate_decision_boundary(snapshots, predict, X, Y, tmp_path / "db.gif")
    frames = _gif_frames(path)
    assert len(frames) == 3
    assert not np.array_equal(frames[0], frames[-1])


def test_animations_scale_with_dpi(tmp_path: Path) -> None:
    snapshots = {e: _random_weights([2, 3, 2], seed=e) for e in (0, 1)}
    path = animate_network(snapshots, None, tmp_path / "net.gif", dpi=50)
    assert _gif_frames(path)[0].shape == (160, 240, 3)  # half of 480 × 320

    def predict(weights: list[np.ndarray], points: np.ndarray) -> np.ndarray:
        return np.column_stack([-points[:, 0], points[:, 0]])

    X = np.random.default_rng(8).standard_normal((20, 2))
    path = animate_decision_boundary(
        snapshots, predict, X, X[:, 0] > 0, tmp_path / "db.gif", dpi=50
    )
    assert _gif_frames(path)[0].shape == (160, 240, 3)


# ---------------------------------------------------------------- sweep reports


def _children(n: int, failed: int = 0) -> list[ChildRecord]:
    """``n`` finished children sweeping the learning rate and the hidden width, then
    ``failed`` failed ones without a test RMSE."""
    children = []
    for i in range(n + failed):
        lr, hidden = f"{0.001 * 2.0**i:g}", f"[{2 ** (i % 3 + 1)}]"
        overrides = [f"optimizer.lr={lr}", f"model.hidden={hidden}"]
        done = i < n
        children.append(
            ChildRecord(
                f"{i:032x}",
                f"lr={lr} hidden={hidden}",
                "FINISHED" if done else "FAILED",
                overrides,
                {"test_rmse": 0.5 / (i + 1), "epochs_run": 10.0} if done else {"epochs_run": 2.0},
                failure_reason="" if done else "diverged at epoch 3: loss=inf",
                history=list(np.geomspace(1.0, 0.5 / (i + 1), 10)) if done else [0.5, 4.0],
            )
        )
    return children


def test_sweep_curves(tmp_path: Path) -> None:
    arr = _check_png(plot_sweep_curves(_children(2, failed=1), tmp_path / "c.png"), (1000, 600))
    # one colour per child, in run-name order (the failed child is dashed and short)
    assert _near(arr, TAB_BLUE, tol=10) > 200
    assert _near(arr, TAB_ORANGE, tol=10) > 200
    assert _near(arr, TAB_GREEN, tol=10) > 20
    empty = [ChildRecord("a", "no history", "FAILED")]
    arr = _check_png(plot_sweep_curves(empty, tmp_path / "e.png"), (1000, 600), min_colours=10)
    assert _near(arr, TAB_BLUE, tol=10) == 0  # "no RMSE history", no curve


def test_sweep_curves_sit_at_their_logged_epochs_in_the_order_of_their_numbers(
    tmp_path: Path,
) -> None:
    """A long run's thinned history is drawn at the epochs it was logged at (not 1, 2, ...),
    and runs are ordered by the numbers in their names (seed=2 before seed=10)."""
    assert sorted(["seed=10", "seed=2", "lr=0.1", "lr=0.05", "lr=1e-05"], key=natural_key) == [
        "lr=1e-05",
        "lr=0.05",
        "lr=0.1",
        "seed=2",
        "seed=10",
    ]
    steps = [1, *range(100, 1_000_001, 100_000), 1_000_000]
    long = ChildRecord("a", "seed=0", "FINISHED", history=[1.0] * len(steps), steps=steps)
    fig_path = plot_sweep_curves([long], tmp_path / "long.png")
    # the same values without their steps (drawn at 1..12) make another figure: other ticks
    short = ChildRecord("a", "seed=0", "FINISHED", history=[1.0] * len(steps))
    assert not np.array_equal(_rgb(fig_path), _rgb(plot_sweep_curves([short], tmp_path / "s.png")))


def test_sweep_params(tmp_path: Path) -> None:
    keys = ["optimizer.lr", "model.hidden"]
    rows = summary_rows(_children(12, failed=2), keys)
    arr = _check_png(plot_sweep_params(rows, keys, tmp_path / "p.png"), (720, 380))
    # points in tab:blue at alpha 0.8; grey medians joining the 3 hidden-width categories
    assert _near(arr, _tint("#1f77b4", 0.8), tol=12) > 100
    assert _near(arr, GREY, tol=10) > 50
    arr = _check_png(plot_sweep_params(rows, [], tmp_path / "n.png"), (400, 380))
    assert _near(arr, _tint("#1f77b4", 0.8), tol=12) > 20  # against the run name


def test_plot_objective(tmp_path: Path) -> None:
    values = [0.5, None, 0.3, float("nan"), 0.4, 0.1, 0.2]
    arr = _check_png(plot_objective(values, tmp_path / "o.png"), (700, 400))
    assert _near(arr, TAB_BLUE, tol=10) > 50  # the trials
    assert _near(arr, TAB_RED, tol=10) > 300  # the best-so-far steps
    arr = _check_png(plot_objective([None], tmp_path / "f.png"), (700, 400), min_colours=10)
    assert _near(arr, TAB_RED, tol=10) == 0  # no finished trial: nothing drawn


# ---------------------------------------------------------------- painter (many members)

#: Figure kind → its one-off function (a Painter has a method of the same name).
ONE_OFF: dict[str, Callable[..., Path]] = {
    "rmse": plot_rmse,
    "predictions": plot_predictions,
    "network": plot_network,
}


def _member(seed: int) -> dict[str, Any]:
    """The figure inputs of a tutorial-shaped member (SPEC §1) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    epochs = int(rng.integers(380, 490))
    X = rng.random((50, 2))
    Y = _sigmoid(_sigmoid(X) + 0.1 * rng.random()) + 0.1 * rng.random()
    return {
        "history": {"train_rmse": 0.01 + rng.uniform(0.15, 0.4) * np.exp(-np.arange(epochs) / 60)},
        "X": X,
        "Y": Y,
        "Y_pred": Y + 0.02 * rng.standard_normal(Y.shape),
        "weights": [2.0 * rng.standard_normal((3, 2)), 2.0 * rng.standard_normal((3, 2))],
    }


def _draw(kind: str, painter: Painter | None, m: dict[str, Any], path: Path, **kw: Any) -> Path:
    """Draw member ``m``'s figure of ``kind`` to ``path`` with ``painter`` (None: one-off)."""
    args = {
        "rmse": (m["history"],),
        "predictions": (m["X"], m["Y"], m["Y_pred"]),
        "network": (m["weights"],),
    }[kind]
    if kind == "network":
        kw.setdefault("subtitle", f"{m['history']['train_rmse'].size} epochs")
    draw = ONE_OFF[kind] if painter is None else getattr(painter, kind)
    return draw(*args, path, **kw)


def _same_decorations(m: dict[str, Any], seed: int) -> dict[str, Any]:
    """A member that differs from ``m`` only where the data are drawn: the same ranges
    (hence ticks), final RMSE and epochs, but another curve, other points, other weights."""
    rng = np.random.default_rng(seed)
    rmse = m["history"]["train_rmse"]
    t = np.linspace(0.0, 1.0, rmse.size)
    Y_pred = m["Y_pred"].copy()
    for k in range(Y_pred.shape[1]):
        Y_pred[:, k] = rng.permutation(Y_pred[:, k])
    return {
        **m,
        "history": {"train_rmse": rmse[0] + (rmse[-1] - rmse[0]) * t ** rng.uniform(0.3, 0.6)},
        "Y_pred": Y_pred,
        "weights": [-w[::-1] for w in m["weights"]],
    }


@pytest.mark.parametrize("kind", sorted(ONE_OFF))
def test_painter_draws_the_one_off_figures(tmp_path: Path, kind: str) -> None:
    """A Painter's first figure, and a reused figure whose decorations are unchanged, have
    the pixels of the one-off function's; every member's figure says what it should."""
    painter = Painter()
    first = _member(1)
    members = [first, _same_decorations(first, 2), _member(3), _member(4)]
    pixels: list[np.ndarray] = []
    for i, m in enumerate(members):
        arr = _rgb(_draw(kind, painter, m, tmp_path / f"{kind}{i}.png"))
        if i < 2 or kind == "network":  # the network's axes are placed by hand: no layout
            assert np.array_equal(arr, _rgb(_draw(kind, None, m, tmp_path / f"one{i}.png")))
        if kind == "rmse":
            assert arr.shape == (450, 700, 3) and _near(arr, TAB_BLUE, tol=10) > 100
        elif kind == "predictions":
            assert arr.shape == (740, 600, 3)
            assert _near(arr, BLUE, tol=20) > 200 and _near(arr, RED_HALF, tol=20) > 200
        else:
            assert arr.shape == (420, 700, 3)
            assert _near(arr, GREEN) > 300 and _near(arr, RED) > 300
        assert not any(np.array_equal(arr, other) for other in pixels)  # each member its own
        pixels.append(arr)


@pytest.mark.parametrize("kind", sorted(ONE_OFF))
def test_painter_leaves_nothing_of_a_member_behind(tmp_path: Path, kind: str) -> None:
    """Member B drawn after member A (on A's figure) is B drawn alone."""
    painter = Painter()
    b = _member(5)
    a = _same_decorations(b, 6)  # so that B after A keeps B's layout
    alone = _rgb(_draw(kind, painter, b, tmp_path / "b.png"))
    assert not np.array_equal(_rgb(_draw(kind, painter, a, tmp_path / "a.png")), alone)
    assert np.array_equal(_rgb(_draw(kind, painter, b, tmp_path / "b_after_a.png")), alone)


def _data(X: np.ndarray, Y: np.ndarray, Y_pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The arguments of :meth:`PredictionsFigure.fill`, the same ``names`` for X and Y."""
    return {"X": X, "Y": Y, "Y_pred": Y_pred, "fnames": names, "tnames": names}


#: Per kind, a template for the tutorial's shapes, and members unlike the tutorial's that
#: fill it first: log scale and markers, nothing finite, far larger values, NaN and inf.
TEMPLATES: dict[str, tuple[Callable[[], Any], list[dict[str, Any]]]] = {
    "rmse": (
        lambda: RmseFigure(("train_rmse",)),
        [
            {"curves": {"train_rmse": np.geomspace(0.5, 1e-4, 20)}, "title": "log"},
            {"curves": {"train_rmse": np.full(30, np.nan)}, "title": "nothing finite"},
        ],
    ),
    "predictions": (
        lambda: PredictionsFigure(2, 2),
        [
            _data(np.eye(2) * 1e3, -np.eye(2), np.full((2, 2), np.inf), ["a", "b"]),
            _data(np.full((3, 2), np.nan), np.ones((3, 2)), np.ones((3, 2)), ["c", "d"]),
        ],
    ),
    "network": (
        lambda: NetworkFigure([2, 2, 2], True),
        [
            {"weights": [-TUTORIAL_V, np.full((3, 2), np.nan)], "title": "t", "subtitle": "s"},
            {"weights": [TUTORIAL_V * np.inf, TUTORIAL_W], "title": "u", "subtitle": "v"},
        ],
    ),
}


def _fill_args(kind: str, m: dict[str, Any]) -> dict[str, Any]:
    """The arguments of the ``fill`` of a ``kind`` template for member ``m``."""
    if kind == "rmse":
        return {"curves": m["history"], "title": "RMSE across epochs"}
    if kind == "predictions":
        return _data(m["X"], m["Y"], m["Y_pred"], ["x1", "x2"])
    return {"weights": m["weights"], "title": "Final network", "subtitle": "member"}


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_template_keeps_nothing_of_earlier_members(tmp_path: Path, kind: str) -> None:
    """A template filled with member after member draws each as a new template does (the
    axes placed alike: no layout engine)."""
    build, odd = TEMPLATES[kind]
    members = [_fill_args(kind, _member(10)), *odd, _fill_args(kind, _member(11))]
    reused = build()
    reused.fig.set_layout_engine(None)
    for i, m in enumerate(members):
        fresh = build()
        fresh.fig.set_layout_engine(None)
        for template, name in ((reused, "reused"), (fresh, "fresh")):
            template.fill(**m)
            template.fig.savefig(tmp_path / f"{name}{i}.png")
        assert np.array_equal(
            _rgb(tmp_path / f"reused{i}.png"), _rgb(tmp_path / f"fresh{i}.png")
        ), i


def test_painter_figures_of_other_shapes(tmp_path: Path) -> None:
    """Members of other shapes get templates of their own (or one-off figures: confusion
    matrix, heatmaps), the same pixels as the one-off functions; with room for only two
    templates, the tutorial's are dropped and built again."""
    painter = Painter(max_templates=2)
    rng = np.random.default_rng(7)
    x = rng.uniform(-3, 3, (60, 1))
    labels = np.eye(3)[rng.integers(0, 3, 90)]
    history = {"train_rmse": np.geomspace(0.5, 0.01, 40), "val_accuracy": np.linspace(0.2, 0.9, 40)}
    others: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("rmse", (history,), {"title": "with accuracy"}),
        ("predictions", (x, np.sin(x), np.tanh(x)), {}),
        ("predictions", (labels[:, :2], labels, labels * 0.7), {"classification": True}),
        ("network", (_random_weights([2, 3, 2, 1]),), {"subtitle": "deep"}),
        ("network", (_random_weights([3, 200, 2]),), {}),  # heatmaps
    ]
    tutorial = _member(8)
    first = {
        kind: _rgb(_draw(kind, painter, tutorial, tmp_path / f"t{kind}.png")) for kind in ONE_OFF
    }
    for i, (kind, args, kw) in enumerate(others):
        fast = getattr(painter, kind)(*args, tmp_path / f"fast{i}.png", **kw)
        one_off = ONE_OFF[kind](*args, tmp_path / f"one{i}.png", **kw)
        assert np.array_equal(_rgb(fast), _rgb(one_off)), (kind, kw)
    for kind in ONE_OFF:
        again = _rgb(_draw(kind, painter, tutorial, tmp_path / f"again{kind}.png"))
        assert np.array_equal(again, first[kind]), kind


def test_painter_lays_out_again_when_the_texts_do_not_fit(tmp_path: Path) -> None:
    """A member whose tick labels need more room than the figure's layout gives them is
    laid out again (its one-off figure); no text is cut at the figure's edges after it."""
    painter = Painter()
    narrow = {"train_rmse": np.linspace(0.4, 0.05, 300)}  # ticks 0.1 .. 0.4
    wide = {"train_rmse": np.linspace(0.0095, 0.0012, 300)}  # ticks 0.002 .. 0.008
    painter.rmse(narrow, tmp_path / "narrow.png")
    arr = _rgb(painter.rmse(wide, tmp_path / "wide.png"))
    assert np.array_equal(arr, _rgb(plot_rmse(wide, tmp_path / "wide_one_off.png")))
    for path in (painter.rmse(narrow, tmp_path / "narrow2.png"), tmp_path / "wide.png"):
        arr = _rgb(path)
        assert (arr[:, :2] == 255).all() and (arr[:, -2:] == 255).all()  # nothing cut


# ---------------------------------------------------------------- dpi and imports

#: Every still figure, drawn at a given dpi.
STILL_FIGURES: dict[str, Callable[[Path, float], Path]] = {
    "rmse": lambda p, dpi: plot_rmse({"train_rmse": np.geomspace(1, 0.1, 20)}, p, dpi=dpi),
    "predictions": lambda p, dpi: plot_predictions(
        np.eye(3), np.eye(3), np.eye(3) * 0.9, p, dpi=dpi
    ),
    "network": lambda p, dpi: plot_network([TUTORIAL_V, TUTORIAL_W], p, dpi=dpi),
    "decision_boundary": lambda p, dpi: plot_decision_boundary(
        lambda x: x, np.eye(2), np.eye(2), p, dpi=dpi
    ),
    "sweep_curves": lambda p, dpi: plot_sweep_curves(_children(2), p, dpi=dpi),
    "sweep_params": lambda p, dpi: plot_sweep_params(
        summary_rows(_children(3), ["optimizer.lr"]), ["optimizer.lr"], p, dpi=dpi
    ),
    "objective": lambda p, dpi: plot_objective([0.3, 0.2], p, dpi=dpi),
    "painter_rmse": lambda p, dpi: _draw("rmse", Painter(), _member(9), p, dpi=dpi),
    "painter_predictions": lambda p, dpi: _draw("predictions", Painter(), _member(9), p, dpi=dpi),
    "painter_network": lambda p, dpi: _draw("network", Painter(), _member(9), p, dpi=dpi),
}


@pytest.mark.parametrize("name", sorted(STILL_FIGURES))
def test_dpi_scales_the_png(tmp_path: Path, name: str) -> None:
    small = _png_size(STILL_FIGURES[name](tmp_path / "50.png", 50))
    large = _png_size(STILL_FIGURES[name](tmp_path / "200.png", 200))
    for s, g in zip(small, large, strict=True):
        assert abs(g - 4 * s) <= 4, (small, large)  # 4 × the pixels, up to rounding


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = (
        "import sys, mlplab.plots\n"
        "assert 'matplotlib' not in sys.modules and 'networkx' not in sys.modules\n"
        "from mlplab.plots import plot_rmse\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_public_names_resolve() -> None:
    for name in mlplab.plots.__all__:
        function = getattr(mlplab.plots, name)
        assert callable(function) and function.__module__.startswith("mlplab.plots.")
        assert name in dir(mlplab.plots)
    assert not hasattr(mlplab.plots, "no_such_plot")
