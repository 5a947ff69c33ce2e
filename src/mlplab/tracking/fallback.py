"""When the tracking store fails mid-run, nothing is lost: a local fallback folder, and its import.

:class:`FallbackSink` wraps the run's sink. It journals every call (params, tags, metric
histories, final metrics, artifacts, the final status) in memory while passing it on.
The first call that fails (a server that died, a full disk, a locked database) switches it
to *fallback mode*: from then on nothing more is sent to the store, and the whole record of
the run, the calls that had already succeeded included, is written to a folder::

    <hydra output dir>/mlflow-fallback/
        manifest.json     params, tags, metrics (key -> [[step, value, timestamp], ...]),
                          run name, experiment, original store and run id, status, times
        inputs.pickle     the data splits logged as dataset inputs
        artifacts/        the run's artifact tree (config.yaml, weights/, plots/, model/ ...)

One command recreates the run, with all of that and its final status, in a store::

    python -m mlplab.tracking.fallback import <folder> [--tracking-uri URI] [--experiment NAME]

(``URI`` defaults to the store the run was meant for). If the original, incomplete run is
found in that store still RUNNING, it is closed as FAILED with a tag pointing at the
imported run, so the store never shows two versions of the truth. A folder is imported
once per store (``--force`` to do it again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlplab.errors import UserError
from mlplab.tracking.sink import DataSplit, ModelRequest, Sink
from mlplab.tracking.store import open_store, save_model
from mlplab.tracking.uris import configure_http, resolve_uri

FORMAT = "mlplab-fallback/1"
MANIFEST = "manifest.json"
ARTIFACTS = "artifacts"
FOLDER_NAME = "mlflow-fallback"
INPUTS = "inputs.pickle"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(exc: BaseException) -> str:
    """One short line: the exception's type and the start of its message."""
    kind = getattr(exc, "kind", type(exc).__name__)  # a helper's failure names the original
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    for cause in ("Connection refused", "timed out", "Name or service not known"):
        if cause in line and len(line) > 160:
            line = f"{line[:120]}... {cause}"
            break
    line = line if len(line) <= 200 else line[:197] + "..."
    return f"{kind}: {line}"


def import_command(folder: Path) -> str:
    """The one command that imports ``folder`` (into the store the run was meant for)."""
    return f"python -m mlplab.tracking.fallback import {shlex.quote(str(folder))}"


