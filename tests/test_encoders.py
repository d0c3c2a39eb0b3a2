"""Encoders: TF-IDF (default) and the real all-MiniLM-L6-v2 weights (the minilm extra)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from routecast.encoders import Encoder, make_encoder
from routecast.errors import ConfigError, NotFittedError
from routecast.routers import make_router
from tests.toy import toy_dataset

TEXTS = ["What is the capital of France?", "Which city is France's capital?",
         "def add(a, b): return a + b"]


def _cosine(x: np.ndarray) -> np.ndarray:
    return np.asarray(x @ x.T)


def test_tfidf_rows_are_normalised_and_similar_texts_are_close() -> None:
    enc = make_encoder("tfidf").fit(TEXTS * 5)
    sparse: Any = enc.transform(TEXTS)
    x = np.asarray(sparse.toarray())
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    sim = _cosine(x)
    assert sim[0, 1] > sim[0, 2]


def test_tfidf_needs_fit() -> None:
    with pytest.raises(NotFittedError):
        make_encoder("tfidf").transform(["x"])


def test_unknown_encoder() -> None:
    with pytest.raises(ConfigError, match="known encoders"):
        make_encoder("nosuch")


def test_an_encoder_object_plugs_in() -> None:
    class Length:
        name = "length"

        def fit(self, texts: list[str]) -> Length:
            return self

        def transform(self, texts: list[str]) -> np.ndarray:
            v = np.array([[len(t), 1.0] for t in texts])
            return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))

    enc = Length()
    assert isinstance(enc, Encoder)
    router = make_router("knn", encoder=enc, k=5).fit(toy_dataset(60))
    assert router.predict(["anything"]).shape == (1, 3)


@pytest.mark.needs_minilm
def test_minilm_embeds_offline_with_real_weights() -> None:
    enc = make_encoder("minilm").fit([])
    x = enc.transform(TEXTS)
    assert x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = _cosine(x)
    # Paraphrases are far closer than unrelated text: a real sentence encoder, not noise.
    assert sim[0, 1] > 0.7 and sim[0, 2] < 0.3


@pytest.mark.needs_minilm
def test_minilm_knn_router_learns_the_toy_signal() -> None:
    data = toy_dataset(120)
    router = make_router("knn", encoder="minilm", k=10).fit(data.subset("train"))
    test = data.subset("test")
    pred = router.predict(test.prompts)
    hard = np.array([t == "hard" for t in test.task or ()])
    # The small model fails on hard prompts; the router should expect that.
    assert pred[hard, 0].mean() < pred[~hard, 0].mean() - 0.3


def test_importing_routecast_does_not_import_heavy_modules() -> None:
    code = ("import sys, routecast, routecast.routers, routecast.encoders; "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'sklearn', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_tfidf_fits_on_the_same_texts_are_shared_and_equal() -> None:
    from routecast.encoders.tfidf import TfidfEncoder

    texts = [f"prompt {i} about {w}" for i, w in enumerate(["cats", "dogs", "maths"] * 20)]
    a, b = TfidfEncoder().fit(texts), TfidfEncoder().fit(list(texts))
    assert a.vocabulary_ is b.vocabulary_ and a.idf_ is b.idf_  # fitted once
    assert not a.idf_.flags.writeable  # shared, so never changed in place
    other = TfidfEncoder(min_df=1).fit(texts)  # other parameters: another fit
    assert other.vocabulary_ is not a.vocabulary_
    assert TfidfEncoder().fit(texts[:-1]).vocabulary_ is not a.vocabulary_  # other texts
    # A memoised fit is what a fresh fit would give.
    from sklearn.feature_extraction.text import TfidfVectorizer

    sk = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", ngram_range=(1, 2),
                         min_df=2).fit(texts)
    assert a.vocabulary_ == {str(t): int(j) for t, j in sk.vocabulary_.items()}
    np.testing.assert_array_equal(a.idf_, sk.idf_)
