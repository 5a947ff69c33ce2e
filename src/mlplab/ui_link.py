"""Print where the MLflow UI shows this project's runs (used by ``make ui``).

MLflow 3 opens an experiment in its GenAI view; the table of training runs, with a
sweep's children grouped under their parent, is at
``#/experiments/<id>/runs?workflowType=machine_learning``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlplab.project import repo_root


def experiment_links(db: Path, host: str, port: int) -> list[str]:
    """One link per experiment in the SQLite store ``db`` (none if it does not exist)."""
    if not db.is_file():
        return []
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        try:
            rows = con.execute(
                "SELECT experiment_id, name FROM experiments "
                "WHERE lifecycle_stage = 'active' ORDER BY experiment_id"
            ).fetchall()
        except sqlite3.Error:
            return []
    base = f"http://{host}:{port}"
    return [
        f"  {name}: {base}/#/experiments/{eid}/runs?workflowType=machine_learning"
        for eid, name in rows
    ]


def main() -> None:
    """Print the UI address and the training-runs link of each experiment."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--db", type=Path, default=repo_root() / "mlflow.db")
    args = parser.parse_args()
    print(f"MLflow UI: http://{args.host}:{args.port}  (Ctrl-C to stop)")
    links = experiment_links(args.db, args.host, args.port)
    if links:
        print("Training runs (sweep children grouped under their parent):")
        print("\n".join(links))
    else:
        print(f"No runs yet in {args.db}: try `make run` first.")


if __name__ == "__main__":
    main()
