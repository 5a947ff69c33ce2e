"""Tracking from a helper process, so that MLflow's cost overlaps training and plotting.

Importing MLflow, opening a SQLite store and writing a 10 000-point history through its
ORM take seconds of CPU. :class:`BackgroundSink` has the :class:`~mlplab.tracking.Sink`
interface and hands each call to a helper process (``python -m mlplab.background``) that
runs the real :class:`~mlplab.tracking.MlflowSink`: calls return at once, the helper
works on the other core while this one trains and draws, and ``end`` waits until every
call of the run is done. A call that failed in the helper is raised from the next call
made here, where the :class:`~mlplab.fallback.FallbackSink` around this sink records the
run locally.

One helper serves every run of a process, so MLflow is imported once per process (the
children of sweeps and tuning studies log in their own process: see
:func:`mlplab.cli.make_sink`). The helper runs in its own session: Ctrl-C on the terminal
reaches the job, which then logs the interrupted run through the helper. If the job
dies without ending its run, the helper closes the run as KILLED and exits.

Messages are pickled and framed by their length, over the helper's stdin and stdout
(its own prints go to stderr).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from queue import Queue
from typing import IO, Any

import numpy as np

from mlplab.tracking import ModelRequest

_HEADER = struct.Struct("<Q")


class HelperFailed(Exception):
    """A call that failed in the helper; ``kind`` names the original exception type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- framing -----------------------------------------------------------------------------
def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Any | None:
    """The next message on ``fd``, or None at the end of the stream."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


# -- the job's side ----------------------------------------------------------------------
class _Helper:
    """The helper process and its two pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlplab.background"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        self.seq = 0
        self.owner = os.getpid()

    def alive(self) -> bool:
        """Running, and ours (a forked child must start its own)."""
        return self.owner == os.getpid() and self.proc.poll() is None

    def send(self, method: str, *args: Any) -> int:
        self.seq += 1
        try:
            _write(self.stdin, (self.seq, method, args))
        except OSError as exc:  # a broken pipe: the helper died
            raise HelperFailed("HelperExited", f"the tracking helper is gone ({exc})") from None
        return self.seq

    def receive(self, block: bool) -> tuple[int, str, str | None, Any] | None:
        """The next reply (None if none is waiting and ``block`` is false)."""
        if not block and not select.select([self.fd], [], [], 0)[0]:
            return None
        reply = _read(self.fd)
        if reply is None:
            raise HelperFailed(
                "HelperExited", f"the tracking helper exited (status {self.proc.wait()})"
            )
        return reply

    def close(self) -> None:
        """Let the helper go: it exits when its input ends."""
        with contextlib.suppress(OSError):
            self.stdin.close()


_HELPER: _Helper | None = None


def _helper() -> _Helper:
    """The process's helper, started on first use (or again if it died)."""
    global _HELPER
    if _HELPER is None or not _HELPER.alive():
        _HELPER = _Helper()
        atexit.register(_HELPER.close)
    return _HELPER


class BackgroundSink:
    """A :class:`~mlplab.tracking.Sink` whose calls run in the helper process."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None) -> None:
        self.helper = _helper()
        self.run_id: str | None = None
        self._pending: set[int] = set()
        self._failure: HelperFailed | None = None
        env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
        self._call("open", uri, experiment, parent_run_id, env)

    def _call(self, method: str, *args: Any) -> None:
        self._collect(block=False)
        self._raise()
        self._pending.add(self.helper.send(method, *args))

    def _collect(self, block: bool) -> None:
        """Take in the replies that are there (``block``: every reply still owed)."""
        while self._pending:
            reply = self.helper.receive(block)
            if reply is None:
                return
            seq, status, run_id, error = reply
            if seq not in self._pending:  # an earlier run's call, skipped by the helper
                continue
            self._pending.discard(seq)
            self.run_id = run_id or self.run_id
            if status == "error" and self._failure is None:
                self._failure = HelperFailed(*error)

    def _raise(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.helper.send("resume")  # the calls made after this one are tried again
            raise failure

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Create the run (in the helper; its id is known once ``end`` returns)."""
        self._call("start", params, tags, run_name)

    def log_history(self, history: Mapping[str, np.ndarray]) -> None:
        """Per-epoch series, step = epoch counted from 1."""
        self._call("log_history", {k: np.asarray(v) for k, v in history.items()})

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single-point metrics, step 0."""
        self._call("log_metrics", dict(metrics))

    def log_artifacts(self, local_dir: Path) -> None:
        """Every file under ``local_dir`` (read by the helper: leave them in place)."""
        self._call("log_artifacts", Path(local_dir))

    def log_model(self, request: ModelRequest) -> None:
        """The network as an MLflow model, built and logged by the helper."""
        self._call("log_model", request)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""
        self._call("set_tags", dict(tags))

    def end(self, status: str) -> None:
        """Close the run and wait until the helper has done every call of it."""
        self._call("end", status)
        self._collect(block=True)
        self._raise()


# -- the helper's side -------------------------------------------------------------------
def serve() -> None:
    """The helper's loop: run each call on the current run's ``MlflowSink``, reply."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # MLflow's own prints must not mix with the replies
    inbox: Queue[Any] = Queue()

    def read_all() -> None:  # keep the pipe drained: the job never waits to send
        while True:
            message = _read(0)
            inbox.put(message)
            if message is None:
                return

    threading.Thread(target=read_all, daemon=True).start()
    from mlplab.tracking import MlflowSink

    def reply(*message: Any) -> None:
        with contextlib.suppress(OSError):  # the job is gone: go on, to close its run
            _write(out, message)

    sink: MlflowSink | None = None
    open_run, failed = False, False
    while (message := inbox.get()) is not None:
        seq, method, args = message
        if method == "resume":
            failed = False
            continue
        if failed:
            reply(seq, "skipped", None, None)
            continue
        try:
            if method == "open":
                uri, experiment, parent, env = args
                os.environ.update(env)
                sink, open_run = MlflowSink(uri, experiment, parent), False
            else:
                assert sink is not None
                getattr(sink, method)(*args)
                open_run = method != "end" and sink.run_id is not None
            reply(seq, "ok", sink.run_id, None)
        except Exception as exc:
            failed = True
            error = (type(exc).__name__, str(exc) or type(exc).__name__)
            reply(seq, "error", sink.run_id if sink else None, error)
    if open_run and sink is not None:  # the job died without ending its run
        try:
            sink.set_tags({"failure_reason": "killed: the job ended without closing its run"})
            sink.end("KILLED")
        except Exception as exc:
            print(f"mlplab tracking helper: could not close run {sink.run_id}: {exc}", flush=True)


if __name__ == "__main__":
    serve()
