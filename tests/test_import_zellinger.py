"""The importer of Zellinger & Thomson's cascade results, on the real data and on broken copies."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast.data import canonical, detect_format, zellinger
from routecast.data.dataset import Dataset
from routecast.errors import DataError, DataFormatError

FOLDER = "llm-cascades-zellinger"
MODELS = ("llama3.2-1b", "llama3.2-3b", "llama3.1-8b", "llama3.1-70b", "llama3.1-405b",
          "gpt-4o-mini", "qwen2.5-32b-coder-instruct", "qwen2.5-72b-instruct", "gpt-4o")
DATASETS = ("gsm8k", "medmcqa", "mmlu", "triviaqa", "truthfulqa")


@pytest.fixture(scope="module")
def real(shared_data: Path) -> Dataset:
    return zellinger.load(shared_data / FOLDER)


@pytest.fixture(scope="module")
def flat(shared_data: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The derived flat CSV, read with the csv module: (id, model) -> row."""
    with gzip.open(shared_data / FOLDER / "flat_outcomes_train.csv.gz", "rt",
                   encoding="utf-8", newline="") as f:
        return {(f"{r['dataset']}.{r['split']}.{r['query_idx']}", r["model"]): r
                for r in csv.DictReader(f)}


# -- the real data ---------------------------------------------------------------------------

def test_detects_the_folder_and_its_chain_results(shared_data: Path) -> None:
    assert zellinger.detect(shared_data / FOLDER)
    assert zellinger.detect(shared_data / FOLDER / "chain_results")
    assert detect_format(shared_data / FOLDER) == "cascades"
    assert not zellinger.detect(shared_data / "llmrouter-9model")


def test_counts_models_and_tasks(real: Dataset) -> None:
    assert (real.n_prompts, real.n_models) == (1485, 9)
    assert real.models == MODELS
    assert real.task is not None
    counts = {t: real.task.count(t) for t in DATASETS}
    assert counts == {"gsm8k": 300, "medmcqa": 300, "mmlu": 285, "triviaqa": 300,
                      "truthfulqa": 300}
    assert len(set(real.ids)) == 1485
    assert real.ids[0] == "gsm8k.train.0"
    assert set(real.meta["system_prompts"]) == set(DATASETS)
    assert "Question:" in real.prompts[real.ids.index("mmlu.train.0")]


def test_per_model_accuracy_matches_the_flat_csv(
        real: Dataset, flat: dict[tuple[str, str], dict[str, str]]) -> None:
    assert len(flat) == 1485 * 9
    hits: dict[str, list[float]] = defaultdict(list)
    for (_, model), row in flat.items():
        hits[model].append(1.0 if row["correct"] == "True" else 0.0)
    expected = np.array([np.mean(hits[m]) for m in real.models])
    np.testing.assert_allclose(real.mean_quality(), expected, atol=1e-12)
    # a few figures by hand, as a sanity check of the source itself
    acc = dict(zip(real.models, real.mean_quality(), strict=True))
    assert acc["llama3.2-1b"] < acc["llama3.1-8b"] < acc["llama3.1-405b"]
    assert acc["gpt-4o-mini"] < acc["gpt-4o"]


def test_every_cell_matches_the_flat_csv(
        real: Dataset, flat: dict[tuple[str, str], dict[str, str]]) -> None:
    assert real.latency_s is not None
    assert real.tokens_in is not None
    assert real.tokens_out is not None
    assert real.confidence is not None
    assert real.responses is not None
    for i, pid in enumerate(real.ids):
        for j, model in enumerate(real.models):
            row = flat[pid, model]
            assert real.quality[i, j] == (row["correct"] == "True")
            assert real.cost_usd[i, j] == pytest.approx(float(row["cost_usd"]), rel=1e-12)
            assert real.latency_s[i, j] == pytest.approx(float(row["latency_ms"]) / 1000)
            assert real.tokens_in[i, j] == int(row["tokens_in"])
            assert real.tokens_out[i, j] == int(row["tokens_out"])
            assert real.confidence[i, j] == pytest.approx(math.exp(float(row["raw_confidence"])))
            assert real.responses[i, j] == row["answer"]


def test_latency_tokens_and_confidence_are_in_range(real: Dataset) -> None:
    assert real.latency_s is not None
    assert real.tokens_in is not None
    assert real.tokens_out is not None
    assert real.confidence is not None
    assert np.isfinite(real.latency_s).all()
    assert (real.latency_s > 0).all()
    assert real.latency_s.min() > 0.01  # seconds, not milliseconds
    assert (real.tokens_in >= 1).all()
    assert (real.tokens_out >= 0).all()
    assert (real.tokens_in == np.round(real.tokens_in)).all()
    assert np.isfinite(real.confidence).all()
    assert real.confidence.min() >= 0
    assert real.confidence.max() <= 1
    # -inf raw confidences became exactly 0; the rest are invertible
    assert (real.confidence == 0).sum() == real.meta["confidence"]["raw_neg_inf"] > 0
    assert real.cost_usd.min() > 0
    # GSM8K answers are reasoned (long); MMLU answers are one letter
    assert real.task is not None
    gsm = np.array([t == "gsm8k" for t in real.task])
    assert real.tokens_out[gsm].mean() > 100 > real.tokens_out[~gsm].mean()


