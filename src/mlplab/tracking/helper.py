"""The tracking helper process: MLflow's cost off the training core, and runs never left open.

Importing MLflow, opening a SQLite store and writing a 10 000-point history through its ORM
take seconds of CPU. :class:`BackgroundSink` has the :class:`~mlplab.tracking.sink.Sink`
interface and hands each call to a helper process (:func:`main`)
that runs the real :class:`~mlplab.tracking.mlflow_store.StoreSink`: calls return at once,
the helper works on the other core while this one trains and draws, and ``end`` waits until
every call of the run is done. A call that failed in the helper is raised from the next call
made here, where the run's :class:`~mlplab.tracking.fallback.FallbackSink` records the run
locally.

The helper also *guards* runs (:func:`guard`): a sweep's or a study's parent run. One helper
serves a process; it runs in its own session, so Ctrl-C on the terminal reaches the job,
which then logs the interrupted run through the helper. When the job's end of the channel
closes without a run ended or a guard released (the job died, even by SIGKILL), the helper
closes that run KILLED (a guarded parent with its RUNNING children) and exits.

The entry point starts the helper before its own imports (:func:`prestart`): it imports
MLflow on the core those leave idle, so its ~3 s of imports are done when the run's (or the
sweep's) first call comes. A run or a sweep that does not log through it lets it go
(:func:`release_unused`), and a helper let go before any call exits at once.

The channel is the standard library's ``multiprocessing`` connection over a socket pair
(pickled, framed messages, polling); the helper's prints go to stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Queue
from typing import TYPE_CHECKING, Any

import numpy as np

from mlplab.tracking.sink import DataSplit, ModelRequest
from mlplab.tracking.store import open_store, store_sink, warm_up

if TYPE_CHECKING:
    from mlplab.tracking.mlflow_store import StoreSink

KILLED_REASON = "killed: its process ended without closing it (Ctrl-C, SIGTERM or SIGKILL)"


class HelperFailed(Exception):
    """A call that failed in the helper; ``kind`` names the original exception type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Helper:
    """A helper process and our end of its channel; replies go back to the sink that called."""

    def __init__(self, warm: bool = False) -> None:
        ours, theirs = multiprocessing.Pipe()
        fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from mlplab.tracking.helper import main; main()", str(fd)]
            + (["warm"] if warm else []),
            pass_fds=[fd],
            start_new_session=True,
        )
        theirs.close()
        self.conn: Connection = ours
        self.owner = os.getpid()
        self.seq = 0
        self.callers: dict[int, BackgroundSink] = {}  # sequence number -> who awaits the reply

    def alive(self) -> bool:
        """Running, and ours (a forked child must start its own)."""
        return self.owner == os.getpid() and self.proc.poll() is None

    def send(self, caller: BackgroundSink | None, key: int, method: str, *args: Any) -> int:
        """Send one call about run ``key``; ``caller`` gets the reply (none for guards)."""
        self.seq += 1
        try:
            self.conn.send((self.seq, key, method, args))
        except OSError as exc:  # a broken channel: the helper died
            raise HelperFailed("HelperExited", f"the tracking helper is gone ({exc})") from None
        if caller is not None:
            self.callers[self.seq] = caller
        return self.seq

    def pump(self, until_done: BackgroundSink | None = None) -> None:
        """Hand the replies that are there to their callers; with ``until_done``, wait until
        that sink has every reply it is owed."""
        try:
            while until_done._pending if until_done else self.conn.poll():
                seq, status, run_id, error = self.conn.recv()
                caller = self.callers.pop(seq, None)
                if caller is not None:
                    caller.take_reply(seq, status, run_id, error)
        except (EOFError, OSError):
            raise HelperFailed(
                "HelperExited", f"the tracking helper exited (status {self.proc.wait()})"
            ) from None

    def close(self) -> None:
        """Let the helper go: it exits when its channel closes."""
        with contextlib.suppress(OSError):
            self.conn.close()


_HELPER: Helper | None = None


def helper(warm: bool = False) -> Helper:
    """The process's helper, started on first use (or again if it died)."""
    global _HELPER
    if _HELPER is None or not _HELPER.alive():
        _HELPER = Helper(warm)
        atexit.register(_HELPER.close)
    return _HELPER


def prestart() -> None:
    """Start the helper now, before the job's own imports and Hydra's compose, and have it
    import MLflow meanwhile; ``make_sink`` lets it go (:func:`release_unused`) when the run
    turns out not to log through it."""
    helper(warm=True)


def release_unused() -> None:
    """Let the helper go if nothing was sent to it (tracking is off, or the run writes its
    store itself): it exits at once, whatever it was importing."""
    global _HELPER
    if _HELPER is not None and _HELPER.alive() and _HELPER.seq == 0:
        _HELPER.close()
        _HELPER = None


