"""Artifact folders: a JSON file beside a ``.npz`` of numpy arrays, replaced whole or not at all.

Saved routers (:mod:`routecast.routers.persist`) and learned scorers
(:mod:`routecast.signals.persist`) share this layout: the JSON holds names, parameters and
other JSON-able state, the ``.npz`` every array, read back with ``allow_pickle=False`` so that
loading a folder from elsewhere cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def write_json_npz(directory: Path, meta_file: str, arrays_file: str, text: str,
                   arrays: Mapping[str, npt.NDArray[Any]]) -> Path:
    """Write ``text`` to ``directory/meta_file`` and ``arrays`` to ``directory/arrays_file``
    (the folder is created if needed); returns ``directory``.

    Both files are written under temporary names and then renamed, arrays first: a reader
    never sees a half-written file, and an interrupted save leaves the previous artifact's
    JSON in place.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp_arrays = directory / f".partial-{arrays_file}"
    with open(tmp_arrays, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly
    tmp_meta = directory / f".partial-{meta_file}"
    tmp_meta.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp_arrays, directory / arrays_file)
    os.replace(tmp_meta, directory / meta_file)
    return directory
