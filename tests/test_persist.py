"""Routers saved to a folder and loaded back predict exactly as before, without pickle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routecast.data.dataset import Dataset
from routecast.errors import DataFormatError
from routecast.policy import Policy
from routecast.routers import make_router, router_names
from routecast.routers.persist import ARRAYS_FILE, META_FILE, load_router, save_router
from tests.toy import toy_dataset


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset(160)


@pytest.mark.parametrize("name", router_names())
def test_round_trip_predicts_identically(name: str, data: Dataset, tmp_path: Path) -> None:
    train = data.subset("train")
    router = make_router(name).fit(train)
    prompts = list(train.prompts if router.evaluation_only else data.subset("test").prompts)
    save_router(router, tmp_path / name, policy=Policy(3.5), calibration={"target": "x"})
    loaded, policy = load_router(tmp_path / name)
    assert type(loaded) is type(router)
    assert loaded.models_ == router.models_
    np.testing.assert_array_equal(loaded.predict(prompts), router.predict(prompts))
    np.testing.assert_array_equal(loaded.predict_cost(prompts), router.predict_cost(prompts))
    assert policy == Policy(3.5)


def test_arrays_load_without_pickle(data: Dataset, tmp_path: Path) -> None:
    save_router(make_router("knn").fit(data), tmp_path)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_loading_a_linear_router_does_not_import_torch(data: Dataset, tmp_path: Path) -> None:
    save_router(make_router("linear").fit(data), tmp_path, policy=Policy(1.0))
    code = ("import sys; from routecast.routers.persist import load_router; "
            f"r, p = load_router({str(tmp_path)!r}); print(r.route(['hello there'], p)); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[1] == "False"


def test_bad_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="routecast fit"):
        load_router(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(DataFormatError, match="JSON"):
        load_router(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataFormatError, match="not a routecast router"):
        load_router(tmp_path)


def test_missing_array_is_reported_not_raised_raw(data: Dataset, tmp_path: Path) -> None:
    save_router(make_router("linear").fit(data), tmp_path)
    np.savez(tmp_path / ARRAYS_FILE)  # arrays lost
    with pytest.raises(DataFormatError, match="inconsistent router state"):
        load_router(tmp_path)
