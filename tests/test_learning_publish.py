"""Published learned routers: a replica that loads a version serves exactly what its publisher
serves (every wrapper layer: shrinkage, per-prompt costs, trust, de-biasing), payloads it cannot
read are refused by name, and a publish or load that fails never stops the learning loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast import make_router
from routecast.data.dataset import Dataset
from routecast.encoders import make_encoder
from routecast.errors import DataFormatError
from routecast.learning import Learner, LearnerSettings
from routecast.learning.calibrate import calibrate
from routecast.learning.cost import PromptCostModel, PromptCostRouter
from routecast.learning.learner import (
    DebiasedRouter,
    ShrunkRouter,
    Snapshot,
    TrustedRouter,
    shrink,
)
from routecast.learning.publish import KIND, VERSION, snapshot_from_payload, snapshot_payload
from routecast.learning.store import LabelRow
from routecast.routers.base import Router
from routecast.routers.persist import save_router
from routecast.server.endpoints import build_endpoints
from routecast.server.learning import LearningService
from routecast.storage.artifacts import ArtifactStore
from tests.routecast_live import make_config, model_entry
from tests.toy import toy_dataset

#: Prompts no router was fitted on: the loaded router must agree on them, not only on its
#: training prompts.
NEW = ["a new question about the weather", "prove this hard theorem step by step",
       "question 7: easy simple", "", "zzz unknown words only"]


def costly_toy(n: int = 400) -> Dataset:
    """The toy data with hard prompts three times as dear (long answers), so that a per-prompt
    cost model differs from the means."""
    toy = toy_dataset(n)
    factor = np.where(np.asarray(toy.task) == "hard", 3.0, 1.0)[:, None]
    return replace(toy, cost_usd=toy.cost_usd * factor)


def assert_same_serving(a: Snapshot, b: Snapshot, prompts: Sequence[str]) -> None:
    ps = list(prompts)
    np.testing.assert_array_equal(b.router.predict(ps), a.router.predict(ps))
    np.testing.assert_array_equal(b.router.predict_cost(ps), a.router.predict_cost(ps))
    np.testing.assert_array_equal(b.fitted.predict(ps), a.fitted.predict(ps))
    np.testing.assert_array_equal(b.fitted.predict_cost(ps), a.fitted.predict_cost(ps))
    assert b.policy == a.policy
    assert b.router.route(ps, b.policy) == a.router.route(ps, a.policy)
    assert b.kind == a.kind
    assert [type(r) for r in chain(b.router)] == [type(r) for r in chain(a.router)]


def chain(router: Router) -> list[Router]:
    out = [router]
    while hasattr(out[-1], "inner"):
        out.append(out[-1].inner)
    return out


LAYER_SETS = [(), ("prompt-cost",), ("debiased",), ("trusted",),
              ("prompt-cost", "trusted", "debiased")]


@pytest.mark.parametrize("layers", LAYER_SETS, ids=lambda ls: "+".join(ls) or "alone")
@pytest.mark.parametrize("family", ["linear", "best-single"])
def test_every_combination_of_layers_round_trips_to_the_same_predictions_and_costs(
        layers: tuple[str, ...], family: str) -> None:
    data = costly_toy()
    train = data.subset("train")
    fitted = make_router(family).fit(train)
    raw: Router = shrink(family, {}, train, fitted) if family == "linear" else fitted
    if family == "linear":
        assert isinstance(raw, ShrunkRouter) and raw.slope.any()
    serving = raw
    if "prompt-cost" in layers:
        # The linear router's own encoder (shared, saved once), else one of the learner's.
        encoder = getattr(raw, "encoder_", None) or make_encoder("tfidf").fit(train.prompts)
        model = PromptCostModel.fit(encoder, train, train.mean_cost_usd())
        assert model is not None
        serving = PromptCostRouter(serving, model).ready()
    if "trusted" in layers:
        serving = TrustedRouter(serving, [True, False, True]).ready()
    if "debiased" in layers:
        serving = DebiasedRouter(serving, 0.1).ready()
    policy = calibrate(serving, data.subset("validation"), quality_fraction=0.9)
    snap = Snapshot(serving, policy, 3, family, raw)

    back, labels = snapshot_from_payload(snapshot_payload(snap, 123) or b"", 9)

    assert labels == 123 and back.version == 9
    assert_same_serving(snap, back, [*NEW, *data.subset("test").prompts])
    if "prompt-cost" in layers:  # the costs are per prompt, and survived as such
        cost = back.router.predict_cost(list(data.prompts[:40]))
        assert np.ptp(cost[:, 2]) > 0
        if family == "linear":  # the shared encoder is shared again
            cost_layer = next(r for r in chain(back.router) if isinstance(r, PromptCostRouter))
            assert cost_layer.cost.encoder is back.fitted.encoder_  # type: ignore[attr-defined]


def test_a_snapshot_without_a_raw_router_round_trips() -> None:
    train = costly_toy().subset("train")
    router = make_router("linear").fit(train)
    snap = Snapshot(router, calibrate(router, train, quality_fraction=0.9), 1, "linear")
    back, _ = snapshot_from_payload(snapshot_payload(snap, 5) or b"", 1)
    assert_same_serving(snap, back, NEW)


def test_a_learner_refitting_under_a_noisy_judge_publishes_what_it_serves() -> None:
    data = costly_toy(600)
    rng = np.random.default_rng(4)
    settings = LearnerSettings(first_refit=50, refit_every=150, min_holdout_labels=10,
                               min_model_labels=30, judge_noise=0.1)
    assert settings.prompt_cost and settings.shrink_folds > 1
    learner = Learner(data.models, [0.001, 0.004, 0.02], settings)
    other = Learner(data.models, [0.001, 0.004, 0.02], settings)
    published = 0
    for i, prompt in enumerate(data.prompts):
        for j, model in enumerate(data.models):
            if model == "medium" and i >= 20:  # medium: too few labels to be trusted
                continue
            if rng.random() < 0.6:
                q = data.quality[i, j]
                learner.record(prompt, model, 1.0 - q if rng.random() < 0.1 else q,
                               float(data.cost_usd[i, j]))
        if learner.due():
            learner.refit()
            payload = snapshot_payload(learner.current, learner.labels.n_labels)
            if payload is None:
                continue
            back, labels = snapshot_from_payload(payload, learner.current.version)
            assert labels == learner.labels.n_labels
            assert_same_serving(learner.current, back, [*NEW, *data.prompts[:60]])
            published += 1
    assert published >= 2
    # The last one wears every layer, and another replica adopting it routes the same.
    kinds = [type(r) for r in chain(learner.current.router)]
    assert kinds[:3] == [DebiasedRouter, TrustedRouter, PromptCostRouter]
    assert ShrunkRouter in kinds, kinds
    payload = snapshot_payload(learner.current, learner.labels.n_labels)
    assert payload is not None
    other.adopt(snapshot_from_payload(payload, 7)[0], learner.labels.n_labels)
    prompts = list(data.prompts)
    assert other.route(prompts) == learner.route(prompts)


# -- payloads that cannot be read --------------------------------------------------------------


def a_payload() -> bytes:
    train = costly_toy().subset("train")
    router = shrink("linear", {}, train, make_router("linear").fit(train))
    serving = DebiasedRouter(router, 0.1).ready()
    payload = snapshot_payload(Snapshot(serving, calibrate(serving, train), 2, "linear",
                                        router), 50)
    assert payload is not None
    return payload


def rewritten(payload: bytes, name: str, data: bytes | None) -> bytes:
    """``payload`` with member ``name`` replaced by ``data`` (or removed: ``None``)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            if item != name:
                dst.writestr(item, src.read(item))
        if data is not None:
            dst.writestr(name, data)
    return out.getvalue()


