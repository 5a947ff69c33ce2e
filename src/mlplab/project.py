"""The project on disk: its root folder, its config folder and its git commit."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path


@cache
def repo_root() -> Path:
    """The project folder (with ``pyproject.toml`` and ``conf/``), else the working directory."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "conf").is_dir():
            return parent
    return Path.cwd()


def conf_dir() -> Path:
    """Hydra's config folder."""
    return repo_root() / "conf"


def resolve_path(path: str | None) -> str | None:
    """A relative path as given if it exists from here, else from the repository root."""
    if not path or Path(path).is_absolute():
        return path
    if Path(path).exists():
        return str(Path(path).resolve())
    candidate = repo_root() / path
    return str(candidate) if candidate.exists() else path


@cache
def git(*args: str) -> str | None:
    """The output of a git command in the project folder, or None (run once per process:
    a sweep's jobs all record the checkout the sweep started from)."""
    try:
        return subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """The project's current commit, or ``unknown``."""
    return git("rev-parse", "HEAD") or "unknown"