def test_split_is_drawn_and_seeded_because_test_files_are_absent(shared_data: Path,
                                                                  real: Dataset) -> None:
    counts = {s: int((real.split == s).sum()) for s in ("train", "validation", "test")}
    assert counts == {"train": 891, "validation": 297, "test": 297}
    assert "drawn at random" in real.meta["split"]["rule"]
    again = zellinger.load(shared_data / FOLDER)
    assert (again.split == real.split).all()
    other = zellinger.load(shared_data / FOLDER, seed=1)
    assert not (other.split == real.split).all()


def test_round_trip_through_the_canonical_format(real: Dataset, tmp_path: Path) -> None:
    back = canonical.load(canonical.save(real, tmp_path / "cascades.jsonl.gz"))
    assert back.models == real.models
    assert back.ids == real.ids
    assert back.prompts == real.prompts
    assert back.task == real.task
    assert (back.split == real.split).all()
    for name in ("quality", "cost_usd", "latency_s", "tokens_in", "tokens_out", "confidence"):
        np.testing.assert_array_equal(getattr(back, name), getattr(real, name), err_msg=name)
    assert back.responses is not None
    assert real.responses is not None
    assert (back.responses == real.responses).all()
    assert back.meta == real.meta


# -- synthetic files -------------------------------------------------------------------------

def _chain(models: list[str], n: int, *, prompts: list[str] | None = None) -> dict[str, Any]:
    prompts = prompts or [f"Question {i}?" for i in range(n)]
    return {
        "chain": "Chain(models=[Model(model_name=x, conf_signal=ModelIntrinsicLogProb)])",
        "system_prompts": ["Answer briefly."] * n,
        "user_prompts": prompts,
        "model_answers": {m: [f"{m} says {i}" for i in range(n)] for m in models},
        "model_correctness": {m: [i % 2 == 0 for i in range(n)] for m in models},
        "model_costs": {m: [1e-5 * (i + 1) for i in range(n)] for m in models},
        "model_latencies": {m: [100.0 + i for i in range(n)] for m in models},
        "model_tokens": {m: [{"in": 20, "out": 3} for _ in range(n)] for m in models},
        "raw_confidences": {m: [-0.5, float("-inf"), 0.0][:n] + [-1.0] * (n - 3)
                            for m in models},
        "eval_audits": {m: ["N/A"] * n for m in models},
    }


