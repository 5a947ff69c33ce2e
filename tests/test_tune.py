"""`make tune`: a parallel Optuna study whose trials are MLflow children, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import FixedTrial, TrialState

from conftest import run_cli
from mlplab.errors import ConfigError
from mlplab.tune import (
    TuneSettings,
    counted_trials,
    load_settings,
    open_storage,
    parse_space,
    suggest,
    validate_settings,
)


def tune(tmp: Path, *args: str) -> Any:
    return run_cli(
        "tune.study_name=test-study",
        f"tune.out_dir={tmp / 'out'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "tracking.experiment=tune-test",
        "tracking.log_model=false",
        "plot.enabled=false",
        "train.epochs=50",
        *args,
        script="pipelines/tune.py",
        timeout=600,
    )


def study_of(tmp: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="test-study", storage=open_storage(str(tmp / "optuna.journal"))
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parallel_study_logs_children_and_resumes(tmp_path: Path) -> None:
    first = tune(tmp_path, "tune.n_trials=3", "tune.n_jobs=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "best parameters:" in first.stdout
    study = study_of(tmp_path)  # the journal beside the MLflow store
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    pids = {t.user_attrs["pid"] for t in study.trials}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    best = study.best_trial
    assert tags["best_trial"] == str(best.number)
    assert json.loads(tags["best_params"]) == best.params
    assert tags["best_overrides"] == " ".join(best.user_attrs["overrides"])
    for item in best.user_attrs["overrides"]:
        key, _, value = item.partition("=")
        assert tags[f"best.{key}"] == value
    assert parent.data.metrics["best_value"] == pytest.approx(best.value, rel=1e-12)

    def children() -> list[Any]:
        exp = client.get_experiment_by_name("tune-test")
        assert exp is not None
        return client.search_runs(
            [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
        )

    kids = children()
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)
    assert {k.data.tags["optuna_trial"] for k in kids} == {"0", "1", "2"}
    assert all(k.info.run_name.startswith("trial ") for k in kids)
    for t in study.trials:  # the objective is the child's test RMSE
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.metrics["test_rmse"] == pytest.approx(t.value, rel=1e-12)

    # resume: more trials continue the same study under the same parent run
    second = tune(tmp_path, "tune.n_trials=5", "tune.n_jobs=1")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "3 of 5 trials done, 2 to run" in second.stdout
    study = study_of(tmp_path)
    assert len(study.trials) == 5
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(pids) >= 1 and study.trials[4].user_attrs["pid"] not in pids
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    assert len(children()) == 5
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_a_bad_override_is_refused_before_any_trial(tmp_path: Path) -> None:
    proc = tune(tmp_path, "tune.n_trials=2", "model.activation=nope")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model.activation='nope'")
    assert not (tmp_path / "optuna.journal").exists()


# -- the pure parts -----------------------------------------------------------------------
def test_the_default_study_and_its_conditional_learning_rate() -> None:
    settings = load_settings("default", ["n_trials=7"])
    assert settings.n_trials == 7
    specs = parse_space(settings.space)
    assert specs[-1].key == "optimizer.lr"  # after the parameter it depends on
    trial = FixedTrial({"optimizer": "adam", "model.hidden": "[4,4]", "optimizer.lr[adam]": 0.0125})
    assert suggest(trial, specs) == {
        "optimizer": "adam",
        "model.hidden": "[4,4]",
        "optimizer.lr": "0.0125",
    }


@pytest.mark.parametrize(
    ("space", "key"),
    [
        ({}, "tune.space"),
        ({"optimizer.lr": {"low": 1.0, "high": 0.1}}, "tune.space.optimizer.lr"),
        ({"optimizer.lr": {"low": 0.0, "high": 1.0, "log": True}}, "tune.space.optimizer.lr.low"),
        (
            {"optimizer.lr": {"depends_on": "optimizer", "cases": {}}},
            "tune.space.optimizer.lr.depends_on",
        ),
    ],
)
def test_bad_search_spaces_name_the_key(space: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(TuneSettings(space=space))
    assert info.value.key == key


def test_trials_cut_short_are_run_again_but_failed_runs_count() -> None:
    study = optuna.create_study()
    for retry in (False, True):
        trial = study.ask()
        if retry:
            trial.set_user_attr("retry", True)
        study.tell(trial, state=TrialState.FAIL)
    study.tell(study.ask(), 1.0)
    study.ask()  # running
    assert counted_trials(study) == 3
