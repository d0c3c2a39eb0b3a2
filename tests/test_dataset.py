"""The Dataset container (validation, selection) and the seeded split helpers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from routecast.data.dataset import OPTIONAL_ARRAYS, SPLITS, Dataset
from routecast.data.splits import carve_validation, random_split
from routecast.errors import ConfigError, DataError

MODELS = ("small", "medium", "large")
PER_MODEL = ("quality", "cost_usd", *OPTIONAL_ARRAYS)


def _make(n: int = 6, models: tuple[str, ...] = MODELS, **overrides: Any) -> Dataset:
    """A dataset where every cell of every array is distinct, so a misaligned row shows."""
    m = len(models)
    cell = np.arange(n * m, dtype=np.float64).reshape(n, m)
    responses = np.empty((n, m), dtype=object)
    for i in range(n):
        for j in range(m):
            responses[i, j] = None if (i + j) % 4 == 0 else f"answer {i}/{models[j]}"
    fields: dict[str, Any] = {
        "name": "toy",
        "models": models,
        "ids": tuple(f"id{i}" for i in range(n)),
        "prompts": tuple(f"prompt number {i}" for i in range(n)),
        "quality": cell / max(n * m, 1),
        "cost_usd": cell * 1e-4,
        "split": np.array([SPLITS[i % 3] for i in range(n)]),
        "task": tuple(f"task{i % 2}" for i in range(n)),
        "latency_s": cell + 0.5,
        "tokens_in": cell + 10,
        "tokens_out": cell + 100,
        "confidence": cell / (n * m + 1),
        "responses": responses,
        "meta": {"source": "unit test"},
    }
    fields.update(overrides)
    return Dataset(**fields)


def _assert_rows(sub: Dataset, full: Dataset, rows: list[int]) -> None:
    """``sub`` holds exactly ``full``'s ``rows``, in that order, in every array."""
    assert sub.ids == tuple(full.ids[i] for i in rows)
    assert sub.prompts == tuple(full.prompts[i] for i in rows)
    assert sub.split.tolist() == [full.split[i] for i in rows]
    assert full.task is not None
    assert sub.task == tuple(full.task[i] for i in rows)
    for name in PER_MODEL:
        np.testing.assert_array_equal(getattr(sub, name), getattr(full, name)[rows], err_msg=name)
    assert sub.responses is not None
    assert full.responses is not None
    assert sub.responses.tolist() == full.responses[rows].tolist()
    assert sub.models == full.models
    assert sub.meta == full.meta
    assert sub.name == full.name


# -- validation ------------------------------------------------------------------------------

def test_a_valid_dataset_reports_its_shape() -> None:
    ds = _make(n=5)
    assert (ds.n_prompts, ds.n_models, len(ds)) == (5, 3, 5)
    assert "toy" in repr(ds)
    assert "5 prompts x 3 models" in repr(ds)


def test_duplicate_models_are_named() -> None:
    with pytest.raises(DataError, match=r"dataset 'toy': lists models more than once: \['a'\]"
                       ) as err:
        _make(models=("a", "b", "a"))
    assert "Fix:" in str(err.value)


def test_no_models_is_refused() -> None:
    with pytest.raises(DataError, match="has no models"):
        _make(models=())


def test_duplicate_ids_are_named() -> None:
    ids = ("p0", "p1", "p2", "p1", "p4", "p5")
    with pytest.raises(DataError, match=r"duplicate prompt ids, e\.g\. \['p1'\]") as err:
        _make(ids=ids)
    assert "make every prompt id unique" in str(err.value)


def test_wrong_number_of_ids_is_refused() -> None:
    with pytest.raises(DataError, match="has 5 ids for 6 prompts"):
        _make(ids=tuple(f"id{i}" for i in range(5)))


@pytest.mark.parametrize("name", PER_MODEL)
@pytest.mark.parametrize("shape", [(6, 2), (5, 3), (6,), (3, 6)])
def test_per_model_arrays_of_the_wrong_shape_are_named(name: str, shape: tuple[int, ...]) -> None:
    bad: dict[str, Any] = {name: np.zeros(shape)}
    with pytest.raises(DataError, match=rf"{name} has shape \({shape[0]},.*expected \(6, 3\)"):
        _make(**bad)


def test_split_task_and_responses_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(DataError, match=r"split has shape \(5,\), expected \(6,\)"):
        _make(split=np.array(["train"] * 5))
    with pytest.raises(DataError, match="has 4 task labels for 6 prompts"):
        _make(task=("a",) * 4)
    with pytest.raises(DataError, match=r"responses has shape \(6, 2\)"):
        _make(responses=np.empty((6, 2), dtype=object))


