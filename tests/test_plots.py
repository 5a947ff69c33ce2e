"""Tests of mlplab.plots: every figure is written, opens, has content, and says what it should."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlplab.plots import (
    animate_decision_boundary,
    animate_network,
    layer_sizes,
    network_layout_mode,
    network_node_names,
    plot_decision_boundary,
    plot_network,
    plot_predictions,
    plot_rmse,
    save_gif,
)
from mlplab.plots import predictions as predictions_module
from mlplab.plots.curves import wants_log_scale

GREEN = (0, 128, 0)  # matplotlib / networkx "green"
RED = (255, 0, 0)  # "red"
BLUE = (0, 0, 255)  # "blue"


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


def _distinct_colours(arr: np.ndarray) -> int:
    packed = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    return int(np.unique(packed).size)


def _check_png(path: Path, size: tuple[int, int], min_colours: int = 50) -> np.ndarray:
    """The file exists, is a PNG of ``size`` (±1 px) and is not blank."""
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
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
    assert _near(arr, RED) < 20


def test_wide_network_graph(tmp_path: Path) -> None:
    weights = _random_weights([3, 64, 64, 2])
    arr = _check_png(plot_network(weights, tmp_path / "wide.png"), (900, 1100))
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    greenish = (g - np.maximum(r, b) > 40).sum()  # green edges blended with white
    reddish = ((r - g > 60) & (r - b > 60) & (np.abs(g - b) < 30)).sum()  # red edges
    assert greenish > 500 and reddish > 500


def test_very_wide_network_falls_back_to_heatmaps(tmp_path: Path) -> None:
    weights = _random_weights([3, 200, 2])
    arr = _check_png(plot_network(weights, tmp_path / "huge.png"), (820, 550))
    # RdYlGn heatmaps: plenty of distinct shades, and no edge lines drawn in pure green.
    assert _distinct_colours(arr) > 200


def test_network_with_non_finite_weights_does_not_crash(tmp_path: Path) -> None:
    v = TUTORIAL_V.copy()
    v[1, 0] = np.nan
    w = TUTORIAL_W.copy()
    w[0, 1] = np.inf
    _check_png(plot_network([v, w], tmp_path / "nan.png"), (700, 420))


# ---------------------------------------------------------------- curves


def test_log_scale_rule() -> None:
    assert wants_log_scale(np.geomspace(1.0, 1e-3, 10))
    assert not wants_log_scale(np.linspace(0.5, 0.1, 10))
    assert not wants_log_scale(np.array([np.nan, np.inf, 0.2, 0.1]))


def test_plot_rmse(tmp_path: Path) -> None:
    history = {"train_rmse": np.geomspace(0.5, 1e-4, 200), "val_rmse": np.geomspace(0.6, 2e-4, 200)}
    arr = _check_png(plot_rmse(history, tmp_path / "rmse.png"), (700, 450))
    assert _near(arr, (31, 119, 180), tol=10) > 100  # tab:blue train curve


def test_plot_rmse_with_accuracy_and_divergence(tmp_path: Path) -> None:
    rmse = np.array([0.5, 0.4, 0.6, np.inf, np.nan])
    history = {"train_rmse": rmse, "train_accuracy": np.array([0.2, 0.5, 0.6, 0.1, 0.0])}
    _check_png(plot_rmse(history, tmp_path / "acc.png", title="diverged"), (700, 650))


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
    assert _near(arr, (255, 128, 128), tol=20) > 200  # predicted points, red at alpha 0.5


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
    _check_png(path, (780, 720))


def test_predictions_panels_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictions_module, "MAX_PANELS", 2)
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((30, 5))
    path = plot_predictions(rng.standard_normal((30, 3)), Y, Y, tmp_path / "cap.png")
    _check_png(path, (780, 390))  # 1 × 2 grid of panels, not 2 × 3


def test_predictions_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 90)
    Y = np.eye(3)[labels]
    Y_pred = Y * 0.6 + rng.random((90, 3)) * 0.5
    path = plot_predictions(
        rng.standard_normal((90, 2)), Y, Y_pred, tmp_path / "cm.png", classification=True
    )
    _check_png(path, (660, 545))


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
