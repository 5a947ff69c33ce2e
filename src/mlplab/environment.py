"""The environment a run trained in: what ``environment.json`` holds, its tags, and how two differ.

``record()`` reads the facts that decide a run's numbers on a machine: Python, NumPy and the
BLAS library NumPy calls (library, version, kernel, threads, as threadpoolctl sees it), MLflow,
mlplab, the git commit and whether the tree is dirty, the sha256 of the project's ``uv.lock``
(the versions ``make`` installs), the CPU, the OS. ``tags`` turns the key
facts into short ``env.*`` tags, ``source_tags`` gives MLflow's own ``mlflow.source.*`` tags,
``differences`` lists the facts that changed between two records (for ``make rerun``).

No MLflow import here: its version is read from the installed metadata.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy
import threadpoolctl

import mlplab
from mlplab.project import git, repo_root

UNKNOWN = "unknown"
MISSING = "(missing)"


def record() -> dict[str, Any]:
    """The facts of this process's environment, JSON-serialisable (``environment.json``).

    BLAS threads are read as they are now: call it where training runs (inside any thread
    limit the trainer sets) to record the threads that training used.
    """
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
        "blas": blas(),
        "mlflow": installed_version("mlflow"),
        "mlplab": mlplab.__version__,
        "git": {"commit": git("rev-parse", "HEAD") or UNKNOWN, "dirty": git_dirty()},
        "lock": lock_sha256(),
        "cpu": cpu_model(),
        "cpus": usable_cpus(),
        "machine": platform.machine(),
        "os": platform.platform(),
    }


def blas() -> dict[str, Any]:
    """NumPy's BLAS as threadpoolctl sees it: library, version, kernel, threads, threading."""
    pools = [pool for pool in threadpoolctl.threadpool_info() if pool.get("user_api") == "blas"]
    pool = next((pool for pool in pools if _belongs_to_numpy(pool)), pools[0] if pools else {})
    return {
        "library": pool.get("internal_api", UNKNOWN),
        "version": pool.get("version") or UNKNOWN,
        "kernel": pool.get("architecture") or UNKNOWN,
        "threads": pool.get("num_threads", 0),
        "threading_layer": pool.get("threading_layer", UNKNOWN),
        "file": Path(pool["filepath"]).name if pool.get("filepath") else UNKNOWN,
    }


def _belongs_to_numpy(pool: dict[str, Any]) -> bool:
    """Whether a threadpool's library ships inside NumPy's wheel (``numpy.libs``) or package."""
    path = Path(pool.get("filepath") or "/")
    numpy_dir = Path(numpy.__file__).parent
    return path.parent.name == "numpy.libs" or numpy_dir in path.parents


def installed_version(distribution: str) -> str:
    """The installed version of a distribution, without importing it; ``(missing)`` if absent."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return MISSING


def lock_sha256() -> str:
    """The sha256 of the project's ``uv.lock``, the pinned versions; ``(missing)`` without one."""
    try:
        return hashlib.sha256((repo_root() / "uv.lock").read_bytes()).hexdigest()
    except OSError:
        return MISSING


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (as ``git describe --dirty``); None: no git."""
    status = git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def available_memory() -> int | None:
    """The bytes the system can give a new process without swapping (``MemAvailable``, Linux);
    None where it is not known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def tags(facts: dict[str, Any]) -> dict[str, str]:
    """The key facts of a record as short ``env.*`` tags (the UI's columns and filters)."""
    lib = facts["blas"]
    dirty = facts["git"]["dirty"]
    return {
        "env.python": facts["python"],
        "env.numpy": facts["numpy"],
        "env.blas": f"{lib['library']} {lib['version']} {lib['kernel']}",
        "env.blas_threads": str(lib["threads"]),
        "env.mlflow": facts["mlflow"],
        "env.cpu": facts["cpu"],
        "env.os": facts["os"],
        "env.git_dirty": UNKNOWN if dirty is None else str(dirty).lower(),
    }


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's own source tags for a run started by the script ``entry_point``."""
    script = Path(entry_point).resolve()
    root = repo_root().resolve()
    name = script.relative_to(root).as_posix() if root in script.parents else str(script)
    found = {
        "mlflow.user": _user(),
        "mlflow.source.name": name,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": git("rev-parse", "HEAD"),
        "mlflow.source.git.repoURL": _without_credentials(git("remote", "get-url", "origin")),
        "mlflow.source.git.branch": git("symbolic-ref", "--quiet", "--short", "HEAD"),
    }
    return {key: value for key, value in found.items() if value}


def _user() -> str | None:
    """Who runs it, as MLflow's own runs name their user (the UI's User column)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        return None


def _without_credentials(url: str | None) -> str | None:
    """A remote URL without any ``user:password@`` part (a token must not become a tag)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url) if url else url


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per differing fact, ``numpy: 2.4.6 → 2.5.0``; nested ones as ``blas.threads``."""
    before, after = _flatten(recorded), _flatten(current)
    return [
        f"{key}: {before.get(key, MISSING)} → {after.get(key, MISSING)}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, MISSING) != after.get(key, MISSING)
    ]


def _flatten(facts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested facts as one level of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
