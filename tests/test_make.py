"""The make targets as a user types them.

ARGS carries Hydra's sweep syntax (range, choice, interval), brackets, quotes and ``${...}``
to the entry points exactly as a shell would after ``python pipelines/run.py``, and
``make sweep LAUNCHER=...`` installs the launcher's extra and picks it. The targets run with
this interpreter (``PY=``) and without installing anything (``-o`` the install stamp).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".venv/.synced"  # the Makefile's install stamp
MAKE_VARIABLES = {"ARGS", "SWEEP", "LAUNCHER", "RUN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}


def make(*args: str, skip_install: bool = True) -> subprocess.CompletedProcess[str]:
    """``make -s ARGS...`` in the project, as from a fresh shell (no inherited make variables)."""
    env = {key: value for key, value in os.environ.items() if key not in MAKE_VARIABLES}
    old_stamp = ["-o", STAMP] if skip_install else []
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *old_stamp, f"PY={sys.executable}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_passes_brackets_quotes_and_interpolations() -> None:
    out = make(
        "run", "ARGS=--cfg job 'model.hidden=[4, 4]' seed=3 'tracking.experiment=a ${seed} b'"
    )
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["hidden"] == [4, 4]
    assert cfg["seed"] == 3
    assert cfg["tracking"]["experiment"] == "a ${seed} b"  # make did not expand the $


@pytest.mark.slow
def test_sweep_expands_range_and_picks_the_launcher(tmp_path: Path) -> None:
    args = (
        "seed=range(0,2) 'model.hidden=[3]' train.epochs=2 tracking.enabled=false "
        f"plot.enabled=false trace.enabled=false hydra.sweep.dir={tmp_path}"
    )
    out = make("sweep", "SWEEP=base", "LAUNCHER=basic", f"ARGS={args}")
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = re.findall(r"#(\d+) : (.*)", out.stdout + out.stderr)
    assert [number for number, _ in jobs] == ["0", "1"]
    for number, overrides in jobs:
        assert f"seed={number}" in overrides.split()
        assert "model.hidden=[3]" in overrides.split()
    assert "Launching 2 jobs locally" in out.stdout + out.stderr  # the basic launcher


def test_tune_gets_its_arguments() -> None:
    out = make("tune", "ARGS='model.init_scale=0.5' 'tracking.run_name=a b' model.nosuchkey=1")
    assert out.returncode == 2
    assert "model.nosuchkey is not a config key" in out.stderr


def test_rerun_needs_a_run_and_quoted_args() -> None:
    assert make("rerun").returncode == 2
    out = make("rerun", "RUN=0123abcd", "ARGS='optimizer.lr=0.1")
    assert out.returncode == 2
    assert "No closing quotation" in out.stderr and "quote it" in out.stderr
    # a quote in RUN is part of the id, not shell syntax
    out = make("rerun", "RUN='; echo injected; '", "ARGS=tracking.uri=sqlite:///nowhere/x.db")
    assert out.returncode == 2 and "injected" not in out.stdout
    assert "error: run \"'; echo injected; '\" not found" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("launcher", "extra"),
    [
        ("ray", "ray"),
        ("submitit_local", "slurm"),
        ("submitit_slurm", "slurm"),
        ("joblib", None),
        ("", None),
    ],
)
def test_sweep_launcher_installs_its_extra(launcher: str, extra: str | None) -> None:
    # a dry run (-n) with the install stamp as if just made (-W): what `make sweep` would do
    out = make("-n", "-W", STAMP, "sweep", f"LAUNCHER={launcher}", skip_install=False)
    assert out.returncode == 0, out.stderr
    syncs = [line for line in out.stdout.splitlines() if " sync " in line and "--inexact" in line]
    if extra:
        assert len(syncs) == 1 and syncs[0].endswith(f"--extra dev --extra {extra}")
    else:
        assert not syncs
    sweep = out.stdout.splitlines()[-1]
    assert 'pipelines/run.py --multirun "+sweep=$SWEEP"' in sweep
    assert ("hydra/launcher" in sweep) == bool(launcher)
    assert sweep.endswith(f"'hydra/launcher={launcher}'") or not launcher


def split_by_make_args(args: str) -> list[str]:
    """The argument list that scripts/with_args.py hands to the entry point for ``ARGS``."""
    show = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('ARGS')]))"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "with_args.py"), "-c", show],
        env={**os.environ, "ARGS": args},
        capture_output=True,
        text=True,
        check=True,
    )
    words, leaked = json.loads(out.stdout)
    assert leaked is None  # ARGS is not handed on (a nested make must not see it)
    return words


def test_args_split_as_a_shell_splits() -> None:
    args = (
        "seed=range(0,64) 'model.hidden=[8, 8]' \"data.path=my file.csv\" optimizer=sgd,adam "
        "'optimizer.lr=choice(0.1,0.01)' optimizer.lr=interval(0,1) "
        "'tracking.uri=${oc.env:HOME}' key=it\\'s --cfg job"
    )
    assert split_by_make_args(args) == [
        "seed=range(0,64)",
        "model.hidden=[8, 8]",
        "data.path=my file.csv",
        "optimizer=sgd,adam",
        "optimizer.lr=choice(0.1,0.01)",
        "optimizer.lr=interval(0,1)",
        "tracking.uri=${oc.env:HOME}",
        "key=it's",
        "--cfg",
        "job",
    ]
    assert split_by_make_args("") == []
