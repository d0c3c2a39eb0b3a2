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

Each text is one :meth:`TfidfEncoder.transform_row` (sorted columns and values, no scipy), and
``transform`` stacks the rows, so one prompt and a batch give bit-identical rows. A row finds
its n-grams with numpy over word ids (:class:`_NgramIndex`) rather than by joining tokens into
strings and looking each up: ~0.1 ms for a 2,000-character prompt, against ~0.23 ms for
counting strings and building a one-row sparse matrix.

A fit is a pure function of the parameters and the texts, so the last few fits are kept
(:data:`FIT_MEMO` of them) and reused: a benchmark fits several routers and a cascade's router
on the same train split, and each used to fit the same vocabulary again (4 s each on the
RouterBench subset). The fitted vocabulary and idf are shared, never changed in place.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from routecast.encoders.base import Features
from routecast.errors import NotFittedError

#: scikit-learn's default ``token_pattern``.
TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")
# The same tokens, ~1/3 faster: a greedy run of two or more word characters always starts
# and ends at a word boundary (the scan never starts inside a run of two or more, and the run
# stops only before a non-word character), so the two \b tests never fail.
_TOKENS = re.compile(r"\w\w+")
# For ASCII text (99 % of RouterBench's prompts), faster still (~19 us against ~35 us for 2,000
# characters): every non-word character becomes a space, then split() and drop one-letter
# words. Among ASCII characters \w is exactly [A-Za-z0-9_].
_ASCII_WORDS = str.maketrans({chr(i): " " for i in range(128)
                              if not (chr(i).isalnum() or chr(i) == "_")})


def strip_accents(text: str) -> str:
    """scikit-learn's ``strip_accents_unicode``: NFKD, then drop combining characters."""
    if text.isascii():  # same test as encoding to ASCII, without the exception
        return text
    return "".join([c for c in unicodedata.normalize("NFKD", text)
                    if not unicodedata.combining(c)])


def tokens(text: str) -> list[str]:
    """The tokens scikit-learn's word analyzer finds in ``text`` (before n-grams)."""
    text = text.lower()
    if text.isascii():  # nothing to strip
        return [t for t in text.translate(_ASCII_WORDS).split() if len(t) > 1]
    return _TOKENS.findall(strip_accents(text))


