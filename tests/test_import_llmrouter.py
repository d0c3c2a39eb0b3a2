"""The importer of LLMRouter's routing data, on the real data and on broken copies."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast.data import canonical, detect_format, llmrouter
from routecast.data.dataset import Dataset
from routecast.data.pricing import Price, estimate_tokens
from routecast.errors import DataError, DataFormatError

FOLDER = "llmrouter-9model"
MODELS = ("codegemma-7b", "gemma-2-9b-it", "llama-3.1-8b-instruct",
          "llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1",
          "llama3-chatqa-1.5-70b", "llama3-chatqa-1.5-8b", "mistral-7b-instruct-v0.3",
          "qwen2.5-7b-instruct")


@pytest.fixture(scope="module")
def real(shared_data: Path) -> Dataset:
    return llmrouter.load(shared_data / FOLDER)


def _raw(shared_data: Path, split: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        (shared_data / FOLDER / "dcrouter_preprocessed" / f"{split}.json").read_text("utf-8"))
    return items


# -- the real data ---------------------------------------------------------------------------

def test_detects_the_folder(shared_data: Path) -> None:
    assert llmrouter.detect(shared_data / FOLDER)
    assert detect_format(shared_data / FOLDER) == "llmrouter"
    assert not llmrouter.detect(shared_data / "llm-cascades-zellinger")


def test_counts_ids_and_models(real: Dataset) -> None:
    assert (real.n_prompts, real.n_models) == (6108, 9)
    assert real.models == MODELS
    assert real.ids[0] == "train.0"
    assert real.ids[-1] == "test.499"
    assert len(set(real.prompts)) == 5989  # repeated questions, unique ids anyway
    assert real.meta["test_questions_also_in_train"] == 119
    assert real.latency_s is None
    assert real.confidence is None
    assert real.responses is None


def test_per_model_quality_matches_the_raw_json(shared_data: Path, real: Dataset) -> None:
    items = _raw(shared_data, "train") + _raw(shared_data, "test")
    expected = [sum(it["scores"][m] for it in items) / len(items) for m in MODELS]
    np.testing.assert_allclose(real.mean_quality(), expected, atol=1e-12)
    for i, it in enumerate(items):
        assert real.prompts[i] == it["question"]
        assert real.quality[i].tolist() == [it["scores"][m] for m in MODELS]


def test_tasks_come_from_the_query_files(shared_data: Path, real: Dataset) -> None:
    assert real.task is not None
    assert real.meta["join"]["unmatched"] == 0
    assert real.meta["join"]["ambiguous"] == 8
    test_tasks = Counter(t for t, s in zip(real.task, real.ids, strict=True)
                         if s.startswith("test."))
    queries = [json.loads(line) for line in
               (shared_data / FOLDER / "query_data" / "default_query_test.jsonl")
               .read_text("utf-8").splitlines()]
    by_text = {q["query"]: q["task_name"] for q in queries}
    assert test_tasks == Counter(by_text[it["question"]] for it in _raw(shared_data, "test"))
    assert len(set(real.task)) == 14


def test_costs_are_estimated_from_prices_and_lengths(shared_data: Path, real: Dataset) -> None:
    assert real.tokens_in is not None
    assert real.tokens_out is not None
    assert real.task is not None
    prices = json.loads((shared_data / FOLDER / "llm_candidates" / "default_llm.json")
                        .read_text("utf-8"))
    cost_meta = real.meta["cost"]
    assert cost_meta["estimated"] is True
    for i in (0, 1234, 5607, 5608, 6107):
        t_in = estimate_tokens(real.prompts[i])
        t_out = cost_meta["tokens_out_used_per_task"][real.task[i]]
        for j, m in enumerate(MODELS):
            p = prices[m]
            want = (t_in * p["input_price"] + t_out * p["output_price"]) / 1e6
            assert real.cost_usd[i, j] == pytest.approx(want, rel=1e-12)
            assert real.tokens_in[i, j] == t_in
            assert real.tokens_out[i, j] == t_out
    gsm = real.task.index("gsm8k")
    mmlu = real.task.index("mmlu")
    assert real.tokens_out[gsm, 0] == 220
    assert real.tokens_out[mmlu, 0] == 8
    assert cost_meta["prices_usd_per_mtok"]["gemma-2-9b-it"]["input"] == 0.1
    # the 49-70B models cost 4.5x the 7-8B ones at 0.90 vs 0.20 $/Mtok
    j_big, j_small = MODELS.index("llama3-chatqa-1.5-70b"), MODELS.index("codegemma-7b")
    np.testing.assert_allclose(real.cost_usd[:, j_big], 4.5 * real.cost_usd[:, j_small])


def test_source_split_kept_and_validation_seeded(shared_data: Path, real: Dataset) -> None:
    is_test = np.array([i.startswith("test.") for i in real.ids])
    assert (real.split[is_test] == "test").all()
    assert is_test.sum() == 500
    assert set(real.split[~is_test].tolist()) == {"train", "validation"}
    assert int((real.split == "validation").sum()) == round(0.2 * 5608)
    again = llmrouter.load(shared_data / FOLDER)
    assert (again.split == real.split).all()
    other = llmrouter.load(shared_data / FOLDER, seed=7)
    assert not (other.split == real.split).all()
    assert (other.split[is_test] == "test").all()


def test_round_trip_through_the_canonical_format(real: Dataset, tmp_path: Path) -> None:
    back = canonical.load(canonical.save(real, tmp_path / "llmrouter.jsonl"))
    assert back.models == real.models
    assert back.ids == real.ids
    assert back.prompts == real.prompts
    assert back.task == real.task
    assert (back.split == real.split).all()
    for name in ("quality", "cost_usd", "tokens_in", "tokens_out"):
        np.testing.assert_array_equal(getattr(back, name), getattr(real, name), err_msg=name)
    assert back.confidence is None
    assert real.confidence is None
    assert back.meta == real.meta


def test_overrides_for_prices_and_lengths(shared_data: Path, real: Dataset) -> None:
    ds = llmrouter.load(shared_data / FOLDER,
                        prices={"codegemma-7b": Price(1.0, 2.0, "test")},
                        tokens_out={"em_mc": 1, "math": 1000})
    assert ds.task is not None
    assert ds.tokens_out is not None
    i = ds.task.index("mmlu")
    assert ds.tokens_out[i, 0] == 1
    assert ds.tokens_out[ds.task.index("math"), 0] == 1000
    assert real.tokens_out is not None
    assert ds.cost_usd[i, 0] == pytest.approx((estimate_tokens(ds.prompts[i]) * 1 + 2) / 1e6)
    changed = ds.tokens_out[:, 0] != real.tokens_out[:, 0]
    em_mc = {"mmlu", "gpqa", "commonsense_qa", "openbook_qa", "arc_challenge",
             "agentverse-logicgrid"}
    assert {t for t, c in zip(ds.task, changed, strict=True) if c} == em_mc | {"math"}
    np.testing.assert_array_equal(ds.cost_usd[~changed, 1:], real.cost_usd[~changed, 1:])


# -- synthetic copies ------------------------------------------------------------------------

def _tiny(tmp_path: Path) -> Path:
    root = tmp_path / "llmrouter"
    for sub in ("dcrouter_preprocessed", "query_data", "llm_candidates"):
        (root / sub).mkdir(parents=True)
    for split, n in (("train", 5), ("test", 2)):
        items = [{"question": f"{split} q{i}", "scores": {"m-a": 1.0, "m-b": 0.5 * (i % 2)}}
                 for i in range(n)]
        (root / "dcrouter_preprocessed" / f"{split}.json").write_text(json.dumps(items))
        lines = [json.dumps({"task_name": "quiz", "query": f"{split} q{i}", "metric": "em_mc"})
                 for i in range(n)]
        (root / "query_data" / f"default_query_{split}.jsonl").write_text("\n".join(lines))
    prices = {"m-a": {"input_price": 1.0, "output_price": 2.0, "model": "org/m-a"},
              "renamed": {"input_price": 3.0, "output_price": 4.0, "model": "org/m-b"}}
    (root / "llm_candidates" / "default_llm.json").write_text(json.dumps(prices))
    return root


def _edit(root: Path, split: str, change: Any) -> Path:
    file = root / "dcrouter_preprocessed" / f"{split}.json"
    items = json.loads(file.read_text())
    change(items)
    file.write_text(json.dumps(items))
    return file


def test_tiny_copy_loads_and_maps_prices_through_the_api_id(tmp_path: Path) -> None:
    ds = llmrouter.load(_tiny(tmp_path))
    assert ds.models == ("m-a", "m-b")
    assert ds.n_prompts == 7
    assert ds.ids == ("train.0", "train.1", "train.2", "train.3", "train.4", "test.0", "test.1")
    t_in = estimate_tokens("train q0")
    assert ds.cost_usd[0].tolist() == pytest.approx([(t_in * 1 + 8 * 2) / 1e6,
                                                     (t_in * 3 + 8 * 4) / 1e6])


def test_unmatched_question_is_kept_as_unknown_and_counted(tmp_path: Path) -> None:
    root = _tiny(tmp_path)
    _edit(root, "train", lambda items: items[2].__setitem__("question", "never asked"))
    ds = llmrouter.load(root)
    assert ds.task is not None
    assert ds.tokens_out is not None
    assert ds.task[2] == "unknown"
    assert ds.meta["join"]["unmatched"] == 1
    assert ds.tokens_out[2, 0] == llmrouter.DEFAULT_TOKENS_OUT
    assert ds.meta["cost"]["tokens_out_defaulted"] == 1


@pytest.mark.parametrize(("change", "expected"), [
    (lambda items: items[1].pop("scores"), r"item 1: has no 'scores' object"),
    (lambda items: items[3]["scores"].pop("m-b"), r"item 3: scores models \['m-b'\] missing"),
    (lambda items: items[3]["scores"].__setitem__("m-c", 1.0), r"\['m-c'\] unexpected"),
    (lambda items: items[4]["scores"].__setitem__("m-a", 1.5),
     r"item 4: score of 'm-a' is 1.5, outside \[0, 1\]"),
    (lambda items: items[0]["scores"].__setitem__("m-b", "high"),
     r"item 0: score of 'm-b' is 'high', not a number"),
    (lambda items: items[2].pop("question"), r"item 2: has no 'question' string"),
])
def test_malformed_items_name_file_item_and_problem(tmp_path: Path, change: Any,
                                                    expected: str) -> None:
    file = _edit(_tiny(tmp_path), "train", change)
    with pytest.raises(DataFormatError, match=expected) as err:
        llmrouter.load(file.parent.parent)
    assert str(file) in str(err.value)


def test_missing_price_is_named_and_can_be_supplied(tmp_path: Path) -> None:
    root = _tiny(tmp_path)
    file = root / "llm_candidates" / "default_llm.json"
    file.write_text(json.dumps({"m-a": {"input_price": 1.0, "output_price": 2.0}}))
    with pytest.raises(DataFormatError, match="no price for the scored model 'm-b'") as err:
        llmrouter.load(root)
    assert str(file) in str(err.value)
    assert "Fix:" in str(err.value)
    ds = llmrouter.load(root, prices={"m-b": Price(0.0, 0.0)})
    assert (ds.cost_usd[:, 1] == 0).all()


def test_bad_price_and_bad_json_are_named(tmp_path: Path) -> None:
    root = _tiny(tmp_path)
    prices = root / "llm_candidates" / "default_llm.json"
    prices.write_text(json.dumps({"m-a": {"input_price": "free", "output_price": 1},
                                  "m-b": {"input_price": 1, "output_price": 1}}))
    with pytest.raises(DataFormatError, match="entry 'm-a' needs non-negative numbers"):
        llmrouter.load(root)
    scores = root / "dcrouter_preprocessed" / "test.json"
    scores.write_text("[{not json")
    with pytest.raises(DataFormatError, match="cannot be read as JSON") as err:
        llmrouter.load(root)
    assert str(scores) in str(err.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    root = _tiny(tmp_path)
    (root / "query_data" / "default_query_test.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"default_query_test\.jsonl: is missing"):
        llmrouter.load(root)
    (root / "dcrouter_preprocessed" / "test.json").unlink()
    assert llmrouter.detect(root)  # train.json alone still looks like LLMRouter data
    with pytest.raises(DataFormatError, match=r"test\.json: is missing"):
        llmrouter.load(root)
    shutil.rmtree(root / "llm_candidates")
    (root / "query_data" / "default_query_test.jsonl").write_text("")
    (root / "dcrouter_preprocessed" / "test.json").write_text("[]")
    with pytest.raises(DataFormatError, match="non-empty JSON array"):
        llmrouter.load(root)
    (root / "dcrouter_preprocessed" / "test.json").write_text(
        '[{"question": "test q0", "scores": {"m-a": 1.0, "m-b": 0.0}}]')
    with pytest.raises(DataFormatError, match=r"default_llm\.json: is missing"):
        llmrouter.load(root)
    with pytest.raises(DataError, match="not a folder"):
        llmrouter.load(tmp_path / "nowhere")


def test_bad_query_line_is_named(tmp_path: Path) -> None:
    root = _tiny(tmp_path)
    file = root / "query_data" / "default_query_train.jsonl"
    file.write_text(file.read_text() + '\n{"query": "x"}\n')
    with pytest.raises(DataFormatError, match=r"default_query_train.jsonl:6: needs string"):
        llmrouter.load(root)


def test_bad_tokens_out_override(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tokens_out"):
        llmrouter.load(_tiny(tmp_path), tokens_out={"em_mc": -1})
