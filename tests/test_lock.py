"""The locked environment: uv.lock agrees with pyproject.toml, and this venv is what it pins.

`make run` and `make test` install with `uv sync --frozen` from uv.lock (see the Makefile);
these tests make CI fail when someone edits pyproject.toml without `make lock`, or when the
installed versions drift from the lock's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_LOCKED = {"torch"}  # pip installs the machine's CPU wheel (pyproject.toml, tool.uv)


def uv_binary() -> str:
    """The uv the Makefile bootstrapped into the venv (.venv/.uv-<version>), else uv on PATH."""
    bootstrapped = sorted(Path(sys.prefix).glob(".uv-*/bin/uv"))
    uv = str(bootstrapped[-1]) if bootstrapped else shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: `make test` bootstraps it into .venv/.uv-<version>")
    return uv


def lock_check(folder: Path) -> subprocess.CompletedProcess[str]:
    """`uv lock --check` offline: fails when pyproject.toml and uv.lock disagree."""
    return subprocess.run(
        [uv_binary(), "lock", "--check", "--offline", "--directory", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lock_agrees_with_pyproject() -> None:
    result = lock_check(ROOT)
    assert result.returncode == 0, f"run `make lock` and commit uv.lock:\n{result.stderr}"


@pytest.mark.parametrize(
    "edit",
    [
        ('"tqdm>=4.66"', '"tqdm>=4.66", "rich>=13"'),  # a new dependency
        ('"scikit-learn>=1.4"', '"scikit-learn>=1.5"'),  # a changed bound in an extra
        ('browser = ["playwright>=1.49"]', 'browser = ["playwright>=1.49"]\ndocs = ["mkdocs"]'),
    ],
    ids=["dependency", "extra bound", "new extra"],
)
def test_the_check_fails_when_pyproject_changes(tmp_path: Path, edit: tuple[str, str]) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert edit[0] in text
    (tmp_path / "pyproject.toml").write_text(text.replace(edit[0], edit[1], 1))
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    result = lock_check(tmp_path)
    assert result.returncode != 0
    # a changed bound: "needs to be updated"; a new package: offline, uv cannot resolve it
    assert "needs to be updated" in result.stderr or "network was disabled" in result.stderr


def test_lock_covers_every_extra() -> None:
    root = locked_package("mlplab")
    assert set(root["optional-dependencies"]) == set(PYPROJECT["project"]["optional-dependencies"])
    names = {canonicalize_name(p["name"]) for p in LOCK["package"]}
    assert not NOT_LOCKED & names


def locked_package(name: str, pinned: str | None = None) -> dict[str, Any]:
    """The lock's entry for ``name`` (at version ``pinned`` when the lock holds several)."""
    return next(
        p
        for p in LOCK["package"]
        if canonicalize_name(p["name"]) == canonicalize_name(name)
        and (pinned is None or p["version"] == pinned)
    )


def applies(dependency: dict[str, Any]) -> bool:
    """Whether a locked dependency's marker holds in this interpreter."""
    return "marker" not in dependency or Marker(dependency["marker"]).evaluate()


def closure(extras: list[str]) -> dict[str, str]:
    """{name: locked version} of everything the project with ``extras`` needs here."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str | None, tuple[str, ...]]] = set()
    todo: list[tuple[dict[str, Any], list[str]]] = [({"name": "mlplab"}, extras)]
    while todo:
        dependency, wanted = todo.pop()
        key = (dependency["name"], dependency.get("version"), tuple(sorted(wanted)))
        if key in seen:
            continue
        seen.add(key)
        entry = locked_package(dependency["name"], dependency.get("version"))
        found[canonicalize_name(entry["name"])] = entry["version"]
        needs = [*entry.get("dependencies", [])]
        for extra in wanted:
            needs += entry.get("optional-dependencies", {}).get(extra, [])
        todo += [(d, d.get("extra", [])) for d in needs if applies(d)]
    return found


def test_installed_versions_equal_the_lock() -> None:
    """Everything `make run` installs is here at the locked version, and nothing else drifted."""
    needed = closure(["dev"])
    wrong = []
    for name, pinned in needed.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "(not installed)"
        if installed != pinned:
            wrong.append(f"{name}: lock {pinned}, installed {installed}")
    locked: dict[str, set[str]] = {}
    for p in LOCK["package"]:
        locked.setdefault(canonicalize_name(p["name"]), set()).add(p["version"])
    for dist in distributions():  # what the other extras (make test, sweep, server) added
        name = canonicalize_name(dist.metadata["Name"])
        if name in locked and name not in needed and dist.version not in locked[name]:
            wrong.append(
                f"{name}: lock {' or '.join(sorted(locked[name]))}, installed {dist.version}"
            )
    assert not wrong, "not the locked environment (touch uv.lock; make test):\n" + "\n".join(wrong)
