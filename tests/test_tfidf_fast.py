"""The plain Python/numpy TF-IDF transform equals scikit-learn's, on real prompts and edge cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from routecast.data import load_dataset
from routecast.encoders.tfidf import TfidfEncoder, analyze, strip_accents
from routecast.errors import DataFormatError, NotFittedError
from routecast.policy import Policy
from routecast.routers import make_router
from routecast.routers.persist import ARRAYS_FILE, load_router, save_router
from tests.toy import toy_dataset


def _sklearn(texts: list[str], **kw: Any) -> Any:
    """The vectorizer the encoder's fit uses, with the same settings."""
    return TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", dtype=np.float64,
                           **kw).fit(texts)


def test_equals_sklearn_on_every_routerbench_prompt(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "routerbench-subset")
    train = list(ds.subset("train").prompts)
    enc = TfidfEncoder().fit(train)
    ref = _sklearn(train, max_features=50_000, ngram_range=(1, 2), min_df=2)
    prompts = list(ds.prompts)  # train, validation and test: unseen terms too
    ours: Any = enc.transform(prompts)
    theirs = ref.transform(prompts)
    assert ours.shape == theirs.shape == (ds.n_prompts, len(ref.vocabulary_))
    assert abs(ours - theirs).max() < 1e-12
    assert ours.has_sorted_indices
    # One prompt at a time (the routing path) gives the same rows as the batch.
    for i in range(0, len(prompts), 20):
        row: Any = enc.transform([prompts[i]])
        assert np.abs(row.toarray() - theirs[i].toarray()).max() < 1e-12


EDGE = [
    "Café, naïve façade: CRÈME brûlée!",  # accents, upper case
    "Ｆｕｌｌｗｉｄｔｈ ＬＥＴＴＥＲＳ and ligatures ﬁne ﬂow",  # NFKD compatibility forms
    "snake_case words_with_underscores 42 3.14 x y z",  # \w includes _ and digits; 1-char drops
    "Ελληνικά κείμενα και русский текст 中文字符",  # non-Latin scripts
    "repeat repeat repeat repeat once",  # sublinear tf
    "",  # empty
    "a b c",  # no token of two characters: an all-zero row
    "tabs\tand\nnewlines  double  spaces",
    "emoji 🙂🙂 mixed with text text",
]


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (2, 2), (1, 3), (2, 3)])
def test_analyzer_matches_sklearn(ngram_range: tuple[int, int]) -> None:
    reference = TfidfVectorizer(ngram_range=ngram_range, strip_accents="unicode").build_analyzer()
    for text in EDGE:
        assert analyze(text, ngram_range) == reference(text)


def test_strip_accents_matches_sklearn() -> None:
    from sklearn.feature_extraction.text import strip_accents_unicode

    for text in EDGE:
        assert strip_accents(text) == strip_accents_unicode(text)


def test_edge_cases_equal_sklearn() -> None:
    corpus = EDGE * 3
    enc = TfidfEncoder(min_df=1).fit(corpus)
    ref = _sklearn(corpus, ngram_range=(1, 2), min_df=1, max_features=50_000)
    queries = [*EDGE, "totally unseen vocabulary", "CAFÉ cafe Cafe"]
    ours: Any = enc.transform(queries)
    theirs = ref.transform(queries)
    assert abs(ours - theirs).max() < 1e-12
    norms = np.linalg.norm(ours.toarray(), axis=1)
    # Rows with any known term are unit length; the others are all zero, not NaN.
    np.testing.assert_allclose(norms[norms > 0], 1.0)
    assert norms[EDGE.index("a b c")] == 0.0
    assert enc.transform([]).shape == (0, len(ref.vocabulary_))


def test_transform_needs_fit() -> None:
    with pytest.raises(NotFittedError):
        TfidfEncoder().transform(["x"])


def test_state_round_trip_without_sklearn(tmp_path: Path) -> None:
    data = toy_dataset(160)
    router = make_router("linear").fit(data.subset("train"))
    save_router(router, tmp_path, policy=Policy(1.0))
    prompts = list(data.subset("test").prompts)
    code = ("import sys, json; from routecast.routers.persist import load_router; "
            f"r, p = load_router({str(tmp_path)!r}); "
            f"q = r.predict({prompts!r}); r.route(['hello'], p); "
            "print(json.dumps([q.tolist(), 'sklearn' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    predicted, sklearn_loaded = json.loads(out)
    assert sklearn_loaded is False  # the fast transform needs only the vocabulary and idf
    np.testing.assert_allclose(predicted, router.predict(prompts), rtol=0, atol=1e-12)


def test_inconsistent_saved_state_is_a_clear_error(tmp_path: Path) -> None:
    save_router(make_router("linear").fit(toy_dataset(80)), tmp_path)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["encoder_::idf"] = arrays["encoder_::idf"][:-1]  # one idf value lost
    np.savez(tmp_path / ARRAYS_FILE, **arrays)
    with pytest.raises(DataFormatError, match="idf"):
        load_router(tmp_path)


def test_the_last_row_is_remembered_and_forgotten_with_the_vocabulary() -> None:
    """A prompt transformed twice in a row (a learning router's quality and cost models) is
    transformed once; the remembered row is the same as a fresh one, and a refit encoder (a
    new vocabulary) or another text does not get it."""
    texts = ["the cat sat on the mat", "a dog barked at the cat", "stocks fell sharply"]
    enc = TfidfEncoder().fit(texts)
    first = enc.transform_row(texts[0])
    again = enc.transform_row(texts[0])
    assert again[0] is first[0] and again[1] is first[1]  # remembered, not recomputed
    other = enc.transform_row(texts[1])
    assert other[0] is not first[0]
    fresh = TfidfEncoder().fit(texts).transform_row(texts[0])
    np.testing.assert_array_equal(fresh[0], first[0])
    np.testing.assert_allclose(fresh[1], first[1])
    enc.transform_row(texts[0])
    enc.fit(["completely different words here", "and more of them"])
    refit = enc.transform_row(texts[0])
    assert refit[0] is not first[0] and len(refit[0]) < len(first[0])
