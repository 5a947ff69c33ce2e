"""The default tracking store: ``sqlite:///<repository>/mlflow.db``, or $MLFLOW_TRACKING_URI.

conftest poisons ``MLFLOW_TRACKING_URI`` for every test (no test may touch the user's
store), so these tests unset it themselves to see the real default. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT
from mlplab.config import Config
from mlplab.tracking.uris import artifact_root_for, default_uri, first_line, resolve_uri

DEFAULT = f"sqlite:///{ROOT / 'mlflow.db'}"  # README: tracking.uri null = this


@pytest.fixture
def no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_the_default_store_is_mlflow_db_at_the_repository_root(no_env_uri: None) -> None:
    assert ROOT.joinpath("pyproject.toml").is_file() and ROOT.joinpath("conf").is_dir()
    assert DEFAULT.startswith("sqlite:////")  # four slashes: an absolute path
    assert default_uri() == DEFAULT
    assert resolve_uri(None) == resolve_uri("") == DEFAULT
    # its artifacts live beside it, in mlartifacts/
    assert artifact_root_for(DEFAULT) == (ROOT / "mlartifacts").as_uri()


def test_a_run_composed_with_the_defaults_logs_to_the_default_store(
    no_env_uri: None, make_cfg: Callable[..., Config]
) -> None:
    cfg = make_cfg()
    assert cfg.tracking.uri == DEFAULT
    assert (cfg.tracking.experiment, cfg.tracking.enabled) == ("mlplab", True)


def test_mlflow_tracking_uri_overrides_the_default(
    monkeypatch: pytest.MonkeyPatch, make_cfg: Callable[..., Config]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5001")
    assert default_uri() == "http://tracking.example:5001"
    assert make_cfg().tracking.uri == "http://tracking.example:5001"
    # tracking.uri given in the config wins over both
    assert make_cfg("tracking.uri=sqlite:////tmp/x.db").tracking.uri == "sqlite:////tmp/x.db"


def test_mlflow_experiment_name_overrides_the_default(
    monkeypatch: pytest.MonkeyPatch, make_cfg: Callable[..., Config]
) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "theirs")
    assert make_cfg().tracking.experiment == "theirs"
    assert make_cfg("tracking=server").tracking.experiment == "theirs"
    assert make_cfg("tracking.experiment=mine").tracking.experiment == "mine"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "")  # empty: unset, as MLflow reads it
    assert make_cfg().tracking.experiment == "mlplab"


def test_a_relative_sqlite_path_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("sqlite:///sub/m.db") == f"sqlite:///{tmp_path.resolve() / 'sub/m.db'}"
    assert resolve_uri("http://h:1") == "http://h:1"


def test_a_long_store_error_is_cut_after_a_whole_sentence() -> None:
    """MLflow's one-line errors can run to 400 characters: cut after the last sentence (a
    link in the next one is not cut in half), else after a word; short ones are whole."""
    mlflow_like = (
        "Unsupported URI 'ftp://x'. " + "Schemes are: " + "'s', " * 60 + ". See https://x.org/y"
    )
    assert first_line(ValueError(mlflow_like)) == "Unsupported URI 'ftp://x'. …"
    words = first_line(ValueError("word " * 100))
    assert words.endswith("word …") and len(words) <= 302
    assert first_line(ValueError("one line\nand more")) == "one line"
    assert first_line(ValueError("")) == "ValueError"