@pytest.mark.parametrize("name", ["quality", "cost_usd"])
def test_nan_quality_or_cost_is_refused(name: str) -> None:
    arr = getattr(_make(), name).copy()
    arr[3, 1] = np.nan
    with pytest.raises(DataError, match=r"complete \(no NaN\)"):
        _make(**{name: arr})


def test_nan_is_allowed_in_optional_arrays() -> None:
    latency = _make().latency_s
    assert latency is not None
    latency = latency.copy()
    latency[0, 0] = np.nan
    kept = _make(latency_s=latency).latency_s
    assert kept is not None
    assert np.isnan(kept[0, 0])


@pytest.mark.parametrize("value", [1.5, -0.1, 1.0000001])
def test_quality_outside_unit_interval_is_refused(value: float) -> None:
    q = _make().quality.copy()
    q[2, 2] = value
    with pytest.raises(DataError, match=r"quality must lie in \[0, 1\]") as err:
        _make(quality=q)
    assert "rescale" in str(err.value)


def test_quality_on_the_bounds_is_accepted() -> None:
    q = _make().quality.copy()
    q[0, 0], q[1, 1] = 0.0, 1.0
    assert _make(quality=q).quality.max() == 1.0


def test_negative_cost_is_refused() -> None:
    c = _make().cost_usd.copy()
    c[4, 0] = -1e-9
    with pytest.raises(DataError, match="cost_usd must be >= 0"):
        _make(cost_usd=c)


def test_unknown_split_names_are_listed_with_the_valid_ones() -> None:
    split = np.array(["train", "dev", "test", "holdout", "train", "dev"])
    with pytest.raises(DataError, match=r"unknown split names \['dev', 'holdout'\]") as err:
        _make(split=split)
    assert "train, validation, test" in str(err.value)


# -- take ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [[4, 0, 2], [5], [1, 2, 3, 4, 5, 0]])
def test_take_by_index_keeps_every_array_aligned_and_ordered(rows: list[int]) -> None:
    full = _make()
    _assert_rows(full.take(rows), full, rows)
    _assert_rows(full.take(np.array(rows, dtype=np.int32)), full, rows)


def test_take_by_boolean_mask() -> None:
    full = _make()
    mask = np.array([True, False, False, True, True, False])
    _assert_rows(full.take(mask), full, [0, 3, 4])
    _assert_rows(full.take([False, True, False, False, False, True]), full, [1, 5])


def test_take_refuses_a_mask_of_the_wrong_length() -> None:
    with pytest.raises((IndexError, ValueError, DataError, ConfigError)):
        _make().take(np.array([False, True, True]))


def test_take_nothing_gives_an_empty_dataset() -> None:
    empty = _make().take([])
    assert empty.n_prompts == 0
    assert empty.quality.shape == (0, 3)
    assert empty.responses is not None
    assert empty.responses.shape == (0, 3)


def test_take_keeps_absent_arrays_absent() -> None:
    bare = _make(task=None, latency_s=None, tokens_in=None, tokens_out=None, confidence=None,
                 responses=None)
    sub = bare.take([2, 1])
    assert sub.ids == ("id2", "id1")
    for name in (*OPTIONAL_ARRAYS, "responses", "task"):
        assert getattr(sub, name) is None, name


def test_take_does_not_change_the_original() -> None:
    full = _make()
    before = full.quality.copy()
    sub = full.take([1, 2])
    sub.quality[0, 0] = 0.999  # a copy, not a view into the parent
    np.testing.assert_array_equal(full.quality, before)
    assert full.n_prompts == 6


def test_take_repeating_a_row_is_refused_as_a_duplicate_id() -> None:
    with pytest.raises(DataError, match="duplicate prompt ids"):
        _make().take([0, 0])


# -- subset ----------------------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_subset_keeps_exactly_one_split(split: str) -> None:
    full = _make(n=9)
    rows = [i for i in range(9) if full.split[i] == split]
    sub = full.subset(split)
    assert set(sub.split.tolist()) == {split}
    _assert_rows(sub, full, rows)


def test_subsets_partition_the_dataset() -> None:
    full = _make(n=10)
    ids = [i for s in SPLITS for i in full.subset(s).ids]
    assert sorted(ids) == sorted(full.ids)


def test_subset_of_an_empty_split_says_how_to_fix_it() -> None:
    ds = _make(split=np.array(["train", "test"] * 3))
    with pytest.raises(DataError, match="no prompts in the 'validation' split") as err:
        ds.subset("validation")
    assert "dataset 'toy'" in str(err.value)
    assert "Fix:" in str(err.value)


def test_subset_of_an_unknown_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        _make().subset("dev")


# -- models ----------------------------------------------------------------------------------

