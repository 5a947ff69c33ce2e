"""Rerun a logged run from its recorded ``config.yaml`` and compare the final weights.

    python pipelines/rerun.py <run id> [key=value ...] [--source-uri URI]
    make rerun RUN=<run id> [ARGS="key=value ..."]

The run is looked up in the source store (``--source-uri``, default: the local store or
``MLFLOW_TRACKING_URI``); its ``config.yaml`` is merged into the config schema, the
``key=value`` overrides (dotted keys, e.g. ``optimizer.lr=0.1`` or
``tracking.uri=sqlite:///other.db``) are applied on top, and the run is done again as a
new top-level run tagged ``rerun_of=<id>``, in ``tracking.uri`` (the override, else the
recorded one). It prints MATCH when the new final weights hash (``weights_sha256``)
equals the original's, DIFFER otherwise.

Exit status: 0 MATCH, 1 DIFFER, 2 a user error (unknown run id, bad override, no
config.yaml), 130 interrupted.
"""

from __future__ import annotations

import sys

from mlplab.interrupts import quiet_start

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports: one line, exit 130

import argparse
import json
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlplab.cli import report
from mlplab.compare import config_differences, history_departure, weight_differences
from mlplab.config import Config, TrackingConfig, recorded_config, unknown_key_hint
from mlplab.environment import differences
from mlplab.errors import TrackingError, UserError, say_error
from mlplab.interrupts import sigterm_interrupts
from mlplab.pipeline import RunOutcome, configure, run
from mlplab.tracking import flatten, open_store
from mlplab.tracking.uris import check_source, default_uri, resolve_uri
from mlplab.weights import load_weights, weights_sha256

if TYPE_CHECKING:  # the store's module imports MLflow: --help must not wait for it
    from mlplab.tracking.mlflow_store import RunInfo, RunStore

OUTPUTS = Path("outputs") / "rerun"


class RerunError(UserError):
    """The run to replay cannot be found or used."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``run_id``, ``overrides`` and ``source_uri``."""
    parser = argparse.ArgumentParser(
        prog="rerun",
        description="Rerun a logged MLflow run from its config.yaml; compare weights_sha256.",
    )
    parser.add_argument("run_id", help="the id of the run to replay")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted-key overrides applied to the recorded config",
    )
    parser.add_argument(
        "--source-uri",
        default=None,
        help="the tracking store holding the run (default: the local store)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: outputs/rerun/...)")
    return parser.parse_intermixed_args(argv)


def fetch_run(uri: str, run_id: str) -> tuple[RunInfo, str]:
    """The run and the text of its ``config.yaml``; :class:`RerunError` if unusable."""
    run = open_store(uri).get_run(run_id)
    if run is None:
        raise RerunError(f"run {run_id!r} not found in the tracking store {uri}")
    text = open_store(uri).read_text(run_id, "config.yaml")
    role = run.tags.get("mlplab_role")
    if text is None and role in ("sweep", "tune"):
        raise RerunError(
            f"run {run_id!r} is the parent of a {role}: it trained nothing; rerun one of its "
            "children (make rerun RUN=<a child's run id>: the UI lists them under it)"
        )
    if text is None:
        reason = run.tags.get("failure_reason") or "no reason given"
        why = (
            " (it is RUNNING and has not stored its files yet)"
            if run.status == "RUNNING"
            else f" (it ended {run.status}, {reason}, before its files reached the store)"
        )
        raise RerunError(
            f"run {run_id!r} has no config.yaml artifact: it cannot be rerun"
            + (moved(run) if run.status == "FINISHED" else why)
        )
    return run, text


def moved(run: RunInfo) -> str:
    """Why a local run's artifacts may be missing: its folder is not where the store says."""
    local = run.artifact_uri.removeprefix("file://")
    if local.startswith("/") and not Path(local).exists():
        return f" (its artifacts should be in {local}, which does not exist: was the store moved?)"
    return ""


