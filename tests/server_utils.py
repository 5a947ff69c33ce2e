"""A throw-away team server for tests: ``scripts/server.sh`` on free ports in temporary folders.

:func:`tracking_server` runs the very script behind ``make server``: it creates a
PostgreSQL cluster with ``initdb`` (as the ``postgres`` user when we are root: PostgreSQL
refuses root), starts it on 127.0.0.1, creates the ``mlflow`` database and starts
``mlflow server`` on it with ``--artifacts-destination``; on exit ``server.sh stop`` stops
both and the helper checks that nothing is left running.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "server.sh"
PG_HINT = (
    "PostgreSQL's initdb was found neither on PATH nor in /usr/lib/postgresql/*/bin: "
    "install PostgreSQL (Debian: apt-get install -y postgresql)"
)


class ServerSetupError(RuntimeError):
    """The server could not be started or stopped (the message says why)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bin() -> Path | None:
    """The folder with ``initdb``: PATH first, then Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _stat(pid: str) -> tuple[str, int] | None:
    """(state, process group) of a process from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def alive(pid: int, group: bool = False) -> list[int]:
    """Live (non-zombie) processes: ``pid`` itself, or every member of process group ``pid``."""
    if not group:
        st = _stat(str(pid))
        return [pid] if st is not None and st[0] != "Z" else []
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(entry.name)
            if st is not None and st[1] == pid and st[0] != "Z":
                out.append(int(entry.name))
    return out


@dataclass
class TrackingServer:
    """What :func:`tracking_server` yields."""

    uri: str
    state_dir: Path  # SERVER_DIR: pid files, logs, artifacts
    pg_data: Path  # SERVER_PGDATA
    env: dict[str, str]  # the SERVER_* variables that address this server
    start_seconds: float
    mlflow_pid: int
    postmaster_pid: int

    @property
    def artifacts(self) -> Path:
        return self.state_dir / "artifacts"

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/server.sh`` with this server's settings."""
        return run_script(*args, env=self.env, timeout=timeout)

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for path in (self.state_dir / "mlflow.log", self.pg_data / "postgres.log"):
            if path.exists():
                out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)


def run_script(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``bash scripts/server.sh ARGS`` with ``env`` added to the environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SERVER_"))}
    full.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=full, capture_output=True, text=True,
        timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _postmaster_pid(pg_data: Path) -> int | None:
    try:
        return int((pg_data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def tracking_server(state_dir: Path, start_timeout: int = 240) -> Iterator[TrackingServer]:
    """``scripts/server.sh start`` on free 127.0.0.1 ports; ``stop`` and checks on exit.

    ``state_dir`` holds pid files, logs and artifacts. The cluster's data go to a
    separate temporary folder: the ``postgres`` user must be able to reach it, and
    pytest's temporary root is private to root.
    """
    if find_pg_bin() is None:
        raise ServerSetupError(PG_HINT)
    pg_root = Path(tempfile.mkdtemp(prefix="mlplab-pg-"))
    pg_root.chmod(0o755)
    pg_data = pg_root / "data"
    port = free_port()
    env = {
        "SERVER_DIR": str(state_dir),
        "SERVER_PGDATA": str(pg_data),
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(port),
        "SERVER_WORKERS": "2",
        "SERVER_START_TIMEOUT": str(start_timeout),
    }
    t0 = time.monotonic()
    mlflow_pid: int | None = None
    failed = False
    try:
        proc = run_script("start", env=env, timeout=start_timeout + 120)
        if proc.returncode != 0:
            raise ServerSetupError(
                f"scripts/server.sh start failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        started = time.monotonic() - t0
        mlflow_pid = int((state_dir / "mlflow.pid").read_text())
        postmaster = _postmaster_pid(pg_data)
        assert postmaster is not None, "PostgreSQL has no postmaster.pid"
        yield TrackingServer(f"http://127.0.0.1:{port}", state_dir, pg_data, env, started,
                             mlflow_pid, postmaster)  # fmt: skip
    except BaseException:
        failed = True
        raise
    finally:
        postmaster = _postmaster_pid(pg_data)
        stop = run_script("stop", env=env, timeout=180)
        leftovers = []
        if mlflow_pid is not None:
            for pid in alive(mlflow_pid, group=True):  # the server and its workers
                leftovers.append(f"mlflow server process {pid}")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if postmaster is not None and alive(postmaster):
            leftovers.append(f"postgres {postmaster}")
            with contextlib.suppress(OSError):
                os.kill(postmaster, signal.SIGKILL)
        shutil.rmtree(pg_root, ignore_errors=True)
        if (stop.returncode != 0 or leftovers) and not failed:
            raise ServerSetupError(
                f"scripts/server.sh stop ({stop.returncode}) left {leftovers or 'nothing'} "
                f"running:\n{stop.stdout}\n{stop.stderr}"
            )
