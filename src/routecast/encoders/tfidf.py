"""TF-IDF features: fitted with scikit-learn, applied in plain Python and numpy.

``fit`` uses scikit-learn's ``TfidfVectorizer`` (vocabulary choice with ``min_df`` and
``max_features``, then ``idf``). ``transform`` does not: it re-implements that vectorizer's
analyzer and weighting for a fixed vocabulary, exactly (``tests/test_tfidf_fast.py`` checks it
against scikit-learn on every RouterBench prompt, max abs difference < 1e-12):

1. lower-case, then ``strip_accents="unicode"`` (NFKD, drop combining marks; ASCII passes as is);
2. tokens ``(?u)\\b\\w\\w+\\b``; word n-grams over ``ngram_range`` (tokens joined by one space);
3. count the n-grams that are in the vocabulary; sublinear tf ``1 + log(count)``;
4. times ``idf``; each row divided by its L2 norm (all-zero rows stay zero).

Why not call scikit-learn: its ``transform`` pays ~0.5-1 ms of validation and pipeline
overhead per call whatever the batch size, which dominated routing one prompt. Measured on the
RouterBench prompts (~1,500 characters) on the shared 2-core machine: one prompt 0.25 ms here
against 0.7-1.0 ms, all 3,150 prompts at once 1,800 against 1,460 prompts/s; the linear router's
single-prompt p50 in ``benchmarks/routing_latency.py`` fell from 0.79-1.00 ms to 0.34-0.35 ms.
So this path serves every batch size, and a loaded router never imports scikit-learn.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from routecast.encoders import register_encoder
from routecast.encoders.base import Features
from routecast.errors import NotFittedError

#: scikit-learn's default ``token_pattern``.
TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")


def strip_accents(text: str) -> str:
    """scikit-learn's ``strip_accents_unicode``: NFKD, then drop combining characters."""
    if text.isascii():  # same test as encoding to ASCII, without the exception
        return text
    return "".join([c for c in unicodedata.normalize("NFKD", text)
                    if not unicodedata.combining(c)])


def analyze(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """The terms scikit-learn's word analyzer yields for ``text``, in the same order."""
    tokens = TOKEN_PATTERN.findall(strip_accents(text.lower()))
    lo, hi = ngram_range
    terms: list[str] = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), hi + 1):
        terms.extend(map(" ".join, zip(*(tokens[k:] for k in range(n)), strict=False)))
    return terms


@register_encoder("tfidf")
class TfidfEncoder:
    """Word 1-2-gram TF-IDF with sublinear term frequency, rows L2-normalised (sparse CSR)."""

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
        vectorizer = TfidfVectorizer(
            max_features=self.max_features, ngram_range=self.ngram_range, min_df=min_df,
            sublinear_tf=True, strip_accents="unicode", dtype=np.float64,
        ).fit(list(texts))
        # Only the vocabulary and idf are kept: they are all transform needs.
        self.vocabulary_: dict[str, int] = {str(t): int(j)
                                            for t, j in vectorizer.vocabulary_.items()}
        self.idf_: npt.NDArray[np.float64] = np.asarray(vectorizer.idf_, dtype=np.float64)
        return self

    def transform(self, texts: Sequence[str]) -> Features:
        """A ``(len(texts), n_terms)`` scipy CSR matrix, equal to scikit-learn's output."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("TfidfEncoder.transform called before fit")
        from scipy import sparse

        indptr, indices, counts = self._count(texts)
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        # Sort each row's columns (scikit-learn returns sorted indices): rows, then columns.
        order = np.lexsort((indices, rows))
        indices, counts = indices[order], counts[order]
        data = (np.log(counts) + 1.0) * self.idf_[indices]
        norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=len(indptr) - 1))
        norms[norms == 0.0] = 1.0
        data /= norms[rows]
        return sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1,
                                                                 len(self.idf_)))

    def _count(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int32],
                                                    npt.NDArray[np.int32],
                                                    npt.NDArray[np.float64]]:
        """CSR parts of the raw term counts (columns unsorted within a row)."""
        vocab = self.vocabulary_
        terms = vocab.keys()
        cols: list[int] = []
        counts: list[int] = []
        indptr = [0]
        for text in texts:
            # Count, keep the terms in the vocabulary (a set intersection), look each up once:
            # every step runs in C, not in a Python-level loop over the terms.
            counter = Counter(analyze(text, self.ngram_range))
            known = counter.keys() & terms
            cols.extend(map(vocab.__getitem__, known))
            counts.extend(map(counter.__getitem__, known))
            indptr.append(len(cols))
        return (np.asarray(indptr, dtype=np.int32), np.asarray(cols, dtype=np.int32),
                np.asarray(counts, dtype=np.float64))

    def get_params(self) -> dict[str, Any]:
        return {"max_features": self.max_features, "ngram_range": list(self.ngram_range),
                "min_df": self.min_df}

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("cannot save an unfitted TfidfEncoder")
        vocab = self.vocabulary_
        terms = sorted(vocab, key=vocab.__getitem__)  # column order
        return {"terms": terms}, {"idf": np.asarray(self.idf_, dtype=np.float64)}

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        terms = values["terms"]
        idf = np.asarray(arrays["idf"], dtype=np.float64)
        if idf.shape != (len(terms),):
            raise ValueError(f"{len(terms)} TF-IDF terms but {idf.shape} idf values")
        self.vocabulary_ = {str(t): j for j, t in enumerate(terms)}
        self.idf_ = idf