class FallbackSink:
    """A sink that passes every call on and, once the store fails, records into a folder."""

    def __init__(
        self,
        inner: Sink,
        folder: Path,
        tracking_uri: str,
        experiment: str,
        parent_run_id: str | None = None,
    ) -> None:
        self.inner = inner
        self.folder = Path(folder).resolve()
        self.active = False
        self.error: str | None = None
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "tracking_uri": tracking_uri,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "run_id": None,
            "run_name": None,
            "start_time": None,
            "end_time": None,
            "status": None,
            "error": None,
            "params": {},
            "tags": {},
            "metrics": {},
            "imports": [],
            "seconds_lost_to_store": 0.0,
        }
        # (source folder, artifact path inside the run) of every artifact call, in order
        self._artifacts: list[tuple[Path, str]] = []
        self._model: ModelRequest | None = None
        self._inputs: list[DataSplit] = []

    @property
    def run_id(self) -> str | None:
        """The run's id in the store (None if the store failed before creating it)."""
        return getattr(self.inner, "run_id", None)

    # -- the sink protocol -----------------------------------------------------------------
    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Open the run. A failure here is raised (nothing has been trained yet)."""
        self.manifest.update(run_name=run_name, start_time=_now_ms())
        self.manifest["params"].update({k: str(v) for k, v in params.items()})
        self.manifest["tags"].update({k: str(v) for k, v in tags.items()})
        self.inner.start(params, tags, run_name)

    def log_history(
        self, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series; ``steps`` are their epochs (default 1, 2, ...)."""
        now = _now_ms()
        for key, values in history.items():
            points = self.manifest["metrics"].setdefault(key, [])
            numbers = range(1, len(values) + 1) if steps is None else steps
            for step, value in zip(numbers, np.asarray(values, dtype=float).tolist(), strict=True):
                points.append([int(step), value, now])
        self._pass_on(lambda: self.inner.log_history(history, steps))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single-point metrics, step 0."""
        now = _now_ms()
        for key, value in metrics.items():
            self.manifest["metrics"].setdefault(key, []).append([0, float(value), now])
        self._pass_on(lambda: self.inner.log_metrics(metrics))

    def log_inputs(self, splits: Sequence[DataSplit]) -> None:
        """The data splits as dataset inputs (``inputs.pickle`` in fallback mode)."""
        self._inputs = list(splits)
        self._pass_on(lambda: self.inner.log_inputs(splits))

    def log_artifacts(self, local_dir: Path) -> None:
        """Every file under ``local_dir`` at the root of the run's artifacts."""
        if (Path(local_dir), "") not in self._artifacts:  # the inputs first, then the rest
            self._artifacts.append((Path(local_dir), ""))
        self._pass_on(lambda: self.inner.log_artifacts(local_dir), copy=Path(local_dir))

    def log_model(self, request: ModelRequest) -> None:
        """The MLflow model under ``model/`` (built in the folder in fallback mode)."""
        self._model = request
        self._pass_on(lambda: self.inner.log_model(request), write_model=True)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""
        self.manifest["tags"].update({k: str(v) for k, v in tags.items()})
        self._pass_on(lambda: self.inner.set_tags(tags))

    def end(self, status: str) -> None:
        """Close the run; in fallback mode, finish the folder instead."""
        self.manifest.update(status=status, end_time=_now_ms())
        self._pass_on(lambda: self.inner.end(status))
        if self.active:
            self._close_original()

    # -- fallback mode ---------------------------------------------------------------------
    def _pass_on(
        self, action: Callable[[], None], copy: Path | None = None, write_model: bool = False
    ) -> None:
        if not self.active:
            t0 = time.perf_counter()
            try:
                action()
                return
            except Exception as exc:
                self._lost(t0)
                self._activate(exc)
                return
        if copy is not None:
            self._copy(copy, "")
        if write_model:
            self._write_model()
        self._write_manifest()

    def _activate(self, exc: BaseException) -> None:
        """Switch to fallback mode: write everything recorded so far into the folder."""
        self.active = True
        self.error = _describe(exc)
        self.manifest["error"] = self.error
        (self.folder / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        for source, artifact_path in self._artifacts:
            self._copy(source, artifact_path)
        self._write_model()
        self._write_manifest()
        print(
            f"warning: the tracking store failed ({self.error}); the rest of this run is "
            f"recorded in {self.folder}",
            file=sys.stderr,
            flush=True,
        )

    def _copy(self, source: Path, artifact_path: str) -> None:
        if not source.is_dir():
            self.manifest.setdefault("missing_artifacts", []).append(str(source))
            return
        target = self.folder / ARTIFACTS / artifact_path
        inside = self.folder

        def ignore(directory: str, names: list[str]) -> list[str]:
            return [n for n in names if (Path(directory) / n).resolve() == inside]

        shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)

    def _write_model(self) -> None:
        if self._model is None:
            return
        target = self.folder / ARTIFACTS / "model"
        shutil.rmtree(target, ignore_errors=True)
        try:
            save_model(self._model, target)
        except Exception as exc:  # the rest of the record matters more
            self.manifest["model_error"] = _describe(exc)

    def _write_manifest(self) -> None:
        self.manifest["run_id"] = self.run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._inputs:
            (self.folder / INPUTS).write_bytes(pickle.dumps(self._inputs))
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.folder / MANIFEST)

    def _close_original(self) -> None:
        """One quick attempt to close the store's half-written run (it may be back)."""
        if self.run_id is None:
            return
        t0 = time.perf_counter()
        try:
            self.inner.set_tags({"failure_reason": self._reason()})
            self.inner.end("FAILED")
        except Exception:
            self._lost(t0)
            self._write_manifest()

    def _lost(self, t0: float) -> None:
        """Add the time since ``t0`` to the time spent waiting for a failing store."""
        self.manifest["seconds_lost_to_store"] += time.perf_counter() - t0

    def _reason(self) -> str:
        return (
            f"the tracking store failed during the run ({self.error}); the full record was "
            f"written to {self.folder}: {import_command(self.folder)}"
        )

    def notice(self) -> str:
        """What to tell the user: where the record is and the command that imports it."""
        return (
            f"the tracking store failed during the run ({self.error}). Nothing is lost: the "
            f"run's params, metrics, tags and artifacts are in {self.folder}\n"
            f"  import them with: {import_command(self.folder)}\n"
            f"  (into {self.manifest['tracking_uri']} once it is back; add "
            "--tracking-uri URI for another store)"
        )


