"""The learned routers (mlp, mf, sw-ranking, stack), per-prompt cost, and adding a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from routecast import metrics
from routecast.bench.fewlabels import few_labels
from routecast.cli import main
from routecast.data import load_dataset, save_dataset
from routecast.data.dataset import Dataset
from routecast.data.splits import random_split
from routecast.errors import ConfigError, DataError
from routecast.policy import choose, weight_grid
from routecast.routers import Router, make_router, router_names
from routecast.routers.knn import KNNRouter
from routecast.routers.mf import MFRouter
from routecast.routers.persist import load_router, save_router
from routecast.routers.ranking import SWRankingRouter, bradley_terry
from routecast.routers.stack import knn_means
from tests.toy import WORDS, toy_dataset

LEARNED = ["mlp", "mf", "sw-ranking", "stack"]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset(300)


def _curve(router: Router, test: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realised (cost, quality, share of the last model) at every weight of the grid."""
    q, c = router.predict(test.prompts), router.predict_cost(test.prompts)
    rows = np.arange(test.n_prompts)
    picks = [choose(q, c, float(w)) for w in weight_grid(c)]
    return (np.array([test.cost_usd[rows, p].mean() for p in picks]),
            np.array([test.quality[rows, p].mean() for p in picks]),
            np.array([(p == test.n_models - 1).mean() for p in picks]))


def _aiq(router: Router, test: Dataset) -> float:
    test = test.select_models(router.models_)
    cost, quality, _ = _curve(router, test)
    mc = test.mean_cost_usd()
    return metrics.aiq(cost, quality, float(mc.min()), float(mc.max()))


def _zero(test: Dataset) -> float:
    mq, mc = test.mean_quality(), test.mean_cost_usd()
    return metrics.aiq(mc, mq, float(mc.min()), float(mc.max()))


def test_learned_routers_are_registered() -> None:
    assert set(LEARNED) <= set(router_names())


@pytest.mark.parametrize("name", LEARNED)
def test_learned_router_beats_the_zero_router(name: str, data: Dataset) -> None:
    router = make_router(name).fit(data.subset("train"))
    assert _aiq(router, data.subset("test")) > _zero(data.subset("test")) + 0.02


@pytest.mark.parametrize("name", LEARNED)
def test_learned_router_tells_hard_from_easy(name: str, data: Dataset) -> None:
    # The small model is right on easy prompts only: its predicted quality must say so.
    router = make_router(name).fit(data.subset("train"))
    easy = [f"new: {' '.join(WORDS['easy'][:4])}"]
    hard = [f"new: {' '.join(WORDS['hard'][:4])}"]
    small = router.models_.index("small")
    assert router.predict(easy)[0, small] > router.predict(hard)[0, small] + 0.3


def test_mf_on_two_models_recovers_most_of_the_gap(data: Dataset) -> None:
    pair = data.select_models(["small", "large"])
    test = pair.subset("test")
    q_weak, q_strong = (float(x) for x in test.mean_quality())
    apgr = {}
    for name in ("mf", "random"):
        router = make_router(name).fit(pair.subset("train"))
        _, quality, share = _curve(router, test)
        apgr[name] = metrics.apgr(share, quality, q_weak, q_strong)
    # The best a prompt-level router can do here: hard prompts to the large model.
    hard = np.array([t == "hard" for t in test.task or ()])
    ideal = metrics.apgr(np.array([hard.mean()]),
                         np.array([np.where(hard, test.quality[:, 1], test.quality[:, 0]).mean()]),
                         q_weak, q_strong)
    # Random routing recovers the gap in proportion to its strong calls (APGR ~ 0.5); MF
    # knows that easy prompts do not need the large model.
    assert apgr["random"] < 0.6 < ideal
    assert apgr["mf"] > ideal - 0.05
    router = make_router("mf").fit(pair.subset("train"))
    _, quality, share = _curve(router, test)
    # Half the gap is recovered before a single easy prompt goes to the large model.
    assert metrics.cpt(share, quality, q_weak, q_strong, 0.5) <= hard.mean() + 1e-9


