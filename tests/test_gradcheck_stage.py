"""The gradient-check stage (``train.gradcheck=true``, issue 8).

Backpropagation's gradients agree with central differences on every example experiment
in ``conf/experiment/``; an engine with a deliberately broken backward pass is caught, and
the run that used it ends FAILED in MLflow with the reason and the measured error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config, fresh_store, job_of
from mlplab.config import Config, validate
from mlplab.nn import MLP
from mlplab.nn import activations as acts
from mlplab.pipeline import gradient_error, run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
QUICK = ["plot.enabled=false", "tracking.log_model=false", "train.progress=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_store(tmp_path_factory)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Relative paths in the configs (data/iris.csv) are relative to the repository."""
    monkeypatch.chdir(ROOT)
    yield


def stage_error(cfg: Config) -> float:
    """What the pipeline's gradient-check stage measures for ``cfg``."""
    return gradient_error(job_of(cfg))


# -- it passes on the examples -------------------------------------------------------------
def test_the_examples_are_found() -> None:
    assert "tutorial" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_gradient_check_passes_on_every_example(experiment: str, in_repo: None) -> None:
    cfg = compose_config(f"experiment={experiment}", "train.gradcheck=true")
    validate(cfg)
    err = stage_error(cfg)
    assert 0.0 < err <= cfg.train.gradcheck_threshold, (experiment, err)


def test_a_passing_check_is_logged_and_the_run_finishes(store: str, tmp_path: Path) -> None:
    ovs = ["train.gradcheck=true", "train.epochs=3", "tracking.experiment=gc-pass", *QUICK]
    outcome = run(compose_config(*ovs, f"tracking.uri={store}"), tmp_path / "out", ovs)
    assert outcome.status == "FINISHED"
    err = outcome.metrics["gradcheck_max_rel_error"]
    assert 0.0 < err <= 1e-5
    logged = MlflowClient(store).get_run(str(outcome.run_id)).data.metrics
    assert logged["gradcheck_max_rel_error"] == pytest.approx(err, rel=1e-12)


# -- it fails on a broken engine -----------------------------------------------------------
def scale_first_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backprop's ∂E/∂W0 comes out 10 % too large (in the step training uses)."""
    original = MLP.make_step

    def broken(self: MLP, ws, loss="mse", scale=None, update=False):  # type: ignore[no-untyped-def]
        step = original(self, ws, loss, scale, update)

        def wrong(xT, tT):  # type: ignore[no-untyped-def]
            sse = step(xT, tT)
            self.grads[0] *= 1.1
            return sse

        return wrong

    monkeypatch.setattr(MLP, "make_step", broken)


def wrong_sigmoid_derivative(monkeypatch: pytest.MonkeyPatch) -> None:
    """f'(s) taken as f(s) instead of f(s)·(1 − f(s)): the forward pass is untouched."""
    import dataclasses
    import functools

    def wrong(a: np.ndarray, out: np.ndarray, slope: float) -> list:  # type: ignore[type-arg]
        return [functools.partial(np.copyto, out, a)]

    good = acts.get_activation("sigmoid")
    monkeypatch.setitem(acts.ACTIVATIONS, "sigmoid", dataclasses.replace(good, derivative=wrong))


def nan_sigmoid_derivative(monkeypatch: pytest.MonkeyPatch) -> None:
    """f'(s) comes out NaN: backprop's gradients are NaN."""
    import dataclasses
    import functools

    def nan(a: np.ndarray, out: np.ndarray, slope: float) -> list:  # type: ignore[type-arg]
        return [functools.partial(out.fill, np.nan)]

    good = acts.get_activation("sigmoid")
    monkeypatch.setitem(acts.ACTIVATIONS, "sigmoid", dataclasses.replace(good, derivative=nan))


BREAKAGES = {
    "scaled-gradient": scale_first_gradient,
    "wrong-derivative": wrong_sigmoid_derivative,
    "nan-derivative": nan_sigmoid_derivative,
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_backward_pass_fails_the_run(
    breakage: str, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config("train.gradcheck=true")
    assert stage_error(cfg) <= cfg.train.gradcheck_threshold  # the real engine passes
    BREAKAGES[breakage](monkeypatch)
    measured = stage_error(cfg)
    assert not measured <= 100 * cfg.train.gradcheck_threshold  # larger, or NaN

    experiment = f"gc-{breakage}"
    ovs = ["train.gradcheck=true", "train.epochs=3", f"tracking.experiment={experiment}", *QUICK]
    outcome = run(compose_config(*ovs, f"tracking.uri={store}"), tmp_path / "out", ovs)
    assert outcome.status == "FAILED" and outcome.failure
    assert "gradient check failed" in outcome.failure
    assert "train.gradcheck_threshold=1e-05" in outcome.failure

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (logged,) = client.search_runs([exp.experiment_id])
    assert logged.info.status == "FAILED"
    assert "gradient check failed" in logged.data.tags["failure_reason"]
    assert logged.data.metrics["gradcheck_max_rel_error"] == pytest.approx(
        measured, rel=1e-9, nan_ok=True
    )
    assert "train_rmse" not in logged.data.metrics  # it stopped before training
    assert not (tmp_path / "out" / "weights" / "final.npz").exists()


def test_the_check_covers_the_gradients_training_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    scale_first_gradient(monkeypatch)
    cfg = compose_config("train.gradcheck=true", "optimizer=adam")  # adam: gradients, no fold
    assert stage_error(cfg) > cfg.train.gradcheck_threshold