# -- import ------------------------------------------------------------------------------
def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a fallback folder; raises :class:`UserError` if there is none."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{str(folder)!r} is not a fallback folder (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(path)!r} cannot be read ({_describe(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not a {FORMAT} manifest")
    return manifest


def import_folder(
    folder: Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    force: bool = False,
) -> str:
    """Recreate the run recorded in ``folder`` in a store; returns the new run id."""
    folder = Path(folder).resolve()
    manifest = load_manifest(folder)
    uri = resolve_uri(tracking_uri or manifest["tracking_uri"])
    done = [i for i in manifest.get("imports", []) if i.get("tracking_uri") == uri]
    if done and not force:
        raise UserError(
            f"{str(folder)!r} was already imported into {uri} as run {done[-1]['run_id']} "
            "(--force imports it again)"
        )
    store = open_store(uri)
    original = manifest.get("run_id")
    tags = {**manifest["tags"], "mlplab_fallback_folder": str(folder)}
    if original:
        tags["mlplab_fallback_of"] = original
    parent = manifest.get("parent_run_id")
    if parent and store.get_run(parent) is None:
        tags["mlplab_parent_run_id"], parent = parent, None
    run_id = store.create_run(
        experiment or manifest["experiment"],
        manifest.get("run_name"),
        tags,
        manifest["params"],
        parent,
        manifest.get("start_time"),
    )
    try:
        store.log_recorded(run_id, manifest["metrics"])
        if (folder / INPUTS).is_file():
            store.log_inputs(run_id, pickle.loads((folder / INPUTS).read_bytes()))
        artifacts = folder / ARTIFACTS
        if (artifacts / "model" / "MLmodel").is_file():
            store.log_model_folder(run_id, artifacts / "model")
        if artifacts.is_dir() and any(artifacts.iterdir()):
            store.log_artifacts(run_id, artifacts)
        if not manifest.get("status"):
            store.set_tags(run_id, {"failure_reason": "the run never ended"})
        store.end_run(run_id, manifest.get("status") or "FAILED", manifest.get("end_time"))
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete_run(run_id)  # no half-imported run left behind
        raise
    if original and original != run_id:
        with contextlib.suppress(Exception):
            store.close_if_running(
                original,
                "FAILED",
                f"the tracking store failed during the run; its full record was imported "
                f"as run {run_id}",
            )
    manifest.setdefault("imports", []).append(
        {"tracking_uri": uri, "run_id": run_id, "time": _now_ms()}
    )
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)
    return run_id


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlplab.fallback import <folder> [--tracking-uri URI]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.tracking.fallback",
        description="Import a run recorded in a fallback folder into an MLflow store.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="recreate the run in a store")
    imp.add_argument("folder", type=Path, help="the fallback folder (with manifest.json)")
    imp.add_argument(
        "--tracking-uri", default=None, help="the store (default: the one the run was meant for)"
    )
    imp.add_argument("--experiment", default=None, help="experiment name (default: the run's)")
    imp.add_argument("--force", action="store_true", help="import again into the same store")
    args = parser.parse_args(argv)
    configure_http(5, 1)
    try:
        manifest = load_manifest(args.folder)
        run_id = import_folder(args.folder, args.tracking_uri, args.experiment, args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:
        print(f"error: the import failed ({_describe(exc)})", file=sys.stderr, flush=True)
        return 1
    n_points = sum(len(p) for p in manifest["metrics"].values())
    print(
        f"imported run {run_id} ({manifest.get('status') or 'FAILED'}) into experiment "
        f"{args.experiment or manifest['experiment']!r} at "
        f"{args.tracking_uri or manifest['tracking_uri']}: {len(manifest['params'])} params, "
        f"{n_points} metric points, {len(manifest['tags'])} tags",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