def test_bradley_terry_matches_a_direct_maximum_likelihood_fit() -> None:
    q = np.array([[0.9, 0.5, 0.2]])
    n, prior = 30.0, 1.0
    theta = bradley_terry(q, np.array([n]), prior)[0]

    def neg_log_lik(t: np.ndarray) -> float:
        ll = 0.0
        for i in range(3):
            ll += n * (q[0, i] * np.log(1 / (1 + np.exp(-t[i])))
                       + (1 - q[0, i]) * np.log(1 / (1 + np.exp(t[i]))))
            for j in range(3):
                if i != j:
                    ll += n * 0.5 * (1 + q[0, i] - q[0, j]) * np.log(1 / (1 + np.exp(t[j] - t[i])))
        return -ll + prior / 2 * float(t @ t)

    direct = minimize(neg_log_lik, np.zeros(3), method="BFGS").x
    np.testing.assert_allclose(theta, direct, atol=1e-4)
    assert theta[0] > theta[1] > theta[2]


def _battles() -> Dataset:
    """``alpha`` wins on maths prompts, ``beta`` on poems; ``gamma`` loses everywhere."""
    rng = np.random.default_rng(1)
    prompts, quality = [], []
    for i in range(120):
        maths = i % 2 == 0
        words = ["integral", "matrix", "proof"] if maths else ["poem", "rhyme", "verse"]
        prompts.append(f"item {i} " + " ".join(rng.choice(words, size=3)))
        a, b = (0.9, 0.3) if maths else (0.3, 0.9)
        quality.append([float(rng.random() < a), float(rng.random() < b), 0.0])
    n = len(prompts)
    return Dataset(name="battles", models=("alpha", "beta", "gamma"),
                   ids=tuple(f"b{i}" for i in range(n)), prompts=tuple(prompts),
                   quality=np.array(quality), cost_usd=np.full((n, 3), 0.01),
                   split=random_split(n, seed=0))


def test_sw_ranking_agrees_with_outcome_derived_wins() -> None:
    router = make_router("sw-ranking").fit(_battles())
    assert isinstance(router, SWRankingRouter)
    maths, poem = router.ratings(["integral proof matrix", "a rhyme in verse"])
    assert maths[0] > maths[1] > maths[2]  # alpha beats beta on maths, both beat gamma
    assert poem[1] > poem[0] > poem[2]


def test_per_prompt_cost_follows_the_prompt(data: Dataset) -> None:
    # Make the large model twice as dear on hard prompts: the knn cost model should see it.
    hard = np.array([t == "hard" for t in data.task or ()])
    cost = data.cost_usd.copy()
    cost[hard, 2] *= 2
    dear = Dataset(**{**vars(data), "cost_usd": cost})
    train = dear.subset("train")
    test = dear.subset("test")
    router = make_router("mf", cost_model="knn").fit(train)
    pred = router.predict_cost(test.prompts)
    is_hard = np.array([t == "hard" for t in test.task or ()])
    assert pred[is_hard, 2].mean() > 1.7 * pred[~is_hard, 2].mean()
    mean_only = make_router("mf", cost_model="mean").fit(train).predict_cost(test.prompts)
    assert np.ptp(mean_only[:, 2]) == 0


