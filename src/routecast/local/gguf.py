"""Read the metadata of a GGUF model file (llama.cpp's format) without loading the model.

Only the header is read: magic ``GGUF``, version (2 or 3), tensor count, key-value count,
then typed key-value pairs, little-endian (the layout documented in ggml's ``docs/gguf.md``).
Reading stops at the first key asked for that is found, or at the end of the metadata, so
the vocabulary arrays that follow are skipped unread when they come later.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Any

from routecast.errors import DataFormatError

# value type -> struct format of one scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_metadata(path: str | Path, keys: set[str] | None = None) -> dict[str, Any]:
    """The metadata of the GGUF file at ``path``: every key, or only ``keys`` (reading stops
    once all of them are found). Arrays are returned as lists."""
    path = Path(path)
    out: dict[str, Any] = {}
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise DataFormatError("not a GGUF file (no GGUF magic)", where=path)
        version, = _unpack(f, "<I", path)
        if version not in (2, 3):
            raise DataFormatError(f"GGUF version {version} is not supported (2 and 3 are)",
                                  where=path)
        _, n_kv = _unpack(f, "<QQ", path)
        for _ in range(n_kv):
            key = _string(f, path)
            kind, = _unpack(f, "<I", path)
            value = _value(f, kind, path)
            if keys is None or key in keys:
                out[key] = value
                if keys is not None and len(out) == len(keys):
                    break
    return out


def context_length(path: str | Path) -> int:
    """The context length the model was trained with (``<architecture>.context_length``)."""
    arch = read_metadata(path, {"general.architecture"}).get("general.architecture")
    key = f"{arch}.context_length"
    value = read_metadata(path, {key}).get(key)
    if not isinstance(value, int):
        raise DataFormatError(f"no {key} in its metadata", where=path)
    return value


def _unpack(f: IO[bytes], fmt: str, path: Path) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise DataFormatError("the GGUF header ends early (truncated file?)", where=path)
    return struct.unpack(fmt, raw)


def _string(f: IO[bytes], path: Path) -> str:
    n, = _unpack(f, "<Q", path)
    raw = f.read(n)
    if len(raw) != n:
        raise DataFormatError("the GGUF header ends early (truncated file?)", where=path)
    return raw.decode("utf-8", "replace")


def _value(f: IO[bytes], kind: int, path: Path) -> Any:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind], path)[0]
    if kind == _STRING:
        return _string(f, path)
    if kind == _ARRAY:
        item, n = _unpack(f, "<IQ", path)
        return [_value(f, item, path) for _ in range(n)]
    raise DataFormatError(f"unknown GGUF value type {kind}", where=path)
