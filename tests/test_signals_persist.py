"""A learned scorer saved without pickle scores exactly as it did before it was saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from routecast.data import load_dataset
from routecast.data.dataset import Dataset
from routecast.errors import DataFormatError, NotFittedError
from routecast.signals.persist import ARRAYS_FILE, META_FILE, has_scorer, load_scorer, save_scorer

if TYPE_CHECKING:
    from routecast.signals.learned import LearnedScorer

MODELS = ["llama3.2-1b", "llama3.1-70b"]


def new_scorer(**params: Any) -> LearnedScorer:
    """An unfitted learned scorer, imported only now: importing its module registers the
    signal, and the registry keeps the order of first imports, which other tests read."""
    from routecast.signals.learned import LearnedScorer

    return LearnedScorer(**params)


@pytest.fixture(scope="module")
def cascades(shared_data: Path) -> Dataset:
    """Two models of the recorded cascade data: real answers, confidences, soft labels."""
    return load_dataset(shared_data / "llm-cascades-zellinger").select_models(MODELS)


def test_a_loaded_scorer_scores_identically(cascades: Dataset, tmp_path: Path) -> None:
    scorer = new_scorer().fit(cascades.subset("train"))
    assert scorer.uses_confidence_
    save_scorer(scorer, tmp_path)
    assert has_scorer(tmp_path) and has_scorer(tmp_path / META_FILE)
    loaded = load_scorer(tmp_path / META_FILE)  # the file itself works as well as its folder
    assert loaded.models_ == scorer.models_ and loaded.get_params() == scorer.get_params()
    test = cascades.subset("test")
    np.testing.assert_array_equal(loaded.score(test), scorer.score(test))
    assert test.responses is not None and test.confidence is not None
    prompts, answers = list(test.prompts[:20]), list(test.responses[:20, 0])
    conf = test.confidence[:20, 0]
    np.testing.assert_array_equal(loaded.score_responses(prompts, MODELS[0], answers, conf),
                                  scorer.score_responses(prompts, MODELS[0], answers, conf))
    # nothing in the folder needs pickle to be read
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_constant_models_and_no_confidence_round_trip(cascades: Dataset, tmp_path: Path) -> None:
    from dataclasses import replace

    train = cascades.subset("train")
    quality = train.quality.copy()
    quality[:, 1] = 1.0  # the large model always right: nothing to learn, a constant
    train = replace(train, quality=quality)
    scorer = new_scorer(use_confidence=False, C=0.5).fit(train)
    assert scorer.estimators_[1] == 1.0 and not scorer.uses_confidence_
    loaded = load_scorer(save_scorer(scorer, tmp_path))
    assert loaded.C == 0.5 and loaded.estimators_[1] == 1.0
    val = cascades.subset("validation")
    np.testing.assert_array_equal(loaded.score(val), scorer.score(val))


def test_bad_folders_say_what_is_wrong(tmp_path: Path, cascades: Dataset) -> None:
    with pytest.raises(NotFittedError):
        save_scorer(new_scorer(), tmp_path / "unfitted")
    with pytest.raises(DataFormatError, match=r"has no scorer\.json"):
        load_scorer(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "routecast-router"}))
    with pytest.raises(DataFormatError, match="not a routecast scorer file"):
        load_scorer(tmp_path)

    saved = save_scorer(new_scorer(use_confidence=False).fit(cascades.subset("validation")),
                        tmp_path / "ok")
    meta = json.loads((saved / META_FILE).read_text())
    meta["state"]["prompt_vectorizer"]["terms"].pop()  # one term fewer than idf weights
    (saved / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="inconsistent scorer state"):
        load_scorer(saved)
    (saved / ARRAYS_FILE).unlink()
    with pytest.raises(DataFormatError, match=r"scorer\.npz: cannot be read"):
        load_scorer(saved)
