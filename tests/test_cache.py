"""The on-disk embedding cache: exact, keyed by encoder identity, shared safely by processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest

from routecast.encoders import make_encoder
from routecast.encoders.cache import (
    FILE_NAME,
    CachedEncoder,
    EmbeddingCache,
    cache_dir,
    text_key,
)
from routecast.encoders.minilm import MiniLMEncoder
from routecast.encoders.tfidf import TfidfEncoder
from routecast.errors import ConfigError
from routecast.routers import make_router
from routecast.routers.persist import save_router
from tests.toy import toy_dataset

ROOT = Path(__file__).resolve().parents[1]


class Fake:
    """A deterministic 'pre-trained' encoder that counts the texts it embeds."""

    name = "fake"

    def __init__(self, dim: int = 8, exact32: bool = True) -> None:
        self.dim = dim
        self.exact32 = exact32
        self.seen: list[str] = []

    def fit(self, texts: Sequence[str]) -> Self:
        return self

    def get_params(self) -> dict[str, Any]:
        return {"dim": self.dim, "exact32": self.exact32}

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return np.stack([vector(t, self.dim, self.exact32) for t in texts]) if texts else \
            np.empty((0, self.dim))


def vector(text: str, dim: int, exact32: bool) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return v.astype(np.float32).astype(np.float64) if exact32 else v


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    return EmbeddingCache(tmp_path / FILE_NAME)


@pytest.mark.parametrize("exact32", [True, False])
def test_second_transform_reads_the_cache_bit_for_bit(cache: EmbeddingCache,
                                                      exact32: bool) -> None:
    texts = ["alpha", "beta", "gamma", "beta"]  # a duplicate is embedded once
    first = CachedEncoder(Fake(exact32=exact32), version="1", cache=cache)
    a = first.transform(texts)
    assert first.inner.seen == ["alpha", "beta", "gamma"]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a, np.stack([vector(t, 8, exact32) for t in texts]))
    again = CachedEncoder(Fake(exact32=exact32), version="1", cache=cache)
    b = again.transform(["gamma", "alpha", "delta"])
    assert again.inner.seen == ["delta"]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(b[:2], a[[2, 0]])  # float64 values survive exactly
    assert cache.count() == 4


def test_key_holds_encoder_version_and_params(cache: EmbeddingCache) -> None:
    CachedEncoder(Fake(dim=8), version="1", cache=cache).transform(["x"])
    for other in (CachedEncoder(Fake(dim=8), version="2", cache=cache),
                  CachedEncoder(Fake(dim=4), version="1", cache=cache)):
        out = other.transform(["x"])
        assert other.inner.seen == ["x"]  # type: ignore[attr-defined]  # a miss: re-embedded
        assert out.shape == (1, other.inner.dim)  # type: ignore[attr-defined]
    assert cache.count() == 3
    assert text_key("x") == hashlib.sha256(b"x").digest()


def test_unknown_version_bypasses_the_cache(cache: EmbeddingCache) -> None:
    enc = CachedEncoder(Fake(), version=lambda: None, cache=cache)
    enc.transform(["x"])
    enc.transform(["x"])
    assert enc.inner.seen == ["x", "x"]  # type: ignore[attr-defined]
    assert cache.count() == 0


def test_location_and_opt_outs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTECAST_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    assert isinstance(make_encoder("minilm"), CachedEncoder)
    assert isinstance(make_encoder("minilm", cache=False), MiniLMEncoder)
    monkeypatch.setenv("ROUTECAST_CACHE", "off")
    assert isinstance(make_encoder("minilm"), MiniLMEncoder)
    monkeypatch.delenv("ROUTECAST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "routecast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "routecast"
    # TF-IDF is fitted, so its features depend on the fit, not on the text: never cached.
    assert isinstance(make_encoder("tfidf"), TfidfEncoder)


def test_sparse_encoders_are_refused(cache: EmbeddingCache) -> None:
    tfidf = TfidfEncoder(min_df=1).fit(["some words", "other words"])
    with pytest.raises(ConfigError, match="never be cached"):
        CachedEncoder(tfidf, version="1", cache=cache).transform(["words"])


def test_an_unusable_cache_warns_and_embeds_anyway(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    enc = CachedEncoder(Fake(), version="1", cache=EmbeddingCache(blocked / FILE_NAME))
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    enc2 = CachedEncoder(Fake(), version="1", cache=EmbeddingCache(corrupt))
    for e in (enc, enc2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = e.transform(["x", "y"])
            except OSError:
                pytest.fail("a broken cache must not break the encoder")
        np.testing.assert_array_equal(out, np.stack([vector(t, 8, True) for t in "xy"]))
        assert any("ROUTECAST_CACHE" in str(w.message) for w in caught)


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from routecast.encoders.cache import CachedEncoder, EmbeddingCache
    from tests.test_cache import Fake
    cache = EmbeddingCache({path!r})
    worker = int(sys.argv[1])
    for batch in range(10):
        # Overlapping batches: every text is wanted by two workers at about the same time.
        texts = [f"text {{i}}" for i in range(40 * (worker + batch), 40 * (worker + batch) + 60)]
        CachedEncoder(Fake(), version="1", cache=cache).transform(texts)
    print("ok")
""")