class Guard:
    """A run the helper closes KILLED if this process ends before :meth:`release`."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.helper, self.run_id = helper(), run_id
        self.helper.send(None, 0, "guard", uri, run_id, _mlflow_env())

    def release(self) -> None:
        """This process closes the run itself."""
        with contextlib.suppress(HelperFailed):
            self.helper.send(None, 0, "release", self.run_id)


def _mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


class BackgroundSink:
    """A :class:`~mlplab.tracking.sink.Sink` whose calls run in the helper process.

    Several may be open at once (a population's runs): each has its own key in the helper.
    """

    _keys = itertools.count(1)

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None) -> None:
        self.helper = helper()
        self.key = next(self._keys)
        self.run_id: str | None = None
        self._pending: set[int] = set()
        self._failure: HelperFailed | None = None
        self._call("open", uri, experiment, parent_run_id, _mlflow_env())

    def _call(self, method: str, *args: Any) -> None:
        self.helper.pump()
        self._raise()
        self._pending.add(self.helper.send(self, self.key, method, *args))

    def take_reply(self, seq: int, status: str, run_id: str | None, error: Any) -> None:
        """A reply to one of this sink's calls (handed over by :meth:`Helper.pump`)."""
        self._pending.discard(seq)
        self.run_id = run_id or self.run_id
        if status == "error" and self._failure is None:
            self._failure = HelperFailed(*error)

    def _raise(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.helper.send(None, self.key, "resume")  # later calls are tried again
            raise failure

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Create the run (in the helper; its id is known once ``end`` returns)."""
        self._call("start", params, tags, run_name)

    def log_history(
        self, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series."""
        self._call("log_history", {k: np.asarray(v) for k, v in history.items()}, steps)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single-point metrics, step 0."""
        self._call("log_metrics", dict(metrics))

    def log_inputs(self, splits: Sequence[DataSplit]) -> None:
        """The data splits as dataset inputs."""
        self._call("log_inputs", list(splits))

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
        self.helper.pump(until_done=self)
        self._raise()


# -- the helper's side -------------------------------------------------------------------
@dataclass
class _Run:
    """One run the helper writes: its sink, whether it is open, whether a call failed."""

    sink: StoreSink
    open: bool = False
    failed: bool = False


class _Server:
    """The helper's state: the runs it writes (by key) and the runs it guards."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.runs: dict[int, _Run] = {}
        self.guarded: dict[str, str] = {}  # run id -> store uri

    def reply(self, *message: Any) -> None:
        with contextlib.suppress(OSError):  # the job is gone: go on, to close its runs
            self.conn.send(message)

    def handle(self, seq: int, key: int, method: str, args: tuple[Any, ...]) -> None:
        run = self.runs.get(key)
        if method == "guard":
            uri, run_id, env = args
            os.environ.update(env)
            self.guarded[run_id] = uri
        elif method == "release":
            self.guarded.pop(args[0], None)
        elif method == "resume":
            if run is not None:
                run.failed = False
        elif run is not None and run.failed:
            self.reply(seq, "skipped", None, None)
        elif method == "open":
            uri, experiment, parent, env = args
            os.environ.update(env)
            self.runs[key] = run = _Run(store_sink(uri, experiment, parent))
            self.reply(seq, "ok", None, None)
        else:
            assert run is not None, f"{method} before open"
            getattr(run.sink, method)(*args)
            run.open = method != "end" and run.sink.run_id is not None
            self.reply(seq, "ok", run.sink.run_id, None)

    def serve(self, warm: bool = False) -> None:
        inbox: Queue[Any] = Queue()

        def read_all() -> None:  # keep the channel drained: the job never waits to send
            received = False
            while True:
                try:
                    inbox.put(self.conn.recv())
                    received = True
                except (EOFError, OSError):
                    if not received:  # let go unused: nothing to write or close
                        os._exit(0)
                    inbox.put(None)
                    return

        threading.Thread(target=read_all, daemon=True).start()
        if warm:
            with contextlib.suppress(Exception):  # a broken MLflow fails the run's "open"
                warm_up()
        while (message := inbox.get()) is not None:
            seq, key, method, args = message
            try:
                self.handle(seq, key, method, args)
            except Exception as exc:
                run = self.runs.get(key)
                if run is not None:
                    run.failed = True
                kind = type(exc).__name__
                run_id = run.sink.run_id if run is not None else None
                self.reply(seq, "error", run_id, (kind, str(exc) or kind))
        self.close_left_open()

    def close_left_open(self) -> None:
        """The job ended without closing its runs or releasing a guard: close them KILLED."""
        for run in self.runs.values():
            if run.open:
                with contextlib.suppress(Exception):
                    run.sink.set_tags({"failure_reason": KILLED_REASON})
                _try(lambda run=run: run.sink.end("KILLED"), f"run {run.sink.run_id}")
        for run_id, uri in self.guarded.items():

            def close(run_id: str = run_id, uri: str = uri) -> None:
                store = open_store(uri)
                for child in store.children(run_id):
                    store.close_if_running(child.run_id, "KILLED", KILLED_REASON)
                store.close_if_running(run_id, "KILLED", KILLED_REASON)

            _try(close, f"run {run_id}")


def _try(action: Any, what: str) -> None:
    try:
        action()
    except Exception as exc:
        print(f"mlplab tracking helper: could not close {what}: {exc}", file=sys.stderr, flush=True)


def main() -> None:
    """The helper process: serve the channel on the file descriptor given as argument."""
    os.dup2(2, 1)  # MLflow's own prints go to stderr
    _Server(Connection(int(sys.argv[1]))).serve(warm="warm" in sys.argv[2:])