def test_unknown_cost_model_is_a_config_error(data: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown cost_model 'nope'"):
        make_router("mf", cost_model="nope").fit(data.subset("train"))


def test_cost_from_tokens_recovers_prices() -> None:
    rng = np.random.default_rng(0)
    n = 200
    prompts = [("short " if i % 2 else "long " * 30) + f"q{i}" for i in range(n)]
    chars = np.array([len(p) for p in prompts], dtype=float)
    tokens_in = np.column_stack([chars / 4, chars / 4])
    tokens_out = np.column_stack([np.where(np.arange(n) % 2, 10.0, 300.0),
                                  np.where(np.arange(n) % 2, 10.0, 300.0)]) + rng.random((n, 2))
    prices = np.array([[1e-6, 2e-6], [1e-5, 3e-5]])  # USD per token in, out
    cost = tokens_in * prices[:, 0] + tokens_out * prices[:, 1]
    data = Dataset(name="tok", models=("a", "b"), ids=tuple(map(str, range(n))),
                   prompts=tuple(prompts), quality=rng.integers(0, 2, (n, 2)).astype(float),
                   cost_usd=cost, split=random_split(n, seed=0), tokens_in=tokens_in,
                   tokens_out=tokens_out)
    router = make_router("mf", cost_model="knn").fit(data.subset("train"))
    assert isinstance(router, MFRouter)
    np.testing.assert_allclose(router.cost_prices_, prices, rtol=1e-3)
    test = data.subset("test")
    err = np.abs(router.predict_cost(test.prompts) - test.cost_usd) / test.cost_usd
    assert np.median(err) < 0.05


@pytest.mark.parametrize("name", ["knn", "linear", "mlp", "mf", "sw-ranking", "stack"])
def test_add_model_from_few_labels_gets_close_to_the_full_fit(name: str,
                                                             data: Dataset) -> None:
    train, test = data.subset("train"), data.subset("test")
    full = make_router(name).fit(train)
    without = make_router(name).fit(train.select_models(["small", "medium"]))
    labelled = train.take(np.arange(40))
    added = make_router(name).fit(train.select_models(["small", "medium"]))
    assert added.add_model("large", labelled) is added
    assert added.models_ == ("small", "medium", "large")
    aiq_full, aiq_added, aiq_without = _aiq(full, test), _aiq(added, test), _aiq(without, test)
    assert aiq_added > aiq_without + 0.02  # routing can now use the large model
    assert aiq_added > aiq_full - 0.02
    if name != "sw-ranking":  # its ratings are joint: a new player moves the others a bit
        # The existing models' predictions are untouched.
        np.testing.assert_allclose(added.predict(test.prompts)[:, :2],
                                   without.predict(test.prompts), atol=1e-9)


@pytest.mark.parametrize("weighted", [True, False])
def test_knn_means_reproduce_the_knn_router(weighted: bool, data: Dataset) -> None:
    # add_model imputes through knn_means on encoder rows: it must be what KNNRouter predicts.
    router = make_router("knn", k=15, weighted=weighted).fit(data.subset("train"))
    assert isinstance(router, KNNRouter)
    prompts = list(data.subset("test").prompts)
    sim = (router.encoder_.transform(prompts) @ router.features_.T).toarray()
    (means,) = knn_means(sim, router.quality_, router.mean_quality_, [router.k_],
                         prior=router.prior, weighted=weighted)
    np.testing.assert_allclose(means, router.predict(prompts), atol=1e-12)


def test_knn_predictions_use_the_appended_labelled_rows(data: Dataset) -> None:
    train = data.subset("train")
    router = make_router("knn", k=15).fit(train.select_models(["small", "medium"]))
    assert isinstance(router, KNNRouter)
    prompts = list(data.subset("validation").prompts[:20])  # unseen: appended as rows
    router.predict(prompts)  # KNNRouter caches its transposed training rows here
    router.add_model("large", prompts, np.ones(20), 0.02)
    # Prompts whose encoder rows equal a training prompt's are that prompt to the router
    # (toy prompts differ only in a number TF-IDF drops): they are labelled, not appended.
    assert train.n_prompts < router.features_.shape[0] <= train.n_prompts + 20
    sim = (router.encoder_.transform(prompts) @ router.features_.T).toarray()
    (means,) = knn_means(sim, router.quality_, router.mean_quality_, [router.k_],
                         prior=router.prior)
    np.testing.assert_allclose(router.predict(prompts), means, atol=1e-12)


def test_add_model_is_deterministic_and_persists(data: Dataset, tmp_path: Path) -> None:
    train, test = data.subset("train"), data.subset("test")
    labelled = train.take(np.arange(30)).select_models(["large"])
    a = make_router("stack").fit(train.select_models(["small", "medium"]))
    b = make_router("stack").fit(train.select_models(["small", "medium"]))
    a.add_model("large", labelled)
    b.add_model("large", labelled)
    np.testing.assert_array_equal(a.predict(test.prompts), b.predict(test.prompts))
    save_router(a, tmp_path)
    loaded, _ = load_router(tmp_path)
    assert loaded.models_ == a.models_
    np.testing.assert_array_equal(loaded.predict(test.prompts), a.predict(test.prompts))
    np.testing.assert_array_equal(loaded.predict_cost(test.prompts),
                                  a.predict_cost(test.prompts))


@pytest.mark.parametrize("name", ["random", "best-single", "cheapest", "knn", "linear", *LEARNED])
def test_every_router_can_take_a_model_from_prompts_and_arrays(name: str,
                                                               data: Dataset) -> None:
    train = data.subset("train").select_models(["small", "medium"])
    router = make_router(name).fit(train)
    prompts = list(data.subset("validation").prompts[:20])
    router.add_model("large", prompts, np.ones(20), 0.02)
    q = router.predict(prompts)
    assert q.shape == (20, 3) and np.all((q >= 0) & (q <= 1))
    np.testing.assert_allclose(router.predict_cost(prompts)[:, 2].mean(), 0.02, rtol=0.3)


def test_add_model_rejects_bad_input(data: Dataset) -> None:
    train = data.subset("train")
    router = make_router("mf").fit(train.select_models(["small", "medium"]))
    with pytest.raises(ConfigError, match="already predicts"):
        router.add_model("small", train)
    with pytest.raises(ConfigError, match="unknown model"):
        router.add_model("nosuch", train)
    with pytest.raises(ConfigError, match="needs quality"):
        router.add_model("large", ["a prompt"], [1.0])
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        router.add_model("large", ["a prompt"], [3.0], 0.01)
    with pytest.raises(DataError, match="1 quality values and 1 costs for 2 prompts"):
        router.add_model("large", ["a", "b"], [1.0], [0.01])
    with pytest.raises(ConfigError, match="evaluation only"):
        make_router("oracle").fit(train).add_model("x", ["a"], [1.0], 0.1)
    assert router.models_ == ("small", "medium")  # nothing half-added


def test_few_labels_bench_shows_the_gain_over_refitting(data: Dataset) -> None:
    result = few_labels(data, "large", routers=["mf"], labels=[12, 40], repeats=2)
    (entry,) = result["routers"]
    assert [p["n"] for p in entry["curve"]] == [12, 40]
    without, full = entry["without"]["aiq"], entry["full"]["aiq"]
    assert without is not None and full is not None and without < full
    few = entry["curve"][0]
    assert few["added"]["n_draws"] == 2
    # With 12 labels, refitting on them alone learns little; adding keeps what was learned.
    assert few["added"]["aiq"] > few["scratch"]["aiq"]
    json.dumps(result, allow_nan=False)  # the --json output is plain JSON
    with pytest.raises(ConfigError, match="label counts"):
        few_labels(data, "large", routers=["mf"], labels=[10_000])


def test_cli_few_labels(data: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                        ) -> None:
    path = save_dataset(data, tmp_path / "toy.jsonl")
    out = tmp_path / "few.json"
    main(["bench", str(path), "--few-labels", "large", "--labels", "20", "--repeats", "1",
          "--routers", "linear", "--json", str(out)])
    assert "adding large" in capsys.readouterr().out
    assert json.loads(out.read_text())["routers"][0]["curve"][0]["n"] == 20
    with pytest.raises(SystemExit) as e:
        main(["bench", str(path), "--few-labels", "large", "--labels", "x"])
    assert e.value.code == 2


def test_mf_beats_the_zero_router_on_routerbench(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "routerbench-subset")
    router = make_router("mf").fit(ds.subset("train"))
    test = ds.subset("test")
    assert _aiq(router, test) > _zero(test) + 0.025