def test_concurrent_processes_share_one_cache(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    code = WRITER.format(root=str(ROOT), path=str(path))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    cache = EmbeddingCache(path)
    wanted = {f"text {i}" for w in range(4) for b in range(10)
              for i in range(40 * (w + b), 40 * (w + b) + 60)}
    assert cache.count() == len(wanted)  # each row stored once, none lost
    enc = CachedEncoder(Fake(), version="1", cache=cache)
    texts = sorted(wanted)
    np.testing.assert_array_equal(enc.transform(texts),
                                  np.stack([vector(t, 8, True) for t in texts]))
    assert enc.inner.seen == []  # type: ignore[attr-defined]  # all read back, none recomputed


@pytest.mark.needs_minilm
def test_minilm_router_reloads_and_routes_from_the_cache_without_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fit here (the MiniLM weights load once per test session), with the test's own cache.
    monkeypatch.setenv("ROUTECAST_CACHE", str(tmp_path / "cache"))
    data = toy_dataset(60)
    prompts = list(data.subset("test").prompts)
    router = make_router("knn", encoder="minilm", k=5).fit(data.subset("train"))
    save_router(router, tmp_path / "r")
    predicted = router.predict(prompts)
    plain = make_encoder("minilm", cache=False).transform(prompts)
    # Reload in a fresh process: every embedding comes from the cache, so torch never loads.
    use = textwrap.dedent(f"""
        import json, sys
        from routecast.routers.persist import load_router
        router, _ = load_router({str(tmp_path / "r")!r})
        q = router.predict({prompts!r})
        emb = router.encoder_.transform({prompts!r})
        print(json.dumps([q.tolist(), emb.tolist(), "torch" in sys.modules]))
    """)
    out = subprocess.run([sys.executable, "-c", use], env=dict(os.environ),
                         capture_output=True, text=True, check=True).stdout
    again, emb, torch_loaded = json.loads(out)
    assert torch_loaded is False
    np.testing.assert_array_equal(np.asarray(again), predicted)
    np.testing.assert_array_equal(np.asarray(emb), plain)  # identical to the model's output


def test_saved_router_with_a_cached_encoder_keeps_the_plain_name(tmp_path: Path,
                                                                 cache: EmbeddingCache) -> None:
    router = make_router("knn", encoder=CachedEncoder(Fake(), version="1", cache=cache), k=3)
    router.fit(toy_dataset(40))
    values, _ = router.get_state()
    assert values["__encoders__"]["encoder_"]["name"] == "fake"
    assert values["__encoders__"]["encoder_"]["params"] == {"dim": 8, "exact32": True}
    with pytest.raises(ConfigError, match="register"):  # unregistered: saved by name fails
        save_router(router, tmp_path)
    assert not (tmp_path / "router.json").exists()