def analyze(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """The terms scikit-learn's word analyzer yields for ``text``, in the same order."""
    found = tokens(text)
    lo, hi = ngram_range
    terms: list[str] = list(found) if lo == 1 else []
    for n in range(max(lo, 2), hi + 1):
        terms.extend(map(" ".join, zip(*(found[k:] for k in range(n)), strict=False)))
    return terms


class TfidfEncoder:
    """Word 1-2-gram TF-IDF with sublinear term frequency, rows L2-normalised (sparse CSR)."""

    name = "tfidf"

    def __init__(self, max_features: int = 50_000,
                 ngram_range: tuple[int, int] | list[int] = (1, 2), min_df: int = 2) -> None:
        self.max_features = max_features
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.min_df = min_df

    def fit(self, texts: Sequence[str]) -> Self:
        key = _fit_key(self.max_features, self.ngram_range, self.min_df, texts)
        fitted = _FITS.get(key)
        if fitted is None:
            fitted = _FITS[key] = self._fit(texts)
            while len(_FITS) > FIT_MEMO:
                _FITS.popitem(last=False)
        else:
            _FITS.move_to_end(key)
        self.vocabulary_, self.idf_ = fitted
        return self

    def _fit(self, texts: Sequence[str]) -> tuple[dict[str, int], npt.NDArray[np.float64]]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # min_df cannot exceed the corpus; tiny fits (tests, few-label models) still work.
        min_df = self.min_df if len(texts) >= 10 * self.min_df else 1
        vectorizer = TfidfVectorizer(
            max_features=self.max_features, ngram_range=self.ngram_range, min_df=min_df,
            sublinear_tf=True, strip_accents="unicode", dtype=np.float64,
        ).fit(list(texts))
        # Only the vocabulary and idf are kept: they are all transform needs.
        vocabulary = {str(t): int(j) for t, j in vectorizer.vocabulary_.items()}
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        idf.flags.writeable = False  # shared between encoders fitted on the same texts
        return vocabulary, idf

    def transform(self, texts: Sequence[str]) -> Features:
        """A ``(len(texts), n_terms)`` scipy CSR matrix, equal to scikit-learn's output."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("TfidfEncoder.transform called before fit")
        from scipy import sparse

        rows = [self.transform_row(text) for text in texts]
        indptr = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum([len(cols) for cols, _ in rows], out=indptr[1:])
        indices = (np.concatenate([cols for cols, _ in rows]).astype(np.int32) if rows
                   else np.zeros(0, dtype=np.int32))
        data = np.concatenate([values for _, values in rows]) if rows else np.zeros(0)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), len(self.idf_)))

    def transform_row(self, text: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The row of ``text`` in :meth:`transform`: its columns (sorted) and their values
        (shared with the caller of the same text just before: read them, do not write).

        The last text's row is remembered: a learning endpoint's router reads each prompt
        twice, its quality model and its per-prompt cost model over the same encoder
        (:mod:`routecast.learning.cost`), and the second transform was 0.29 ms of the
        request's CPU (of 0.34 ms for the whole prediction) on the RouterBench subset."""
        index = self.__dict__.get("_index")
        if index is None or index.vocabulary is not self.vocabulary_:
            # Derived from vocabulary_ (so not saved), and rebuilt whenever it is replaced.
            index = self.__dict__["_index"] = _NgramIndex(self.vocabulary_, self.ngram_range[1])
        last = self.__dict__.get("_last")
        if last is not None and last[0] is index and last[1] == text:
            return last[2]  # type: ignore[no-any-return]
        cols, counts = np.unique(index.columns(tokens(text), *self.ngram_range),
                                 return_counts=True)
        values = (np.log(counts) + 1.0) * self.idf_[cols]
        if values.size:
            # A running sum, like scikit-learn's normalisation (and unlike a pairwise dot):
            # the same squares added in the same order give the same norm, bit for bit.
            norm = np.sqrt(np.cumsum(values * values)[-1])
            if norm > 0.0:
                values /= norm
        # One assignment (threads may read it): the index, the text and its row.
        self.__dict__["_last"] = (index, text, (cols, values))
        return cols, values

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


IntArray = npt.NDArray[np.int64]

#: How many distinct fits are kept for reuse (each holds one vocabulary and its idf).
FIT_MEMO = 4
_FITS: OrderedDict[bytes, tuple[dict[str, int], npt.NDArray[np.float64]]] = OrderedDict()


def _fit_key(max_features: int, ngram_range: tuple[int, int], min_df: int,
             texts: Sequence[str]) -> bytes:
    digest = hashlib.blake2b(repr((max_features, ngram_range, min_df, len(texts))).encode(),
                             digest_size=32)
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.digest()


class _NgramIndex:
    """A vocabulary as numbers, so that a text's n-grams are found with numpy.

    Every word of every term gets an id (``words``); ``unigram_cols[w]`` is the column of word
    ``w`` as a term of its own (-1: none). Level ``n`` >= 2 holds, sorted, one key per distinct
    n-word prefix of a term: ``p * n_words + w``, where ``p`` is the prefix's first n-1 words'
    position at level n-1 (their word id at level 1) and ``w`` its n-th word; ``cols[n][i]`` is
    the column of level n's i-th prefix when it is a term itself, else -1. Keys stay below
    (number of terms) x ``n_words``, so no n overflows them.

    A text then costs one dict lookup per token, and per n a few array operations, instead of
    one lookup of a freshly built string per n-gram: ~20 % less for routing one prompt, and
    fewer places in memory touched (the index is a few small arrays and one dict of words).
    """

    def __init__(self, vocabulary: dict[str, int], max_n: int) -> None:
        self.vocabulary = vocabulary
        terms = [(term.split(" "), j) for term, j in vocabulary.items()]
        self.words: dict[str, int] = {}
        for parts, _ in terms:
            for word in parts:
                self.words.setdefault(word, len(self.words))
        self.n_words = n_words = len(self.words)
        self.unigram_cols = np.full(n_words, -1, dtype=np.intp)
        for parts, j in terms:
            if len(parts) == 1:
                self.unigram_cols[self.words[parts[0]]] = j
        self.keys: dict[int, IntArray] = {}
        self.cols: dict[int, npt.NDArray[np.intp]] = {}
        position = [self.words[parts[0]] for parts, _ in terms]  # of each term's prefix
        for n in range(2, max_n + 1):
            live = [i for i, (parts, _) in enumerate(terms) if len(parts) >= n]
            keys = np.array([position[i] * n_words + self.words[terms[i][0][n - 1]]
                             for i in live], dtype=np.int64)
            table = np.unique(keys)
            where = np.searchsorted(table, keys)
            cols = np.full(len(table), -1, dtype=np.intp)
            for i, k in zip(live, where.tolist(), strict=True):
                position[i] = k
                if len(terms[i][0]) == n:
                    cols[k] = terms[i][1]
            self.keys[n], self.cols[n] = table, cols

    def columns(self, found: list[str], lo: int, hi: int) -> npt.NDArray[np.intp]:
        """The column of every n-gram of ``found`` (tokens) that is a term, ``lo <= n <= hi``,
        in no particular order, repeats included."""
        ids = np.fromiter(map(self.words.get, found, repeat(-1)), dtype=np.int64,
                          count=len(found))
        parts: list[npt.NDArray[np.intp]] = []
        if lo == 1:
            unigrams = self.unigram_cols[ids[ids >= 0]]
            parts.append(unigrams[unigrams >= 0])
        prefix = ids  # per start: the position of the n-gram so far at its level, or -1
        for n in range(2, hi + 1):
            table = self.keys[n]
            if not table.size:
                break
            before, word = prefix[:-1], ids[n - 1:]
            keys = np.where((before >= 0) & (word >= 0), before * self.n_words + word, -1)
            pos = np.searchsorted(table, keys)
            pos[pos == table.size] = 0
            known = (keys >= 0) & (table[pos] == keys)
            prefix = np.where(known, pos, -1)
            if n >= lo:
                cols = self.cols[n][prefix[known]]
                parts.append(cols[cols >= 0])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
