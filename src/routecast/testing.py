"""The router and signal contracts as functions a plugin's tests can call (as scikit-learn
ships ``check_estimator``)::

    from routecast.testing import check_router

    def test_my_router_keeps_the_contract() -> None:
        check_router(MyRouter())

:func:`check_router` and :func:`check_signal` raise :class:`AssertionError` at the first
broken rule, naming it; routecast's own contract tests run them over every registered router
and signal. The data they use by default is synthetic and learnable (:func:`toy_dataset`,
:func:`toy_with_answers`): prompts whose words say whether a small model suffices.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from routecast.errors import ConfigError, NotFittedError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router
    from routecast.signals.base import Signal

__all__ = ["check_router", "check_signal", "toy_dataset", "toy_with_answers"]

#: The words of the toy prompts: easy ones every model gets right, hard ones only large.
WORDS = {
    "easy": ["hello", "weather", "greeting", "thanks", "colour", "song"],
    "hard": ["integral", "theorem", "proof", "derivative", "matrix", "eigenvalue"],
}


def toy_dataset(n: int = 300, seed: int = 0) -> Dataset:
    """Three models: ``small`` (cheap) is right on easy prompts only, ``large`` (dear) on
    nearly all, ``medium`` in between. Hard prompts say so with their words."""
    from routecast.data.dataset import Dataset
    from routecast.data.splits import random_split

    rng = np.random.default_rng(seed)
    prompts, quality = [], []
    for i in range(n):
        kind = "hard" if i % 2 else "easy"
        words = rng.choice(WORDS[kind], size=4)
        prompts.append(f"question {i}: " + " ".join(words))
        if kind == "easy":
            quality.append([1.0, 1.0, 1.0] if rng.random() < 0.95 else [0.0, 1.0, 1.0])
        else:
            quality.append([0.0, float(rng.random() < 0.5), float(rng.random() < 0.95)])
    q = np.asarray(quality)
    cost = np.tile([0.001, 0.004, 0.02], (n, 1)) * rng.uniform(0.8, 1.2, size=(n, 3))
    return Dataset(
        name="toy", models=("small", "medium", "large"),
        ids=tuple(f"toy-{i}" for i in range(n)), prompts=tuple(prompts),
        quality=q, cost_usd=cost, split=random_split(n, seed=seed),
        task=tuple("hard" if i % 2 else "easy" for i in range(n)),
    )


def toy_with_answers(n: int = 300, seed: int = 0) -> Dataset:
    """:func:`toy_dataset` plus what signals and cascades read: a confidence that is higher
    for right answers, answer texts whose words give right and wrong answers away (with 10 %
    noise), and latency / token counts that grow with the model's size."""
    base = toy_dataset(n, seed)
    rng = np.random.default_rng(seed + 1)
    right = base.quality > 0.5
    confidence = np.where(right, rng.beta(6, 2, right.shape), rng.beta(2, 4, right.shape))
    tell = right ^ (rng.random(right.shape) < 0.1)
    responses = np.empty(right.shape, dtype=object)
    for i in range(n):
        for j in range(3):
            responses[i, j] = (f"answer {i % 7} because steps" if tell[i, j]
                               else f"answer {i % 5} maybe unsure guess")
    latency = np.array([0.2, 0.5, 1.5]) * rng.uniform(0.5, 2.0, size=right.shape)
    tokens = np.tile([10.0, 20.0, 30.0], (n, 1))
    return replace(base, confidence=confidence, responses=responses, latency_s=latency,
                   tokens_in=tokens, tokens_out=tokens / 10)


# -- shared ----------------------------------------------------------------------------------


