"""TF-IDF features (scikit-learn): the default encoder, offline and light."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from routecast.encoders import register_encoder
from routecast.encoders.base import Features
from routecast.errors import NotFittedError


@register_encoder("tfidf")
class TfidfEncoder:
    """Word 1-2-gram TF-IDF with sublinear term frequency, rows L2-normalised (sparse)."""

    name = "tfidf"

    def __init__(self, max_features: int = 50_000,
                 ngram_range: tuple[int, int] | list[int] = (1, 2), min_df: int = 2) -> None:
        self.max_features = max_features
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.min_df = min_df

    def fit(self, texts: Sequence[str]) -> Self:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # min_df cannot exceed the corpus; tiny fits (tests, few-label models) still work.
        min_df = self.min_df if len(texts) >= 10 * self.min_df else 1
        self.vectorizer_: Any = TfidfVectorizer(
            max_features=self.max_features, ngram_range=self.ngram_range, min_df=min_df,
            sublinear_tf=True, strip_accents="unicode", dtype=np.float64,
        ).fit(list(texts))
        return self

    def transform(self, texts: Sequence[str]) -> Features:
        if not hasattr(self, "vectorizer_"):
            raise NotFittedError("TfidfEncoder.transform called before fit")
        return self.vectorizer_.transform(list(texts))

    def get_params(self) -> dict[str, Any]:
        return {"max_features": self.max_features, "ngram_range": list(self.ngram_range),
                "min_df": self.min_df}

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        if not hasattr(self, "vectorizer_"):
            raise NotFittedError("cannot save an unfitted TfidfEncoder")
        vocab = self.vectorizer_.vocabulary_
        terms = sorted(vocab, key=vocab.__getitem__)  # column order
        return {"terms": terms}, {"idf": np.asarray(self.vectorizer_.idf_, dtype=np.float64)}

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            ngram_range=tuple(self.ngram_range), sublinear_tf=True, strip_accents="unicode",
            dtype=np.float64, vocabulary={t: i for i, t in enumerate(values["terms"])},
        )
        vectorizer.fit([""] if not values["terms"] else [" ".join(values["terms"][:1])])
        vectorizer.idf_ = arrays["idf"]
        self.vectorizer_ = vectorizer
