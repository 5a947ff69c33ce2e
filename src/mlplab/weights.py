"""The weight file format (.npz with W0, W1, ...; row 0 = bias) and its hash."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from mlplab.errors import DataError

Array = np.ndarray


def save_weights(path: Path, weights: Sequence[Array]) -> Path:
    """Write ``weights`` as ``W0, W1, ...`` into an uncompressed .npz at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"W{l}": W for l, W in enumerate(weights)}
    np.savez(path, **arrays)
    return path


def load_weights(path: str | Path) -> list[Array]:
    """Read W0, W1, ... from an .npz; raises :class:`DataError` if the file is unusable."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if head[:4] != b"PK\x03\x04":  # an .npz is a zip archive
            what = "an .npy array" if head == b"\x93NUMPY" else "not a zip archive"
            raise DataError(
                f"model.init_file={str(path)!r}: not an .npz file of W0, W1, ... ({what}; "
                "write one with numpy.savez(path, W0=..., W1=...))"
            )
        with np.load(path, allow_pickle=False) as npz:
            names = sorted((k for k in npz.files if k.startswith("W")), key=lambda k: int(k[1:]))
            if not names or names != [f"W{l}" for l in range(len(names))]:
                raise DataError(
                    f"model.init_file={str(path)!r}: expected arrays W0, W1, ... "
                    f"(found {sorted(npz.files)})"
                )
            return [np.asarray(npz[k], dtype=np.float64) for k in names]
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(
            f"model.init_file={str(path)!r}: not a readable .npz file ({exc})"
        ) from None


def check_weights(weights: Sequence[Array], sizes: Sequence[int], source: str) -> None:
    """Raise :class:`DataError` unless ``weights`` fit the layer ``sizes`` and are finite."""
    expected = [(a + 1, b) for a, b in pairwise(sizes)]
    got = [tuple(np.shape(W)) for W in weights]
    if got != expected:
        raise DataError(
            f"{source}: weight shapes {got} do not fit the topology {list(sizes)} "
            f"(expected {expected}: (fan_in + 1, fan_out), row 0 = bias)"
        )
    for l, W in enumerate(weights):
        bad = np.count_nonzero(~np.isfinite(W))
        if bad:
            raise DataError(f"{source}: W{l} holds {bad} NaN or infinite value(s)")


def weights_sha256(weights: Sequence[Array]) -> str:
    """SHA-256 over each matrix's name, dtype, shape and C-order bytes, in order."""
    h = hashlib.sha256()
    for l, W in enumerate(weights):
        W = np.ascontiguousarray(W)
        h.update(f"W{l}|{W.dtype.str}|{W.shape}|".encode())
        h.update(W.tobytes())
    return h.hexdigest()
