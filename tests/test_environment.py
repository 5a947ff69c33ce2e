"""The environment record: real facts of this process, its tags, source tags and differences."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy
import pytest
import threadpoolctl

import mlplab
from mlplab import environment

ROOT = Path(__file__).resolve().parents[1]


def git_out(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def facts() -> dict:
    return environment.record()


def test_record_holds_the_real_versions(facts: dict) -> None:
    assert facts["python"] == platform.python_version()
    assert facts["numpy"] == numpy.__version__
    assert facts["mlflow"] == version("mlflow")
    assert facts["mlplab"] == mlplab.__version__
    lock = (Path(__file__).parents[1] / "uv.lock").read_bytes()
    assert facts["lock"] == hashlib.sha256(lock).hexdigest()  # the versions make installs
    assert json.loads(json.dumps(facts)) == facts  # environment.json as written


def test_record_does_not_import_mlflow() -> None:
    code = "import sys, mlplab.environment as e; e.record(); print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_blas_is_numpys_with_its_threads(facts: dict) -> None:
    lib = facts["blas"]
    assert isinstance(lib["threads"], int) and lib["threads"] >= 1
    numpy_pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert any(
        p["version"] == lib["version"] and p["internal_api"] == lib["library"] for p in numpy_pools
    )
    assert lib["library"] in {"openblas", "mkl", "blis", "accelerate"}


def test_blas_threads_follow_the_limit() -> None:
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert environment.record()["blas"]["threads"] == 1


def test_git_commit_and_dirty_flag(facts: dict) -> None:
    assert facts["git"]["commit"] == git_out("rev-parse", "HEAD")
    dirty = bool(git_out("status", "--porcelain", "--untracked-files=no"))
    assert facts["git"]["dirty"] is dirty


def test_machine_facts(facts: dict) -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        assert facts["cpu"] == names[0]
    assert facts["os"] == platform.platform()
    assert facts["cpus"] >= 1


def test_tags_are_short_strings(facts: dict) -> None:
    tags = environment.tags(facts)
    assert tags["env.numpy"] == numpy.__version__
    assert tags["env.python"] == platform.python_version()
    assert tags["env.blas_threads"] == str(facts["blas"]["threads"])
    assert tags["env.blas"].startswith(facts["blas"]["library"])
    assert tags["env.git_dirty"] in {"true", "false"}
    assert all(isinstance(v, str) and 0 < len(v) <= 250 for v in tags.values())
    assert all(key.startswith("env.") for key in tags)


def test_source_tags_name_the_entry_point_and_commit() -> None:
    tags = environment.source_tags(str(ROOT / "pipelines" / "run.py"))
    assert tags["mlflow.source.name"] == "pipelines/run.py"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == git_out("rev-parse", "HEAD")
    assert environment.source_tags("pipelines/rerun.py")["mlflow.source.name"] in {
        "pipelines/rerun.py",
        str(Path("pipelines/rerun.py").resolve()),  # run from another folder
    }


def test_repo_url_loses_credentials() -> None:
    strip = environment._without_credentials
    assert strip("https://user:tok3n@example.org/a/b.git") == "https://example.org/a/b.git"
    assert strip("git@example.org:a/b.git") == "git@example.org:a/b.git"
    assert strip("/work/main") == "/work/main"


def test_differences_name_exactly_the_changed_facts(facts: dict) -> None:
    assert environment.differences(facts, facts) == []
    changed = json.loads(json.dumps(facts))
    changed["numpy"] = "0.0.1"
    changed["blas"]["threads"] = facts["blas"]["threads"] + 7
    changed["git"]["dirty"] = not facts["git"]["dirty"]
    del changed["mlflow"]
    lines = environment.differences(facts, changed)
    assert [line.split(":")[0] for line in lines] == [
        "blas.threads",
        "git.dirty",
        "mlflow",
        "numpy",
    ]
    assert f"numpy: {numpy.__version__} → 0.0.1" in lines
    assert f"mlflow: {facts['mlflow']} → (missing)" in lines
