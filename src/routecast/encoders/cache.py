"""An on-disk cache of embeddings from pre-trained encoders, shared by every process.

Embedding thousands of prompts with MiniLM takes tens of seconds on a CPU; benchmarks embed the
same prompts again and again. The cache keys each vector by the encoder's identity and the
text's SHA-256, so a repeated run reads vectors instead of recomputing them.

* **key**: ``encoder id`` = ``name|version|params`` (the version is the weights' package
  version, params the constructor arguments as sorted JSON) and ``sha256(text)``. Any change of
  weights or parameters gives new keys; stale rows are simply never read again.
* **storage**: one SQLite file, ``embeddings-v1.sqlite3``, in ``$ROUTECAST_CACHE``, else
  ``$XDG_CACHE_HOME/routecast``, else ``~/.cache/routecast``. ``ROUTECAST_CACHE=off`` disables
  the cache. Vectors are stored as raw bytes, float32 when that is lossless (MiniLM's are
  float32 at heart) else float64, so a cached row equals what the encoder gave, bit for bit.
* **concurrency**: SQLite in WAL mode: readers never block, writers queue behind a 30 s busy
  timeout, and each batch is one ``INSERT OR IGNORE`` transaction, so processes embedding the
  same prompts at once store each row once and never see a half-written one. A connection is
  never carried across ``fork``. A cache that cannot be opened or written (read-only home,
  corrupt file) warns once and the encoder carries on uncached: a cache must never break it.

Why SQLite and not sharded ``.npy`` files: one file per text costs a file open per lookup and
an inode per prompt, and makes concurrent writers race on renames; SQLite gives batched,
indexed lookups and atomic concurrent writes from the standard library. Measured with
``benchmarks/embedding_cache.py`` (5,000 MiniLM-sized vectors, shared 2-core machine): SQLite
writes 15,800 and reads 64,000 vectors/s, one lookup 0.011 ms p50 / 0.044 ms p99; one ``.npy``
per text writes 2,100 and reads 3,800/s, one lookup 0.088 ms p50 / 9 ms p99. Next to MiniLM
itself (~90 ms per prompt on one CPU thread) either is free; SQLite's tail is much shorter.

Only *pre-trained* encoders may be cached: a fitted encoder's features (TF-IDF's) depend on the
data it was fitted on, not on the text alone. :func:`register_cached_encoder` registers an
encoder so that ``make_encoder(name)`` returns it wrapped in the cache; ``cache=False`` opts one
instance out.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt

from routecast.encoders import register_encoder
from routecast.encoders.base import Encoder, Features
from routecast.errors import ConfigError

FILE_NAME = "embeddings-v1.sqlite3"
#: Values of ``$ROUTECAST_CACHE`` that turn the cache off.
OFF = frozenset({"off", "0", "false", "no", "none"})
BUSY_TIMEOUT_S = 30.0
#: Keys per ``SELECT ... IN (...)``: well under SQLite's bound-parameter limit.
CHUNK = 500

# A rowid table, not WITHOUT ROWID: rows hold a 1.5 KiB vector, far above the ~200 bytes up to
# which SQLite advises WITHOUT ROWID; measured on 5,000 MiniLM-sized rows it is 2.2x smaller on
# disk and 2-3x faster to write and read.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding (
    encoder TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    dtype TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, text_sha256)
)
"""

FloatArray = npt.NDArray[np.float64]


def cache_enabled() -> bool:
    """False when ``$ROUTECAST_CACHE`` is ``off`` (or ``0``, ``false``, ``no``, ``none``)."""
    return os.environ.get("ROUTECAST_CACHE", "").strip().lower() not in OFF


def cache_dir() -> Path:
    """Where the cache lives: ``$ROUTECAST_CACHE``, ``$XDG_CACHE_HOME/routecast`` or
    ``~/.cache/routecast`` (read at call time, never at import)."""
    explicit = os.environ.get("ROUTECAST_CACHE", "").strip()
    if explicit and explicit.lower() not in OFF:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "routecast"


