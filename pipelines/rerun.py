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

import argparse
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlplab.cli import report
from mlplab.config import Config
from mlplab.errors import UserError, say_error
from mlplab.interrupts import sigterm_interrupts
from mlplab.pipeline import configure, run
from mlplab.tracking import open_store
from mlplab.tracking.mlflow_store import RunInfo
from mlplab.tracking.uris import default_uri, resolve_uri

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
    if text is None:
        raise RerunError(f"run {run_id!r} has no config.yaml artifact: it cannot be rerun")
    return run, text


def rerun_config(text: str, overrides: list[str]) -> Config:
    """The recorded config merged into the schema, overrides applied, as a top-level run."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or key.startswith(("+", "~")) or ("." not in key and key != "seed"):
            raise RerunError(
                f"override {item!r} is not allowed: expected a dotted key=value such as "
                "optimizer.lr=0.1 (config groups like optimizer=adam cannot be switched "
                "in a rerun)"
            )
    try:
        loaded = OmegaConf.create(text)
        merged = OmegaConf.merge(
            OmegaConf.structured(Config), loaded, OmegaConf.from_dotlist(overrides)
        )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        msg = str(exc).strip().splitlines()[0]
        raise RerunError(
            f"the recorded config with {' '.join(overrides) or 'no overrides'} is not valid: {msg}"
        ) from None
    assert isinstance(cfg, Config)
    given = {item.partition("=")[0] for item in overrides}
    cfg.tracking.parent_run_id = None  # a rerun is a top-level run
    if "tracking.run_name" not in given:
        cfg.tracking.run_name = None
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Rerun; print MATCH or DIFFER. Returns the exit status."""
    sigterm_interrupts()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = resolve_uri(args.source_uri or default_uri())
    try:
        original, text = fetch_run(source, args.run_id)
        cfg = configure(rerun_config(text, list(args.overrides)))
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        out_dir = Path(args.out) if args.out else OUTPUTS / f"{args.run_id}_{stamp}"
        if cfg.tracking.run_name is None:
            cfg.tracking.run_name = f"rerun of {original.run_name or args.run_id}"
        print(
            f"rerun of {args.run_id} ({original.run_name}) from {source}\n"
            f"  into {cfg.tracking.uri if cfg.tracking.enabled else '(tracking off)'}",
            flush=True,
        )
        outcome = run(cfg, out_dir, list(args.overrides), extra_tags={"rerun_of": args.run_id})
    except UserError as exc:
        say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    report(outcome, uri=cfg.tracking.uri)
    if outcome.status != "FINISHED":
        print(f"the rerun ended {outcome.status}: {outcome.failure or 'interrupted'}", flush=True)
    expected, got = original.tags.get("weights_sha256"), outcome.weights_sha256
    if expected and got == expected:
        print(f"MATCH: weights sha256 {got}", flush=True)
        return 0
    print(
        f"DIFFER: original weights sha256 {expected or '(none recorded)'}, rerun {got or '(none)'}",
        flush=True,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