def _write(folder: Path, dataset: str, chain: str, split: str, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{dataset}_full_{chain}_chain_results_{split}.json.gz"
    with gzip.open(file, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    return file


def _tiny(tmp_path: Path, splits: tuple[str, ...] = ("train",), n: int = 10) -> Path:
    results = tmp_path / "set" / "chain_results"
    for split in splits:
        for dataset in ("alpha", "beta"):
            _write(results, dataset, "small", split, _chain(["s1", "s2"], n))
            _write(results, dataset, "big_one", split, _chain(["b1"], n))
    return tmp_path / "set"


def test_tiny_set_joins_chains_and_transforms_values(tmp_path: Path) -> None:
    ds = zellinger.load(_tiny(tmp_path))
    assert ds.models == ("b1", "s1", "s2")  # chains in name order, models in file order
    assert ds.n_prompts == 20
    assert ds.ids[0] == "alpha.train.0"
    assert ds.latency_s is not None
    assert ds.confidence is not None
    assert ds.latency_s[0, 0] == pytest.approx(0.1)
    np.testing.assert_allclose(ds.confidence[:3, 0], [math.exp(-0.5), 0.0, 1.0])
    np.testing.assert_allclose(np.log(ds.confidence[:1]), -0.5)
    assert ds.quality[:2, 0].tolist() == [1.0, 0.0]
    assert ds.meta["system_prompts"] == {"alpha": "Answer briefly.", "beta": "Answer briefly."}
    assert ds.meta["confidence"]["signal"] == {"alpha": "ModelIntrinsicLogProb",
                                               "beta": "ModelIntrinsicLogProb"}


def test_train_and_test_files_keep_the_source_split(tmp_path: Path) -> None:
    ds = zellinger.load(_tiny(tmp_path, ("train", "test")), seed=3)
    src = np.array([i.split(".")[1] for i in ds.ids])
    assert (ds.split[src == "test"] == "test").all()
    assert set(ds.split[src == "train"].tolist()) == {"train", "validation"}
    assert int((ds.split == "validation").sum()) == 4  # 20 % of 20 train queries
    assert "kept" in ds.meta["split"]["rule"]


def test_a_dataset_without_test_files_stays_in_train_and_validation(tmp_path: Path) -> None:
    folder = _tiny(tmp_path, ("train", "test"))
    for chain in ("small", "big_one"):
        (folder / "chain_results" / f"beta_full_{chain}_chain_results_test.json.gz").unlink()
    ds = zellinger.load(folder / "chain_results")
    assert ds.name == "set"
    assert ds.task is not None
    beta = np.array([t == "beta" for t in ds.task])
    assert beta.sum() == 10
    assert "test" not in ds.split[beta].tolist()
    assert (ds.split == "test").sum() == 10


def test_varying_system_prompts_are_prefixed(tmp_path: Path) -> None:
    folder = _tiny(tmp_path)
    for chain, models in (("small", ["s1", "s2"]), ("big_one", ["b1"])):
        data = _chain(models, 10)
        data["system_prompts"] = [f"System {i}." for i in range(10)]
        _write(folder / "chain_results", "alpha", chain, "train", data)
    ds = zellinger.load(folder)
    assert ds.meta["system_prompts"]["alpha"] is None
    assert ds.prompts[0] == "System 0.\n\nQuestion 0?"
    assert ds.prompts[10] == "Question 0?"


def test_flat_csv_alone_is_not_detected(tmp_path: Path) -> None:
    (tmp_path / "flat_outcomes.csv.gz").write_bytes(gzip.compress(b"dataset,chain\n"))
    assert not zellinger.detect(tmp_path)
    with pytest.raises(DataError, match="holds no chain_results"):
        zellinger.load(tmp_path)


def _broken(tmp_path: Path, change: Any) -> Path:
    folder = _tiny(tmp_path)
    data = _chain(["s1", "s2"], 10)
    change(data)
    return _write(folder / "chain_results", "beta", "small", "train", data)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("model_costs"), "lacks the key 'model_costs'"),
    (lambda d: d.pop("user_prompts"), "lacks the key 'user_prompts'"),
    (lambda d: d["model_latencies"]["s2"].pop(), r"model_latencies\['s2'\] has 9 entries.*10"),
    (lambda d: d["model_correctness"]["s1"].__setitem__(4, 1),
     r"model_correctness\['s1'\]\[4\] is 1, not true/false"),
    (lambda d: d["model_costs"]["s1"].__setitem__(2, "cheap"),
     r"model_costs\['s1'\]\[2\] is 'cheap', not a number"),
    (lambda d: d["model_tokens"]["s1"].__setitem__(1, {"in": 3}),
     r"model_tokens\['s1'\]\[1\]\['out'\] is None"),
    (lambda d: d["raw_confidences"]["s2"].__setitem__(5, 0.7),
     r"raw_confidences\['s2'\]\[5\] is 0.7, above 0"),
    (lambda d: d["model_correctness"].pop("s2"), "'model_correctness' lists models"),
    (lambda d: d["user_prompts"].__setitem__(7, "Another question?"),
     "'user_prompts' differs from .* at query 7"),
])
def test_malformed_chain_file_names_file_key_and_index(tmp_path: Path, change: Any,
                                                       expected: str) -> None:
    file = _broken(tmp_path, change)
    with pytest.raises(DataFormatError, match=expected) as err:
        zellinger.load(file.parent.parent)
    assert file.name in str(err.value)


def test_unreadable_gzip_names_the_file(tmp_path: Path) -> None:
    folder = _tiny(tmp_path)
    bad = folder / "chain_results" / "beta_full_small_chain_results_train.json.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="cannot be read as gzip") as err:
        zellinger.load(folder)
    assert bad.name in str(err.value)
    assert "Fix:" in str(err.value)


def test_truncated_gzip_and_bad_json_name_the_file(tmp_path: Path) -> None:
    folder = _tiny(tmp_path)
    bad = folder / "chain_results" / "beta_full_small_chain_results_train.json.gz"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataFormatError, match=bad.name):
        zellinger.load(folder)
    bad.write_bytes(gzip.compress(b"{not json"))
    with pytest.raises(DataFormatError, match="is not valid JSON") as err:
        zellinger.load(folder)
    assert bad.name in str(err.value)


def test_missing_chain_file_is_named(tmp_path: Path) -> None:
    folder = _tiny(tmp_path)
    (folder / "chain_results" / "beta_full_big_one_chain_results_train.json.gz").unlink()
    with pytest.raises(DataFormatError, match=r"beta_full_big_one_chain_results_train\.json\.gz"):
        zellinger.load(folder)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        zellinger.load(tmp_path / "nowhere")
