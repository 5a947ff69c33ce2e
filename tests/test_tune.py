"""`make tune`: a parallel Optuna study whose trials are MLflow children, resumable."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import FixedTrial, TrialState

from conftest import run_cli
from mlplab.errors import ConfigError, UserError
from mlplab.tracking import open_store
from mlplab.tune import StudyOutcome, load_settings, run_study
from mlplab.tune import study as tune_study
from mlplab.tune.space import TuneSettings, parse_space, suggest, validate_settings
from mlplab.tune.study import counted_trials, open_storage

EXPERIMENT = "tune-test"
RUN_OVERRIDES = (
    f"tracking.experiment={EXPERIMENT}",
    "tracking.log_model=false",
    "plot.enabled=false",
    "train.epochs=50",
)


def tune(tmp: Path, *args: str) -> Any:
    return run_cli(
        "tune.study_name=test-study",
        f"tune.out_dir={tmp / 'out'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        *RUN_OVERRIDES,
        *args,
        script="pipelines/tune.py",
        timeout=600,
    )


def tune_here(tmp: Path, n_trials: int) -> StudyOutcome:
    """One session of the study in this process (one worker: the trials run here)."""
    settings = load_settings(
        "default",
        ["study_name=test-study", f"out_dir={tmp / 'out'}", f"n_trials={n_trials}", "n_jobs=1"],
    )
    return run_study(settings, [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", *RUN_OVERRIDES])


def study_of(tmp: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="test-study", storage=open_storage(str(tmp / "optuna.journal"))
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parallel_study_logs_children_and_resumes(tmp_path: Path) -> None:
    # maximised: the study's best is then not the child of lowest test RMSE (a sweep's best)
    first = tune(tmp_path, "tune.n_trials=3", "tune.n_jobs=2", "tune.direction=maximize")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "best parameters:" in first.stdout
    study = study_of(tmp_path)  # the journal beside the MLflow store
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2  # both workers ran trials
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["mlflow.source.name"] == "pipelines/tune.py"
    assert tags["tune_overrides"].endswith(" ".join(RUN_OVERRIDES))  # what every trial ran with
    best = study.best_trial
    assert tags["best_trial"] == str(best.number)
    assert json.loads(tags["best_params"]) == best.params
    assert tags["best_overrides"] == " ".join(best.user_attrs["overrides"])
    for item in best.user_attrs["overrides"]:
        key, _, value = item.partition("=")
        assert tags[f"best.{key}"] == value
    assert parent.data.metrics["best_value"] == pytest.approx(best.value, rel=1e-12)
    # one best on the parent: the study's, whose report figures and metrics are its run's
    assert tags["best_run_id"] == tags["best_trial_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_test_rmse"] == pytest.approx(best.value, rel=1e-12)
    (alone,) = [line for line in first.stdout.splitlines() if "run it alone:" in line]
    assert "train.epochs=50" in alone and "train.epochs=3000" not in alone  # the last value
    assert "tracking." not in alone

    def children() -> list[Any]:
        exp = client.get_experiment_by_name(EXPERIMENT)
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
    second = tune(tmp_path, "tune.n_trials=5", "tune.n_jobs=1", "tune.direction=maximize")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "3 of 5 trials done, 2 to run" in second.stdout
    study = study_of(tmp_path)
    assert len(study.trials) == 5
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.trials[4].user_attrs["pid"] not in pids
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    assert len(children()) == 5
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.parametrize("bad", ["value", "data-file"])
def test_a_bad_override_is_refused_before_any_trial(tmp_path: Path, bad: str) -> None:
    """A bad value, or a data file that every trial would refuse: before the study exists
    (its failed trials would count against n_trials for good)."""
    csv = tmp_path / "nan.csv"
    csv.write_text("a,b,y\n1,2,3\n4,,6\n7,8,9\n1,1,1\n2,2,2\n")
    args = ["model.activation=nope"] if bad == "value" else ["data=csv", f"data.path={csv}"]
    proc = tune(tmp_path, "tune.n_trials=2", *args)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: model.activation: Invalid value 'nope', expected one of ["
        if bad == "value"
        else f"error: data.path='{csv}': column 'b' has a missing value (NaN) at row 3"
    )
    assert not (tmp_path / "optuna.journal").exists()


# -- a store that fails, a process that died -------------------------------------------------
class ArtifactsBlocked(tune_study.TrialSink):
    """A trial's real sink whose run cannot store artifacts once created: a regular file
    stands where MLflow puts the run's artifact folder, so the store fails for real when
    the finished run logs its files."""

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        super().start(params, tags, run_name)
        assert self.run_id is not None
        uri = self.inner.store.uri  # a StoreSink: a study's children are written from here
        folder = Path(
            MlflowClient(uri).get_run(self.run_id).info.artifact_uri.removeprefix("file://")
        )
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.write_text("not a folder")


def test_a_store_that_fails_after_training_gives_a_complete_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tune_study, "TrialSink", ArtifactsBlocked)
    outcome = tune_here(tmp_path, n_trials=1)
    (trial,) = study_of(tmp_path).trials
    assert trial.state == TrialState.COMPLETE
    assert outcome.status == "FINISHED" and outcome.best is not None
    assert outcome.best.value == trial.value
    folder = Path(trial.user_attrs["fallback_folder"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "FINISHED"
    assert manifest["metrics"]["test_rmse"][-1][1] == pytest.approx(trial.value, rel=1e-12)
    assert (folder / "artifacts" / "weights" / "final.npz").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(folder) in w and w.startswith("trial 0: ") for w in warnings), warnings


def test_a_stale_trial_is_failed_and_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stale_run = open_store(uri).create_run(EXPERIMENT, "stale", {})
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid is a process that is gone
    journal = optuna.create_study(
        study_name="test-study", storage=open_storage(str(tmp_path / "optuna.journal"))
    )
    for pid, run_id in ((proc.pid, stale_run), (os.getpid(), None)):  # dead, alive
        trial = journal.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)

    outcome = tune_here(tmp_path, n_trials=2)
    assert "1 trial(s) of an interrupted session will be run again" in capsys.readouterr().out
    states = [t.state for t in study_of(tmp_path).trials]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.COMPLETE]
    assert "failure_reason" not in study_of(tmp_path).trials[0].user_attrs  # it did not count
    assert outcome.best is not None and outcome.best.number == 2
    assert MlflowClient(uri).get_run(stale_run).info.status == "KILLED"


def test_a_study_refuses_the_trials_of_another_search(tmp_path: Path) -> None:
    """The study is found by name: other run overrides would mix two searches in it."""
    tune_here(tmp_path, n_trials=1)
    settings = load_settings(
        "default",
        ["study_name=test-study", f"out_dir={tmp_path / 'out'}", "n_trials=2", "n_jobs=1"],
    )
    uri = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(UserError) as info:
        run_study(settings, [uri, *RUN_OVERRIDES, "data=sine"])
    message = str(info.value)
    assert message.startswith("study 'test-study' is another search (run overrides: ")
    assert "data=sine" in message.split("not this one")[1]
    assert "tune.study_name=" in message
    assert len(study_of(tmp_path).trials) == 1  # no trial was added
    settings.direction = "maximize"
    with pytest.raises(UserError, match=r"\(objective: minimize default metric\), not this one"):
        run_study(settings, [uri, *RUN_OVERRIDES])
    assert len(study_of(tmp_path).trials) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [  # each trial would set its own learning rate over the user's
        ("optimizer.lr=-1", r"^optimizer.lr=-1: optimizer.lr is searched \(tune.space\)"),
        # no trial could report the objective
        ("data.test_fraction=0", r"^data.test_fraction=0 leaves no split for the objective test_"),
        # the store is checked before the study: a single run's message, not MLflow's
        ("tracking.uri=http://127.0.0.1:9", r"^tracking.uri='http://127.0.0.1:9': the tracking s"),
    ],
)
def test_a_search_no_trial_could_honour_is_refused(
    tmp_path: Path, override: str, message: str
) -> None:
    settings = load_settings("default", ["study_name=test-study", f"out_dir={tmp_path}"])
    uri = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(UserError, match=message):
        run_study(settings, [uri, *RUN_OVERRIDES, override])
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


def test_a_misspelled_objective_is_refused_before_any_trial() -> None:
    """tune.metric=bogus used to run (and fail) every trial of the study, and exit 0."""
    space = {"optimizer.lr": {"low": 0.1, "high": 1.0}}
    with pytest.raises(ConfigError) as info:
        validate_settings(TuneSettings(space=space, metric="test_rsme"))
    assert info.value.key == "tune.metric" and "test_rmse, test_mae" in str(info.value)
    for metric in (None, "test_rmse", "final_val_rmse", "test_accuracy", "train_seconds"):
        validate_settings(TuneSettings(space=space, metric=metric))


def test_trials_cut_short_are_run_again_but_failed_runs_count() -> None:
    journal = optuna.create_study()
    for reason in (None, "diverged"):
        trial = journal.ask()
        if reason:
            trial.set_user_attr("failure_reason", reason)
        journal.tell(trial, state=TrialState.FAIL)
    journal.tell(journal.ask(), 1.0)
    journal.ask()  # running
    assert counted_trials(journal) == 3