def rerun_config(text: str, overrides: list[str]) -> Config:
    """The recorded config merged into the schema, overrides applied, as a top-level run."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key and not key.startswith(("+", "~")):
            hint = unknown_key_hint([item])
            if hint:
                raise RerunError(hint)
        if not sep or not key or key.startswith(("+", "~")) or ("." not in key and key != "seed"):
            raise RerunError(
                f"override {item!r} is not allowed: expected a dotted key=value such as "
                "optimizer.lr=0.1 (config groups like optimizer=adam cannot be switched "
                "in a rerun)"
            )
    cfg = recorded_config(text, overrides)
    given = {item.partition("=")[0] for item in overrides}
    cfg.tracking.parent_run_id = None  # a rerun is a top-level run
    if "tracking.run_name" not in given:
        cfg.tracking.run_name = None
    return cfg


def source_stores(source_uri: str | None, overrides: list[str]) -> list[str]:
    """Where to look for the run: ``--source-uri``; else the store the overrides name
    (``tracking.uri=...``) and the default store (``MLFLOW_TRACKING_URI`` or ./mlflow.db)."""
    if source_uri:
        return [resolve_uri(source_uri)]
    named = [o.partition("=")[2] for o in overrides if o.startswith("tracking.uri=")]
    return list(dict.fromkeys([*(resolve_uri(u) for u in named[-1:]), resolve_uri(default_uri())]))


#: How long a source store may take to answer: the defaults of a run's tracking.
TRACKING = TrackingConfig()


def find_run(stores: list[str], run_id: str) -> tuple[str, RunInfo, str]:
    """The store holding the run, the run and its ``config.yaml``."""
    unusable = []
    for uri in stores:
        try:
            check_source(uri, TRACKING.timeout, TRACKING.retries)
            if open_store(uri).get_run(run_id) is not None:
                return (uri, *fetch_run(uri, run_id))
        except TrackingError as exc:  # another candidate may hold it
            unusable.append(str(exc))
    raise RerunError(
        f"run {run_id!r} not found in the tracking store(s) {', '.join(stores)}"
        + (f" ({'; '.join(unusable)})" if unusable else "")
    )


def interrupted_epochs(original: RunInfo, overrides: list[str]) -> int | None:
    """The epochs an interrupted run trained (to replay those only), unless the overrides
    choose ``train.epochs``: replaying all of its epochs could not end as it did."""
    epochs = original.metrics.get("epochs_run")
    given = any(o.startswith("train.epochs=") for o in overrides)
    if original.tags.get("stop_reason") != "interrupted" or epochs is None or given:
        return None
    return max(1, int(epochs))


def input_differences(store: RunStore, run_id: str, out_dir: Path, tmp: Path) -> list[str]:
    """The inputs the rerun read that differ from the original's, under the same config: its
    initial weights (a model.init_file changed since) and its data (a data.path changed)."""
    lines = []
    theirs = store.download(run_id, "weights/initial.npz", tmp / "initial")
    ours = out_dir / "weights" / "initial.npz"
    if theirs is not None and ours.is_file():
        before, now = load_weights(theirs), load_weights(ours)
        if weights_sha256(before) != weights_sha256(now):
            lines += [f"initial weights {d}" for d in weight_differences(before, now)]
    for split in ("train", "val", "test"):
        theirs = store.download(run_id, f"data/{split}.csv", tmp / "data")
        ours = out_dir / "data" / f"{split}.csv"
        if theirs is not None and ours.is_file() and theirs.read_bytes() != ours.read_bytes():
            lines.append(f"data/{split}.csv: other numbers (the data file changed since?)")
    return lines


def explain(source: str, original: RunInfo, cfg: Config, outcome: RunOutcome) -> list[str]:
    """Why a rerun differs (or what differed around a MATCH): config keys, environment
    facts, the largest |Δw| per matrix, the first epoch where train_rmse departs."""
    store = open_store(source)
    recorded = recorded_config(store.read_text(original.run_id, "config.yaml") or "")
    lines = [
        f"config {d}" for d in config_differences(flatten(asdict(recorded)), flatten(asdict(cfg)))
    ]
    env = store.read_text(original.run_id, "environment.json")
    current = json.loads((outcome.out_dir / "environment.json").read_text())
    lines += (
        [f"environment {d}" for d in differences(json.loads(env), current)]
        if env
        else ["environment: the original run recorded none"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        lines += input_differences(store, original.run_id, outcome.out_dir, Path(tmp))
        weights = store.download(original.run_id, "weights/final.npz", Path(tmp))
        rerun_weights = outcome.out_dir / "weights" / "final.npz"
        if weights is not None and rerun_weights.is_file():
            lines += weight_differences(load_weights(weights), load_weights(rerun_weights))
        history = store.download(original.run_id, "history/train_rmse.npy", Path(tmp))
        if history:
            before, steps = np.load(history), None
        else:  # a run killed outright: the points MLflow kept (maybe thinned)
            points = store.history(original.run_id, "train_rmse")
            before, steps = np.array([v for _, v in points]), [s for s, _ in points]
    trained = outcome.out_dir / "history" / "train_rmse.npy"
    if not trained.is_file():  # refused or failed before training (a gradient check)
        return [*lines, f"train_rmse: the rerun did not train ({outcome.failure})"]
    after = np.load(trained)
    epoch = history_departure(before, after, steps)
    if epoch is None:
        return [*lines, "train_rmse: the same at every epoch"]
    known = steps[-1] if steps else len(before)
    return [
        *lines,
        f"train_rmse departs at epoch {epoch} ({known} recorded, {len(after)} now)",
    ]


def main(argv: list[str] | None = None) -> int:
    """Rerun; print MATCH or DIFFER with what differs. Returns the exit status."""
    sigterm_interrupts()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        source, original, text = find_run(
            source_stores(args.source_uri, args.overrides), args.run_id
        )
        cfg = configure(rerun_config(text, list(args.overrides)))
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        out_dir = Path(args.out) if args.out else OUTPUTS / f"{args.run_id}_{stamp}"
        if cfg.tracking.run_name is None:  # with what the rerun changes, if anything
            changed = [o for o in args.overrides if not o.startswith("tracking.")]
            with_changes = f" with {' '.join(changed)}" if changed else ""
            cfg.tracking.run_name = f"rerun of {original.run_name or args.run_id}{with_changes}"
        print(
            f"rerun of {args.run_id} ({original.run_name}) from {source}\n"
            f"  into {cfg.tracking.uri if cfg.tracking.enabled else '(tracking off)'}",
            flush=True,
        )
        cut = interrupted_epochs(original, list(args.overrides))
        if cut is not None:
            cfg.train.epochs = cut
            print(
                f"  it was interrupted after {cut} epochs: the rerun trains {cut} "
                "(a second Ctrl-C, which cuts an epoch short, leaves weights that differ)",
                flush=True,
            )
        outcome = run(cfg, out_dir, list(args.overrides), extra_tags={"rerun_of": args.run_id})
        report(outcome, uri=cfg.tracking.uri)
        notes = explain(source, original, cfg, outcome)
    except UserError as exc:
        say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    expected, got = original.tags.get("weights_sha256"), outcome.weights_sha256
    if expected and got == expected:
        print(f"MATCH: weights sha256 {got}", flush=True)
        inputs = ("config ", "environment ", "data/", "initial weights ")  # not the weights
        changed = [n for n in notes if n.startswith(inputs)]
        print("\n".join(f"  (differs, without effect) {n}" for n in changed), flush=bool(changed))
        return 0
    print(
        f"DIFFER: original weights sha256 {expected or '(none recorded)'}, rerun {got or '(none)'}"
    )
    print("\n".join(f"  {n}" for n in notes), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
