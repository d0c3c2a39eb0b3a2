"""Why the embedding cache is one SQLite file: it against one ``.npy`` file per text.

Both layouts store ``--n`` vectors of 384 float32 values (MiniLM's shape), keyed by SHA-256
of synthetic texts, in a fresh temporary folder; both write atomically (SQLite transactions;
``.npy`` files written under a temporary name and renamed, in 256 shard folders by the first
hash byte). Measured per layout, wall-clock:

* **write**: storing all vectors in batches of ``--batch`` (as a fit stores its prompts);
* **batch read**: reading all of them back in batches of ``--batch``, cold in-process;
* **single read**: p50 / p99 of looking up one vector (what routing one prompt pays);
* **disk**: bytes used once closed (the SQLite file; the sum of the ``.npy`` file sizes,
  which understates the block usage of many small files).

Run from the project root: ``.venv/bin/python benchmarks/embedding_cache.py [--n 5000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routecast.encoders.cache import EmbeddingCache

DIM = 384
ENCODER = "bench|1|{}"


def keys_and_vectors(n: int) -> tuple[list[bytes], npt.NDArray[np.float64]]:
    keys = [hashlib.sha256(f"prompt {i}".encode()).digest() for i in range(n)]
    vecs = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    return keys, vecs.astype(np.float64)


class NpyShards:
    """One ``.npy`` per text under ``root/<first byte hex>/<sha256 hex>.npy``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: bytes) -> Path:
        h = key.hex()
        return self.root / h[:2] / f"{h}.npy"

    def put(self, items: list[tuple[bytes, npt.NDArray[np.float64]]]) -> None:
        for key, vec in items:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, vec.astype(np.float32))
            os.replace(tmp, path)

    def get(self, keys: Sequence[bytes]) -> dict[bytes, npt.NDArray[np.float64]]:
        out = {}
        for key in keys:
            try:
                out[key] = np.load(self._path(key)).astype(np.float64)
            except FileNotFoundError:
                continue
        return out


def measure(name: str, put: object, get: object, keys: list[bytes],
            vecs: npt.NDArray[np.float64], batch: int, disk: object, close: object) -> None:
    assert callable(put) and callable(get) and callable(disk) and callable(close)
    t = time.perf_counter()
    for s in range(0, len(keys), batch):
        put(list(zip(keys[s:s + batch], vecs[s:s + batch], strict=True)))
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, len(keys), batch):
        got = get(keys[s:s + batch])
        assert len(got) == len(keys[s:s + batch])
    read_s = time.perf_counter() - t
    single = []
    for key in keys[:: max(1, len(keys) // 500)]:
        t = time.perf_counter()
        get([key])
        single.append(time.perf_counter() - t)
    single.sort()
    close()  # SQLite folds its write-ahead log into the file when the last connection closes
    print(f"{name:<14}{write_s:>9.2f}s{len(keys) / write_s:>10.0f}/s{read_s:>9.3f}s"
          f"{len(keys) / read_s:>10.0f}/s{1e3 * statistics.median(single):>10.3f}"
          f"{1e3 * single[int(0.99 * (len(single) - 1))]:>10.3f}{disk() / 2**20:>9.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedding_cache.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="vectors stored")
    parser.add_argument("--batch", type=int, default=256, help="vectors per write/read call")
    args = parser.parse_args(argv)
    keys, vecs = keys_and_vectors(args.n)
    print(f"{args.n} vectors x {DIM} float32, batches of {args.batch}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'layout':<14}{'write':>10}{'':>12}{'read':>10}{'':>12}{'1 p50 ms':>10}"
          f"{'1 p99 ms':>10}{'MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        db = EmbeddingCache(Path(tmp) / "sqlite" / "e.sqlite3")
        enc = ENCODER.format(DIM)

        def sqlite_disk() -> int:
            return sum(p.stat().st_size for p in (Path(tmp) / "sqlite").iterdir())

        measure("sqlite (WAL)", lambda items: db.put(enc, items),
                lambda ks: db.get(enc, ks), keys, vecs, args.batch, sqlite_disk, db.close)
        shards = NpyShards(Path(tmp) / "npy")

        def npy_disk() -> int:
            return sum(p.stat().st_size for p in (Path(tmp) / "npy").rglob("*.npy"))

        measure("npy shards", shards.put, shards.get, keys, vecs, args.batch, npy_disk,
                lambda: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