def text_key(text: str) -> bytes:
    """SHA-256 of the text's UTF-8 bytes (lone surrogates kept, so any ``str`` hashes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors by ``(encoder id, text key)`` in one SQLite file; see the module docstring.

    Safe to share between threads (one lock) and processes (SQLite's own locking). The file
    is opened on first use, so constructing the object touches nothing.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / FILE_NAME
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        # SQLite forbids using a connection inherited through fork: open a new one (and do not
        # close the inherited one here, which could checkpoint the parent's log under it).
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is safe with WAL: a power cut may lose the last rows, never corrupt.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
            except sqlite3.Error:
                conn.close()  # not a database, or not writable: the caller warns
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, encoder: str, keys: Sequence[bytes]) -> dict[bytes, FloatArray]:
        """The cached vectors among ``keys`` (missing keys are absent), as float64 arrays."""
        found: dict[bytes, FloatArray] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), CHUNK):
                chunk = list(keys[start:start + CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT text_sha256, dtype, vector FROM embedding "
                    f"WHERE encoder = ? AND text_sha256 IN ({marks})", [encoder, *chunk])
                for key, dtype, blob in rows:
                    found[bytes(key)] = np.frombuffer(blob, dtype=dtype).astype(np.float64)
        return found

    def put(self, encoder: str, items: Iterable[tuple[bytes, FloatArray]]) -> None:
        """Store vectors; rows already present (another process was first) are kept."""
        rows = [(encoder, key, *_pack(vec)) for key, vec in items]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not mid-transaction
            try:
                conn.executemany("INSERT OR IGNORE INTO embedding (encoder, text_sha256, dtype, "
                                 "vector) VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def count(self, encoder: str | None = None) -> int:
        """Number of stored vectors (of one encoder id, or all)."""
        with self._lock:
            conn = self._connection()
            if encoder is None:
                return int(conn.execute("SELECT COUNT(*) FROM embedding").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM embedding WHERE encoder = ?",
                                    (encoder,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _pack(vec: FloatArray) -> tuple[str, bytes]:
    """``(dtype, bytes)``: float32 when converting back gives the very same float64 values."""
    vec = np.ascontiguousarray(vec, dtype=np.float64)
    small = vec.astype(np.float32)
    if np.array_equal(small.astype(np.float64), vec):
        return "<f4", small.astype("<f4").tobytes()
    return "<f8", vec.astype("<f8").tobytes()


_SHARED: dict[Path, EmbeddingCache] = {}
_WARNED: set[str] = set()


def shared_cache() -> EmbeddingCache:
    """The process-wide cache for the current :func:`cache_dir` (one connection per file)."""
    path = cache_dir() / FILE_NAME
    if path not in _SHARED:
        _SHARED[path] = EmbeddingCache(path)
    return _SHARED[path]


def _warn_once(cache: EmbeddingCache, error: Exception) -> None:
    if str(cache.path) in _WARNED:
        return
    _WARNED.add(str(cache.path))
    warnings.warn(
        f"embedding cache {cache.path} is unusable ({error}); embedding without it. Fix: make "
        "its folder writable, delete the file if it is corrupt, set ROUTECAST_CACHE to another "
        "folder, or ROUTECAST_CACHE=off", RuntimeWarning, stacklevel=3)


class CachedEncoder:
    """A pre-trained encoder whose ``transform`` reads and fills the embedding cache.

    It presents the wrapped encoder's ``name``, parameters and state, so a router saved with
    it reloads through ``make_encoder(name)`` as usual. Duplicate texts in a batch are embedded
    once. ``version`` is called on first use (so no package metadata is read at import); when
    it returns ``None`` (the weights are not installed) the cache is bypassed and the wrapped
    encoder raises its own error.
    """

    def __init__(self, inner: Encoder, *, version: Callable[[], str | None] | str = "",
                 cache: EmbeddingCache | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._version = version
        self._cache = cache
        self._id: str | None = None

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:  # resolved on first use, then kept: routing one prompt
            self._cache = shared_cache()  # should not re-read the environment every time
        return self._cache

    def encoder_id(self) -> str | None:
        """``name|version|params``, or ``None`` when the version is unknown."""
        if self._id is None:
            version = self._version() if callable(self._version) else self._version
            if version is None:
                return None
            getter = getattr(self.inner, "get_params", None)
            params = getter() if callable(getter) else {}
            self._id = f"{self.name}|{version}|{json.dumps(params, sort_keys=True)}"
        return self._id

    def fit(self, texts: Sequence[str]) -> Self:
        self.inner.fit(texts)
        return self

    def transform(self, texts: Sequence[str]) -> Features:
        texts = list(texts)
        encoder = self.encoder_id()
        if encoder is None or not texts:
            return self._embed(texts)
        keys = [text_key(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        cache = self.cache
        try:
            found = cache.get(encoder, unique)
        except (sqlite3.Error, OSError) as e:
            _warn_once(cache, e)
            return self._embed(texts)
        missing = [k for k in unique if k not in found]
        if missing:
            first = dict(zip(keys, texts, strict=True))  # one text per key
            fresh = self._embed([first[k] for k in missing])
            new = dict(zip(missing, fresh, strict=True))
            try:
                cache.put(encoder, new.items())
            except (sqlite3.Error, OSError) as e:
                _warn_once(cache, e)
            found.update(new)
        return np.stack([found[k] for k in keys])

    def _embed(self, texts: list[str]) -> FloatArray:
        out = self.inner.transform(texts)
        if hasattr(out, "tocsr"):
            raise ConfigError(
                f"encoder {self.name!r} gives sparse features, but the embedding cache holds "
                "dense vectors of pre-trained encoders; register it without the cache (fitted "
                "encoders such as TF-IDF must never be cached)")
        return np.asarray(out, dtype=np.float64).reshape(len(texts), -1)

    # Persistence is the wrapped encoder's own (see routers/persist.py).
    def get_params(self) -> dict[str, Any]:
        getter = getattr(self.inner, "get_params", None)
        return dict(getter()) if callable(getter) else {}

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        getter = getattr(self.inner, "get_state", None)
        return getter() if callable(getter) else ({}, {})

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        setter = getattr(self.inner, "set_state", None)
        if callable(setter):
            setter(values, arrays)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.inner!r})"


def package_version(distribution: str) -> Callable[[], str | None]:
    """A ``version`` callable for :class:`CachedEncoder`: the installed package's version."""

    def version() -> str | None:
        try:
            return f"{distribution}=={importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            return None

    return version


C = TypeVar("C", bound=type)


def cached_encoder_factory(cls: Callable[..., Encoder], *,
                           version: Callable[[], str | None] | str = "") -> Callable[..., Encoder]:
    """The factory to register for a *pre-trained* encoder class, so that
    ``make_encoder(name)`` caches its embeddings.

    The factory builds an instance and wraps it in :class:`CachedEncoder`, unless called with
    ``cache=False`` or ``$ROUTECAST_CACHE`` is ``off``. Never use it for an encoder that
    learns in ``fit``.
    """

    def factory(*args: Any, cache: bool = True, **params: Any) -> Encoder:
        inner: Encoder = cls(*args, **params)
        if not cache or not cache_enabled():
            return inner
        return CachedEncoder(inner, version=version)

    return factory


def register_cached_encoder(name: str, *, version: Callable[[], str | None] | str = ""
                            ) -> Callable[[C], C]:
    """Class decorator: register a pre-trained encoder in this process through
    :func:`cached_encoder_factory` (a plugin points its entry point at such a factory)."""

    def deco(cls: C) -> C:
        register_encoder(name)(cached_encoder_factory(cls, version=version))
        return cls

    return deco