def _check_init(estimator: Router | Signal) -> None:
    kind = type(estimator).__name__
    assert type(estimator).name, f"{kind} needs a non-empty class attribute `name`"
    learned = [k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")]
    assert not learned, f"{kind}.__init__ must only store its arguments; it set {learned}"
    params = estimator.get_params()
    taken = [n for n, p in inspect.signature(type(estimator).__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert list(params) == taken, f"{kind}.get_params() gives {list(params)}, not the " \
                                  f"__init__ arguments {taken}"
    clone = type(estimator)(**params)
    assert clone.get_params() == params, f"{kind}(**get_params()) has other parameters"


def _raises(error: type[Exception], call: object, what: str) -> None:
    try:
        call()  # type: ignore[operator]
    except error:
        return
    raise AssertionError(f"{what} must raise {error.__name__}")


# -- routers ---------------------------------------------------------------------------------


def check_router(router: Router, data: Dataset | None = None) -> None:
    """Check that ``router`` (unfitted) keeps the router contract of
    :class:`~routecast.routers.base.Router`: ``__init__`` stores its arguments only and
    ``get_params`` returns them; use before ``fit`` is a :class:`NotFittedError`; ``fit``
    returns ``self`` and sets ``models_``; predictions have the right shape and range, agree
    between a batch and single prompts, and do not change between two fits; routing returns
    model names; a saved router loads and predicts the same; and, if it implements
    ``_add_model``, a model added from a few labels is predicted.

    ``data`` defaults to :func:`toy_dataset`; it is fitted on its ``train`` split.
    """
    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.routers.persist import load_router, save_router

    assert isinstance(router, Router), f"{router!r} is not a routecast Router"
    _check_init(router)
    name = router.name
    _raises(NotFittedError, lambda: router.predict(["hello"]), f"{name}: predict before fit")
    data = toy_dataset(240) if data is None else data
    train = data.subset("train")
    fresh = type(router)(**router.get_params())
    assert fresh.fit(train) is fresh, f"{name}: fit must return self"
    router = fresh
    assert router.models_ == tuple(data.models), f"{name}: models_ must be the data's models"
    # The oracle only knows the prompts it was fitted on; the others see unseen prompts.
    prompts = list((train if router.evaluation_only else data.subset("test")).prompts)[:60]
    m = len(data.models)
    q, c = router.predict(prompts), router.predict_cost(prompts)
    assert q.shape == c.shape == (len(prompts), m), f"{name}: predictions must be (n, m)"
    assert np.isfinite(q).all() and q.min() >= 0 and q.max() <= 1, \
        f"{name}: predicted quality must be finite and in [0, 1]"
    assert np.isfinite(c).all() and c.min() >= 0, f"{name}: predicted cost must be >= 0"
    assert router.predict([]).shape == (0, m), f"{name}: predict([]) must be (0, m)"
    routed = router.route(prompts, Policy(10.0))
    assert len(routed) == len(prompts) and set(routed) <= set(data.models), \
        f"{name}: route must give one known model per prompt"
    assert router.route(prompts[0], Policy(0.0)) == router.route(prompts[:1], Policy(0.0)), \
        f"{name}: a bare string must be routed as one prompt"
    singles = np.vstack([router.predict([p]) for p in prompts[:12]])
    np.testing.assert_allclose(q[:12], singles, atol=1e-12,
                               err_msg=f"{name}: batch and single predictions differ")
    again = type(router)(**router.get_params()).fit(train).predict(prompts)
    np.testing.assert_array_equal(q, again, err_msg=f"{name}: fitting is not deterministic")
    with tempfile.TemporaryDirectory() as folder:
        save_router(router, folder)
        loaded, _ = load_router(folder)
        assert type(loaded) is type(router), f"{name}: loads as {type(loaded).__name__}"
        np.testing.assert_allclose(loaded.predict(prompts), q, atol=1e-12,
                                   err_msg=f"{name}: a saved router predicts differently")
    if type(router)._add_model is not Router._add_model and not router.evaluation_only:
        _check_add_model(router, data)


def _check_add_model(router: Router, data: Dataset) -> None:
    name, last = router.name, data.models[-1]
    train = data.subset("train")
    base = type(router)(**router.get_params()).fit(train.select_models(data.models[:-1]))
    labelled = train.select_models(data.models).take(np.arange(min(40, train.n_prompts)))
    assert base.add_model(last, labelled) is base, f"{name}: add_model must return self"
    assert base.models_ == tuple(data.models), f"{name}: add_model must append the model"
    prompts = list(data.subset("test").prompts)[:20]
    q = base.predict(prompts)
    assert q.shape == (len(prompts), len(data.models)) and np.isfinite(q).all() \
        and q.min() >= 0 and q.max() <= 1, f"{name}: predictions after add_model are invalid"
    assert base.predict_cost(prompts).shape == q.shape, \
        f"{name}: predict_cost after add_model must cover the new model"


# -- signals ---------------------------------------------------------------------------------


def check_signal(signal: Signal, data: Dataset | None = None) -> None:
    """Check that ``signal`` (unfitted) keeps the signal contract of
    :class:`~routecast.signals.base.Signal`: ``__init__`` stores its arguments only; use
    before ``fit`` is a :class:`NotFittedError`; ``fit`` returns ``self`` and sets
    ``models_``; scores are ``(n, m)`` in [0, 1], deterministic, refused for other models;
    ``cross_fit`` leaves the signal unfitted and scores each prompt without its own outcomes.
    A live-only signal (``offline = False``) must instead refuse to be fitted.

    ``data`` defaults to :func:`toy_with_answers`; it is fitted on its ``train`` split.
    """
    from routecast.signals.base import Signal

    assert isinstance(signal, Signal), f"{signal!r} is not a routecast Signal"
    _check_init(signal)
    name = signal.name
    data = toy_with_answers(300) if data is None else data
    train, test = data.subset("train"), data.subset("test")
    if not signal.offline:
        assert signal.judge, f"{name}: a live-only signal must name its live judge"
        assert not signal.available(data), f"{name}: a live-only signal is never available"
        _raises(ConfigError, lambda: signal.fit(train), f"{name}: fitting a live-only signal")
        return
    _raises(NotFittedError, lambda: signal.score(test), f"{name}: score before fit")
    fresh = type(signal)(**signal.get_params())
    assert fresh.fit(train) is fresh, f"{name}: fit must return self"
    assert fresh.models_ == tuple(data.models), f"{name}: models_ must be the data's models"
    scores = fresh.score(test)
    assert scores.shape == (test.n_prompts, test.n_models), f"{name}: scores must be (n, m)"
    assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1, \
        f"{name}: scores must be finite and in [0, 1]"
    again = type(signal)(**signal.get_params()).fit(train).score(test)
    np.testing.assert_array_equal(scores, again, err_msg=f"{name}: fitting is not "
                                                         "deterministic")
    reordered = test.select_models(list(reversed(data.models)))
    _raises(ConfigError, lambda: fresh.score(reordered), f"{name}: scoring other models")
    unfitted = type(signal)(**signal.get_params())
    oof = unfitted.cross_fit(train, folds=3, seed=0)
    assert oof.shape == (train.n_prompts, train.n_models), f"{name}: cross_fit shape"
    assert not hasattr(unfitted, "models_"), f"{name}: cross_fit must leave the signal as it was"
    # Flip the outcomes of one prompt: its own out-of-fold scores must not move.
    flipped = replace(train, quality=train.quality.copy())
    flipped.quality[0] = 1.0 - flipped.quality[0]
    np.testing.assert_allclose(unfitted.cross_fit(flipped, folds=3, seed=0)[0], oof[0],
                               atol=1e-12, err_msg=f"{name}: cross_fit scores a prompt "
                                                   "with its own outcomes")