def test_select_models_reorders_every_per_model_array() -> None:
    full = _make()
    sub = full.select_models(["large", "small"])
    assert sub.models == ("large", "small")
    cols = [2, 0]
    for name in PER_MODEL:
        np.testing.assert_array_equal(getattr(sub, name), getattr(full, name)[:, cols],
                                      err_msg=name)
    assert sub.responses is not None
    assert full.responses is not None
    assert sub.responses.tolist() == full.responses[:, cols].tolist()
    # per-prompt fields are untouched
    assert sub.ids == full.ids
    assert sub.prompts == full.prompts
    assert sub.task == full.task
    assert sub.split.tolist() == full.split.tolist()
    np.testing.assert_array_equal(sub.mean_quality(), full.mean_quality()[cols])


def test_select_models_with_an_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'huge'.*small, medium, large"):
        _make().select_models(["small", "huge"])


def test_model_index() -> None:
    ds = _make()
    assert [ds.model_index(m) for m in MODELS] == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"unknown model 'gpt'; this dataset has: "
                                          r"small, medium, large"):
        ds.model_index("gpt")


def test_mean_quality_and_cost_are_per_model_column_means() -> None:
    ds = _make(n=4)
    for j in range(ds.n_models):
        assert ds.mean_quality()[j] == pytest.approx(sum(ds.quality[:, j]) / 4)
        assert ds.mean_cost_usd()[j] == pytest.approx(sum(ds.cost_usd[:, j]) / 4)


def test_with_splits_replaces_only_the_split() -> None:
    ds = _make()
    new = ds.with_splits(np.array(["test"] * 6))
    assert set(new.split.tolist()) == {"test"}
    assert set(ds.split.tolist()) == set(SPLITS)
    np.testing.assert_array_equal(new.quality, ds.quality)


# -- splits ----------------------------------------------------------------------------------

def _counts(split: np.ndarray[Any, Any]) -> dict[str, int]:
    return {s: int((split == s).sum()) for s in SPLITS}


def test_random_split_default_proportions() -> None:
    split = random_split(1000, seed=0)
    assert split.shape == (1000,)
    assert _counts(split) == {"train": 600, "validation": 200, "test": 200}


def test_random_split_custom_proportions() -> None:
    assert _counts(random_split(200, seed=4, fractions=(0.5, 0.3, 0.2))) == {
        "train": 100, "validation": 60, "test": 40}
    assert _counts(random_split(50, fractions=(1.0, 0.0, 0.0))) == {
        "train": 50, "validation": 0, "test": 0}


def test_random_split_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    a = random_split(500, seed=7)
    b = random_split(500, seed=7)
    c = random_split(500, seed=8)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert _counts(a) == _counts(c)


def test_random_split_is_shuffled_not_contiguous() -> None:
    split = random_split(300, seed=0)
    # a contiguous cut would put every train prompt first
    assert set(split[:180].tolist()) != {"train"}


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.3, 0.2), (1.2, -0.1, -0.1),
                                       (0.3, 0.3, 0.3, 0.1)])
def test_random_split_rejects_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="fractions"):
        random_split(10, fractions=fractions)


def test_carve_validation_moves_a_fraction_of_train_and_leaves_test_alone() -> None:
    source = np.array(["train"] * 80 + ["test"] * 20)
    rng = np.random.default_rng(1)
    source = source[rng.permutation(100)]
    before = source.copy()
    out = carve_validation(source, seed=3)
    np.testing.assert_array_equal(source, before)  # input untouched
    was_test = source == "test"
    assert (out[was_test] == "test").all()
    assert (out[~was_test] != "test").all()
    assert _counts(out) == {"train": 64, "validation": 16, "test": 20}
    # only former train prompts became validation
    assert (source[out == "validation"] == "train").all()


def test_carve_validation_fraction_and_seed() -> None:
    source = np.array(["train"] * 50 + ["test"] * 50)
    assert _counts(carve_validation(source, fraction=0.5)) == {
        "train": 25, "validation": 25, "test": 50}
    assert carve_validation(source, fraction=0.0).tolist() == source.tolist()
    a = carve_validation(source, seed=11)
    assert a.tolist() == carve_validation(source, seed=11).tolist()
    assert a.tolist() != carve_validation(source, seed=12).tolist()


def test_carve_validation_keeps_existing_validation() -> None:
    source = np.array(["validation"] * 5 + ["train"] * 10 + ["test"] * 5)
    out = carve_validation(source, fraction=0.2)
    assert (out[:5] == "validation").all()
    assert _counts(out) == {"train": 8, "validation": 7, "test": 5}


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_carve_validation_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="validation fraction"):
        carve_validation(np.array(["train"] * 4), fraction=fraction)
