"""A learned scorer of answers in the manner of FrugalGPT: ``P(correct | prompt, answer)``.

FrugalGPT (Chen, Zaharia & Zou, 2023) trains a small model on (query, answer, correct?)
triples and stops a cascade when its score clears a threshold. Here the model is one
L2-regularised logistic regression per LLM over

* word 1-2-gram TF-IDF of the prompt (what kind of question it is),
* word 1-2-gram TF-IDF of the answer, single-character tokens kept (so "A" or "42" count),
* the answer's log length and an empty-answer flag,
* with ``text_features``, the task-agnostic answer features of
  :mod:`routecast.signals.answers`: hedging, refusal, what format the prompt expects and
  whether the answer conforms to it (these carry over to tasks the scorer never saw, where
  the TF-IDF terms do not),
* ``logit(confidence)`` when the training data records a confidence and ``use_confidence``:
  the scorer then learns how far to trust that model's confidence on this kind of prompt.

It is fitted on the recorded responses of the training split only; its scores on those same
prompts are optimistic, so thresholds are tuned on validation. Live, the server calls
:meth:`LearnedScorer.score_responses` with the answers it received.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError, DataError
from routecast.signals.answers import FEATURE_NAMES, answer_features
from routecast.signals.base import FloatArray, Signal, fold_indices, logit

#: The answer-form features added with ``text_features`` (length and emptiness are always in).
_FORM = ("hedging", "refusal", "expects_choice", "expects_number", "format_ok")


class LearnedScorer(Signal):
    """Per-model logistic regression on prompt and answer features (see module docstring).

    ``C`` is the inverse regularisation strength; ``max_features`` caps each vocabulary.
    """

    name = "learned"
    requires = ("responses",)
    judge = "routecast.backends.judges:LearnedJudge.from_options"

    def __init__(self, C: float = 1.0, use_confidence: bool = True,  # noqa: N803
                 max_features: int = 20_000, text_features: bool = True) -> None:
        self.C = C
        self.use_confidence = use_confidence
        self.max_features = max_features
        self.text_features = text_features

    def _fit(self, dataset: Dataset) -> None:
        self._fit_vocabulary(dataset)
        design = self._design(dataset)
        self.estimators_: list[Any] = [self._fit_one(design[j], dataset.quality[:, j])
                                       for j in range(dataset.n_models)]

    def _fit_vocabulary(self, dataset: Dataset) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        assert dataset.responses is not None
        min_df = 2 if dataset.n_prompts >= 20 else 1  # tiny fits (tests) keep every word
        common = {"ngram_range": (1, 2), "min_df": min_df, "sublinear_tf": True,
                  "strip_accents": "unicode", "max_features": self.max_features,
                  "dtype": np.float64}
        self.prompt_vectorizer_: Any = TfidfVectorizer(**common).fit(dataset.prompts)
        answers = [_text(r) for r in dataset.responses.ravel()]
        self.answer_vectorizer_: Any = TfidfVectorizer(
            token_pattern=r"(?u)\b\w+\b", **common).fit(answers)
        self.uses_confidence_: bool = self.use_confidence and dataset.confidence is not None

    def _design(self, dataset: Dataset) -> list[Any]:
        """One feature matrix per model; the prompt features are computed once."""
        assert dataset.responses is not None
        prompt_x = self.prompt_vectorizer_.transform(dataset.prompts)
        return [self._features(prompt_x, dataset.responses[:, j],
                               None if dataset.confidence is None else dataset.confidence[:, j],
                               dataset.prompts)
                for j in range(dataset.n_models)]

    def _fit_one(self, x: Any, q: FloatArray) -> Any:
        """A fitted classifier of one model's answers, or its constant quality."""
        from sklearn.linear_model import LogisticRegression

        if np.all(q == q[0]):
            return float(q[0])  # always right (or wrong): nothing to learn
        # liblinear's dual solver: ~10x faster than lbfgs or the primal one here, where
        # there are far more features than prompts (measured on RouterBench: 1 s vs 11 s).
        clf = LogisticRegression(C=self.C, solver="liblinear", dual=True, max_iter=1000,
                                 random_state=0)  # liblinear shuffles: seed it
        if np.all((q == 0) | (q == 1)):
            return clf.fit(x, q)
        n = len(q)  # soft labels: once as a success with weight q, once as a failure
        return clf.fit(_stack2(x), np.r_[np.ones(n), np.zeros(n)], sample_weight=np.r_[q, 1 - q])

    def cross_fit(self, dataset: Dataset, folds: int = 3, seed: int = 0) -> FloatArray:
        """Out-of-fold scores, faster than the generic refit: the vocabularies are built once
        (this scorer's own if it is fitted, else from all of ``dataset``'s text) and only the
        classifiers are refitted per fold. Vocabularies hold no labels, so a held-out score
        still never saw its own outcome."""
        self._check_available(dataset)
        twin = self
        if not hasattr(self, "answer_vectorizer_"):
            twin = type(self)(**self.get_params())
            twin._fit_vocabulary(dataset)
        design = twin._design(dataset)
        out = np.empty((dataset.n_prompts, dataset.n_models))
        for part, rest in fold_indices(dataset.n_prompts, folds, seed):
            for j in range(dataset.n_models):
                est = twin._fit_one(design[j][rest], dataset.quality[rest, j])
                out[part, j] = (est if isinstance(est, float)
                                else est.predict_proba(design[j][part])[:, 1])
        return out

    def _features(self, prompt_x: Any, responses: Sequence[str | None] | Any,
                  confidence: FloatArray | None, prompts: Sequence[str]) -> Any:
        from scipy import sparse

        texts = [_text(r) for r in responses]
        length = np.log1p([len(t) for t in texts]) / 8.0  # ~unit scale for typical answers
        empty = np.array([0.0 if t.strip() else 1.0 for t in texts])
        dense = [length, empty]
        if self.text_features:
            # Length and emptiness are already in; the other form features join them.
            form = answer_features(prompts, texts)
            dense += [form[:, k] for k, n in enumerate(FEATURE_NAMES) if n in _FORM]
        if self.uses_confidence_:
            if confidence is None:
                raise DataError("has no confidence, but this learned scorer was fitted with "
                                "one", where="scored data",
                                fix="pass the answers' confidence, or fit with "
                                    "use_confidence=False")
            dense.append(logit(confidence) / 4.0)
        return sparse.hstack([prompt_x, self.answer_vectorizer_.transform(texts),
                              sparse.csr_matrix(np.column_stack(dense))]).tocsr()

    def score_responses(self, prompts: Sequence[str], model: str,
                        responses: Sequence[str | None],
                        confidence: Sequence[float] | FloatArray | None = None) -> FloatArray:
        """``P(correct)`` of ``model``'s ``responses`` to ``prompts`` (one each), shape (n,).

        The live path: the server calls this with the answers it got back. ``confidence`` is
        needed only when the scorer was fitted on data that recorded one.
        """
        self._check_fitted()
        if isinstance(prompts, str) or isinstance(responses, str):
            raise ConfigError("score_responses takes lists of prompts and responses, not a str")
        if len(prompts) != len(responses):
            raise ConfigError(f"{len(prompts)} prompts but {len(responses)} responses; give "
                              "one response per prompt")
        try:
            j = self.models_.index(model)
        except ValueError:
            raise ConfigError(f"unknown model {model!r}; the scorer knows: "
                              f"{', '.join(self.models_)}") from None
        if len(prompts) == 0:
            return np.empty(0)
        est = self.estimators_[j]
        if isinstance(est, float):
            return np.full(len(prompts), est)
        conf = None if confidence is None else np.asarray(confidence, dtype=np.float64)
        x = self._features(self.prompt_vectorizer_.transform(list(prompts)), responses, conf,
                           list(prompts))
        return np.asarray(est.predict_proba(x)[:, 1], dtype=np.float64)

    # -- persistence (see routecast.signals.persist): JSON + numpy arrays, no pickle ----------

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The fitted state as JSON-able values and numpy arrays: each vocabulary (its terms
        in column order, its analyser settings, its idf weights) and each model's classifier
        (coefficients, intercept, classes) or constant score."""
        self._check_fitted()
        values: dict[str, Any] = {"models": list(self.models_),
                                  "uses_confidence": self.uses_confidence_}
        arrays: dict[str, npt.NDArray[Any]] = {}
        for key in ("prompt", "answer"):
            vec = getattr(self, f"{key}_vectorizer_")
            vocab = vec.vocabulary_
            values[f"{key}_vectorizer"] = {
                "terms": sorted(vocab, key=vocab.__getitem__),  # column order
                "params": {k: list(v) if k == "ngram_range" else v
                           for k, v in vec.get_params().items() if k in _ANALYSER}}
            arrays[f"{key}_idf"] = np.asarray(vec.idf_, dtype=np.float64)
        estimators: list[float | None] = []
        for j, est in enumerate(self.estimators_):
            if isinstance(est, float):
                estimators.append(est)
                continue
            estimators.append(None)  # a classifier: its arrays are stored under its index
            arrays.update({f"coef_{j}": est.coef_, f"intercept_{j}": est.intercept_,
                           f"classes_{j}": est.classes_})
        values["estimators"] = estimators
        return values, arrays

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Restore what :meth:`get_state` returned, on an instance with the same parameters;
        raises ``KeyError`` / ``ValueError`` on an inconsistent state."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        for key in ("prompt", "answer"):
            spec = values[f"{key}_vectorizer"]
            params = {k: tuple(v) if k == "ngram_range" else v
                      for k, v in dict(spec["params"]).items() if k in _ANALYSER}
            terms = [str(t) for t in spec["terms"]]
            # A fixed vocabulary: transform() maps the same terms to the same columns.
            vec = TfidfVectorizer(**params, vocabulary={t: i for i, t in enumerate(terms)},
                                  dtype=np.float64)
            vec.idf_ = np.asarray(arrays[f"{key}_idf"], dtype=np.float64)  # checks the length
            setattr(self, f"{key}_vectorizer_", vec)
        n_features = (len(self.prompt_vectorizer_.vocabulary_)
                      + len(self.answer_vectorizer_.vocabulary_)
                      + 2 + int(bool(values["uses_confidence"]))
                      + (len(_FORM) if self.text_features else 0))
        estimators: list[Any] = []
        for j, constant in enumerate(values["estimators"]):
            if constant is not None:
                estimators.append(float(constant))
                continue
            coef = np.asarray(arrays[f"coef_{j}"], dtype=np.float64)
            if coef.shape != (1, n_features):
                raise ValueError(f"classifier {j} has coefficients of shape {coef.shape}, "
                                 f"expected (1, {n_features})")
            clf = LogisticRegression(C=self.C, solver="liblinear", dual=True, max_iter=1000,
                                     random_state=0)
            clf.coef_ = coef
            clf.intercept_ = np.asarray(arrays[f"intercept_{j}"], dtype=np.float64)
            clf.classes_ = np.asarray(arrays[f"classes_{j}"])
            clf.n_features_in_ = n_features
            estimators.append(clf)
        self.models_ = tuple(str(m) for m in values["models"])
        if len(estimators) != len(self.models_):
            raise ValueError(f"{len(estimators)} classifiers for {len(self.models_)} models")
        self.uses_confidence_ = bool(values["uses_confidence"])
        self.estimators_ = estimators

    def _score(self, dataset: Dataset) -> FloatArray:
        cols = []
        for est, x in zip(self.estimators_, self._design(dataset), strict=True):
            cols.append(np.full(dataset.n_prompts, est) if isinstance(est, float)
                        else est.predict_proba(x)[:, 1])
        return np.column_stack(cols)


#: The vectorizer settings that decide how text becomes features (all JSON-able); the ones
#: that decide which terms are kept (min_df, max_features) do not matter once it is fitted.
_ANALYSER = ("analyzer", "binary", "lowercase", "ngram_range", "norm", "smooth_idf",
             "strip_accents", "sublinear_tf", "token_pattern", "use_idf", "stop_words")


def _text(response: object) -> str:
    return response if isinstance(response, str) else ""


def _stack2(x: Any) -> Any:
    from scipy import sparse

    return sparse.vstack([x, x]).tocsr()