def meta_of(payload: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        meta: dict[str, Any] = json.loads(z.read("snapshot.json"))
    return meta


def test_an_unknown_version_is_refused_by_name() -> None:
    payload = a_payload()
    meta = meta_of(payload)
    assert meta["format"] == "routecast-learned-router" and meta["version"] == VERSION
    meta["version"] = 99
    with pytest.raises(DataFormatError, match=r"artifact version 4: .*unsupported version 99"):
        snapshot_from_payload(rewritten(payload, "snapshot.json", json.dumps(meta).encode()), 4)


@pytest.mark.parametrize("corrupt", ["not a zip", "no snapshot", "bad json", "unknown layer",
                                     "short array", "no router", "other format"])
def test_a_corrupt_payload_is_a_data_format_error_naming_the_version(corrupt: str) -> None:
    payload = a_payload()
    meta = meta_of(payload)
    if corrupt == "not a zip":
        bad = b"tampered"
    elif corrupt == "no snapshot":
        bad = rewritten(payload, "snapshot.json", None)
    elif corrupt == "bad json":
        bad = rewritten(payload, "snapshot.json", b"{not json")
    elif corrupt == "unknown layer":
        meta["serving"][0]["kind"] = "mystery"
        bad = rewritten(payload, "snapshot.json", json.dumps(meta).encode())
    elif corrupt == "short array":
        with zipfile.ZipFile(io.BytesIO(payload)) as z, \
                np.load(io.BytesIO(z.read("layers.npz")), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["fitted.0.slope"] = arrays["fitted.0.slope"][:1]
        npz_bytes = io.BytesIO()
        np.savez(npz_bytes, **arrays)
        bad = rewritten(payload, "layers.npz", npz_bytes.getvalue())
    elif corrupt == "no router":
        bad = rewritten(payload, "router/router.json", None)
    else:
        meta["format"] = "something-else"
        bad = rewritten(payload, "snapshot.json", json.dumps(meta).encode())
    with pytest.raises(DataFormatError, match="artifact version 5"):
        snapshot_from_payload(bad, 5)


def test_a_version_1_payload_from_before_the_layers_still_loads(tmp_path: Path) -> None:
    train = costly_toy().subset("train")
    router = make_router("linear").fit(train)
    policy = calibrate(router, train, quality_fraction=0.9)
    folder = save_router(router, tmp_path / "r", policy=policy)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:  # what publish.py wrote before the format field
        for path in sorted(folder.iterdir()):
            z.write(path, path.name)
        z.writestr("snapshot.json", json.dumps({"kind": "linear", "labels": 40,
                                                "trusted": [True, False, True]}))
    snap, labels = snapshot_from_payload(out.getvalue(), 3)
    assert labels == 40 and isinstance(snap.router, TrustedRouter)
    expected = router.predict(NEW)
    expected[:, 1] = 0.0
    np.testing.assert_array_equal(snap.router.predict(NEW), expected)
    assert snap.policy == policy


# -- the server: publish and load failures -----------------------------------------------------


def service_pair(db: Path) -> tuple[LearningService, LearningService]:
    spec = {"models": ["small", "large"], "judge": {"model": "grader", "noise": 0.1},
            "first_refit": 10, "refit_every": 10, "spend_fraction": None, "timeout_s": 1.0,
            "max_learned_per_s": 0}
    config = make_config("http://127.0.0.1:9/v1", None,
                         models={"grader": model_entry("http://127.0.0.1:9/v1", "grader")},
                         endpoints={"auto": {"type": "routed", "learning": spec}},
                         storage={"url": f"sqlite:///{db}", "artifact_poll_s": 3600})
    return (LearningService(config, build_endpoints(config, env={}), db, None),
            LearningService(config, build_endpoints(config, env={}), db, None))


async def label(service: LearningService, n: int, seed: int = 0) -> None:
    """``n`` prompts of labels that a linear router learns better than the mean: ``small``
    is right on prompts about cats only, and long answers (dogs) cost more."""
    e = service.routed("auto")
    rng = np.random.default_rng(seed)
    for i in range(n):
        topic = "cats" if i % 2 else "dogs"
        prompt = f"question {seed}-{i} about {topic} {rng.integers(1000)}"
        for model, quality in (("small", float(topic == "cats")), ("large", 1.0)):
            cost = (0.001 if model == "small" else 0.01) * (3.0 if topic == "dogs" else 1.0)
            e.learner.record(prompt, model, quality, cost)
            await service.add_label(e, LabelRow("auto", prompt, model, quality, cost,
                                                 "judge"))


def test_a_replica_loads_the_shrunk_prompt_costed_router_another_published(
        tmp_path: Path) -> None:
    a, b = service_pair(tmp_path / "shared.db")

    async def run() -> None:
        await a.start()
        await b.start()
        try:
            ea, eb = a.routed("auto"), b.routed("auto")
            await label(a, 120)
            await a.refit(ea)
            assert ea.counters.get("published") == 1, ea.counters
            assert "publish_failed" not in ea.counters
            await b._sync_router(eb)
            assert eb.counters.get("loaded") == 1 and eb.artifact_version == 1
            kinds = [type(r).__name__ for r in chain(ea.backend.router)]
            assert kinds == ["DebiasedRouter", "PromptCostRouter", "ShrunkRouter",
                             "LinearRouter"]
            assert_same_serving(ea.learner.current, eb.learner.current, NEW)
            assert eb.backend.router is eb.learner.current.router
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_a_failing_publish_is_counted_logged_once_and_the_refit_still_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import routecast.server.learning as server_learning

    def broken(snap: Snapshot, labels: int) -> bytes:
        raise RuntimeError("cannot serialise this router")

    monkeypatch.setattr(server_learning, "snapshot_payload", broken)
    a, _ = service_pair(tmp_path / "shared.db")

    async def run() -> None:
        await a.start()
        try:
            e = a.routed("auto")
            for seed in range(3):
                await label(a, 40, seed)
                before = e.learner.current.version
                await a.refit(e)
                assert e.learner.current.version == before + 1
                assert e.backend.router is e.learner.current.router  # swapped in regardless
            assert e.counters["publish_failed"] == 3 and e.counters["refits"] == 3
            assert "published" not in e.counters and e.artifact_version == 0
            monkeypatch.undo()  # publishing works again
            await label(a, 40, 9)
            await a.refit(e)
            assert e.counters["published"] == 1 and not e.publish_failing
        finally:
            await a.aclose()

    with caplog.at_level(logging.WARNING, logger="routecast.server.learning"):
        asyncio.run(run())
    failures = [r for r in caplog.records if "cannot publish" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert any("publishing refitted routers again" in r.getMessage() for r in caplog.records)


def test_an_unreadable_version_is_skipped_and_the_replica_keeps_serving(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = service_pair(tmp_path / "shared.db")

    async def run() -> None:
        await a.start()
        await b.start()
        try:
            ea, eb = a.routed("auto"), b.routed("auto")
            await label(a, 120)
            await a.refit(ea)
            await b._sync_router(eb)
            served = eb.backend.router
            store = ArtifactStore(tmp_path / "shared.db")
            try:
                payload = snapshot_payload(ea.learner.current, 240)
                assert payload is not None
                meta = meta_of(payload)
                meta["version"] = VERSION + 1  # a newer routecast published it
                bad = rewritten(payload, "snapshot.json", json.dumps(meta).encode())
                assert store.publish("auto", KIND, bad, publisher="newer") == 2
            finally:
                store.close()
            with caplog.at_level(logging.ERROR, logger="routecast.server.learning"):
                await b._sync_router(eb)
                await b._sync_router(eb)  # not read again
            assert eb.counters.get("load_failed") == 1 and eb.artifact_version == 2
            assert eb.backend.router is served and eb.counters.get("loaded") == 1
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())
    assert [r for r in caplog.records if "cannot load router version 2" in r.getMessage()]
