"""The RouteLLM importer, on RouteLLM's real eval files and on small broken copies.

Expected figures are recomputed here from the files with the csv/json modules, independently
of the importer, so a wrong column or a shifted row shows up as a mismatch.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast.data import canonical, detect_format, routellm
from routecast.data.dataset import Dataset
from routecast.data.pricing import DEFAULT_PRICES, Price, estimate_tokens
from routecast.errors import DataError, DataFormatError

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"


# -- the real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return shared_data / "routellm-evals"


@pytest.fixture(scope="module")
def ds(root: Path) -> Dataset:
    return routellm.load(root)


def _rows(ds: Dataset, prefix: str) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return np.array([i.startswith(prefix) for i in ds.ids])


def _csv_dicts(file: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with open(file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _accuracy(rows: list[dict[str, str]], model: str) -> float:
    return sum(r[model] == "True" for r in rows) / len(rows)


def test_detect(root: Path, tmp_path: Path) -> None:
    assert routellm.detect(root)
    for bench in routellm.BENCHMARKS:
        assert routellm.detect(root / bench)
    assert not routellm.detect(root / "mmlu" / "responses")
    assert not routellm.detect(tmp_path)
    assert detect_format(root) == "routellm"


def test_counts_and_ids(ds: Dataset) -> None:
    dropped = ds.meta["dropped"]["prompts"]
    assert ds.meta["benchmarks"] == {"mmlu": 14_042, "gsm8k": 1_319, "mt_bench": 160 - dropped}
    assert _rows(ds, "mmlu/").sum() == 14_042
    assert _rows(ds, "gsm8k/").sum() == 1_319
    assert _rows(ds, "mt_bench/").sum() == 80 * 2 - dropped
    assert ds.n_prompts == 14_042 + 1_319 + 160 - dropped
    assert len(set(ds.ids)) == ds.n_prompts
    assert set(ds.models) == {MIXTRAL, GPT4}
    assert ds.task is not None
    tasks = set(ds.task)
    assert len({t for t in tasks if t.startswith("mmlu/")}) == 57
    assert "gsm8k" in tasks
    assert {t for t in tasks if t.startswith("mt_bench/")} == {
        f"mt_bench/{c}" for c in ("writing", "roleplay", "reasoning", "math", "coding",
                                  "extraction", "stem", "humanities")}
    assert "mmlu/anatomy/0" in ds.ids
    assert "gsm8k/1318" in ds.ids
    assert "mt_bench/81/turn1" in ds.ids
    assert "mt_bench/81/turn2" in ds.ids


def test_mmlu_accuracy_matches_csv(ds: Dataset, root: Path) -> None:
    rows = [r for f in sorted((root / "mmlu" / "responses").glob("mmlu_*.csv"))
            for r in _csv_dicts(f)]
    assert len(rows) == 14_042
    mask = _rows(ds, "mmlu/")
    assert [ds.prompts[i] for i in np.flatnonzero(mask)] == [r["prompt"] for r in rows]
    for model, expected in ((MIXTRAL, 0.681), (GPT4, 0.806)):
        acc = float(ds.quality[mask, ds.model_index(model)].mean())
        assert acc == pytest.approx(_accuracy(rows, model), abs=1e-12)
        assert acc == pytest.approx(expected, abs=5e-4)


def test_gsm8k_accuracy_and_tokens_match_csv(ds: Dataset, root: Path) -> None:
    rows = _csv_dicts(root / "gsm8k" / "gsm8k_responses.csv")
    mask = _rows(ds, "gsm8k/")
    assert ds.tokens_out is not None
    assert ds.responses is not None
    for model, expected in ((MIXTRAL, 0.638), (GPT4, 0.857)):
        j = ds.model_index(model)
        acc = float(ds.quality[mask, j].mean())
        assert acc == pytest.approx(_accuracy(rows, model), abs=1e-12)
        assert acc == pytest.approx(expected, abs=5e-4)
        texts = [r[model + "_response"] for r in rows]
        assert list(ds.responses[mask, j]) == texts
        assert ds.tokens_out[mask, j].tolist() == [float(estimate_tokens(t)) for t in texts]


def test_mt_bench_quality_is_judge_score_over_ten(ds: Dataset, root: Path) -> None:
    scores: dict[str, dict[str, float]] = {}
    with open(root / "mt_bench" / "judgements.jsonl", encoding="utf-8") as f:
        for line in f:
            j = json.loads(line)
            pid = f"mt_bench/{j['question_id']}/turn{j['turn']}"
            scores.setdefault(pid, {})[j["model"]] = float(j["score"])
    assert ds.responses is not None
    assert ds.tokens_out is not None
    for i in np.flatnonzero(_rows(ds, "mt_bench/")):
        for j, model in enumerate(ds.models):
            assert ds.quality[i, j] == pytest.approx(scores[ds.ids[i]][model] / 10)
            answer = ds.responses[i, j]
            assert isinstance(answer, str)
            assert answer.strip()
            assert "[The End of" not in answer
            assert "### User:" not in answer
            assert ds.tokens_out[i, j] == estimate_tokens(answer)


def test_mt_bench_turn_two_prompt_joins_both_turns(ds: Dataset, root: Path) -> None:
    with open(root / "mt_bench" / "question.jsonl", encoding="utf-8") as f:
        questions = {q["question_id"]: q for q in map(json.loads, f)}
    q = questions[81]
    one, two = ds.ids.index("mt_bench/81/turn1"), ds.ids.index("mt_bench/81/turn2")
    assert ds.prompts[one] == q["turns"][0]
    assert ds.prompts[two] == q["turns"][0] + "\n\n" + q["turns"][1]
    assert ds.task is not None
    assert ds.task[two] == "mt_bench/writing"


def test_costs_are_estimated_from_tokens_and_prices(ds: Dataset) -> None:
    assert ds.tokens_in is not None
    assert ds.tokens_out is not None
    assert not np.isnan(ds.tokens_in).any()
    assert not np.isnan(ds.tokens_out).any()
    assert (ds.cost_usd > 0).all()
    assert (ds.cost_usd[:, ds.model_index(GPT4)] > ds.cost_usd[:, ds.model_index(MIXTRAL)]).all()
    mmlu = _rows(ds, "mmlu/")
    assert (ds.tokens_out[mmlu] == routellm.MMLU_TOKENS_OUT).all()
    assert ds.responses is not None
    assert all(r is None for r in ds.responses[mmlu].ravel())
    i = ds.ids.index("gsm8k/5")
    for j, model in enumerate(ds.models):
        assert ds.tokens_in[i, j] == estimate_tokens(ds.prompts[i])
        expected = DEFAULT_PRICES[model].cost_usd(ds.tokens_in[i, j], ds.tokens_out[i, j])
        assert ds.cost_usd[i, j] == pytest.approx(expected)
    assert ds.meta["cost_estimated"] is True
    assert ds.meta["prices"][GPT4]["input_usd_per_mtok"] == DEFAULT_PRICES[GPT4].input_usd_per_mtok
    assert all(p["source"] for p in ds.meta["prices"].values())
    json.dumps(ds.meta)  # the canonical writer needs it serialisable


def test_custom_and_missing_prices(root: Path) -> None:
    cheap = {GPT4: Price(1.0, 1.0, "test"), MIXTRAL: Price(1.0, 1.0, "test")}
    ds = routellm.load_gsm8k(root, prices=cheap)
    assert ds.tokens_in is not None
    assert ds.tokens_out is not None
    np.testing.assert_allclose(ds.cost_usd, (ds.tokens_in + ds.tokens_out) / 1e6)
    assert ds.meta["prices"][GPT4]["source"] == "test"
    with pytest.raises(DataError, match="no price known"):
        routellm.load_gsm8k(root, prices={GPT4: Price(1.0, 1.0, "test")})


def test_splits_are_seeded(root: Path, ds: Dataset) -> None:
    again = routellm.load(root)
    other = routellm.load(root, seed=1)
    assert (again.split == ds.split).all()
    assert (other.split != ds.split).any()
    counts = {s: int((ds.split == s).sum()) for s in ("train", "validation", "test")}
    assert counts["train"] == round(0.6 * ds.n_prompts)
    assert counts["validation"] == round(0.2 * ds.n_prompts)


def test_one_benchmark_from_its_folder_or_the_root(root: Path, ds: Dataset) -> None:
    sub = routellm.load(root / "gsm8k")
    assert sub.n_prompts == 1_319
    assert all(i.startswith("gsm8k/") for i in sub.ids)
    assert sub.name == "routellm-gsm8k"
    forced = routellm.load_gsm8k(root)
    assert forced.ids == sub.ids
    assert (forced.quality == sub.quality).all()
    mmlu = routellm.load_mmlu(root / "mmlu")
    assert mmlu.n_prompts == 14_042
    assert mmlu.responses is None
    mt = routellm.load_mt_bench(root)
    assert mt.ids == tuple(i for i in ds.ids if i.startswith("mt_bench/"))
    assert set(mt.models) == {MIXTRAL, GPT4}
    with pytest.raises(DataError, match="no RouteLLM gsm8k"):
        routellm.load_gsm8k(root / "mmlu")


def test_contaminated_prompts_kept_or_excluded(root: Path, ds: Dataset) -> None:
    info = ds.meta["contaminated"]
    assert info["count"] == len(info["ids"]) > 0
    assert info["excluded"] is False
    assert set(info["ids"]) <= set(ds.ids)
    # both turns of a flagged MT-Bench question are flagged
    mt = [i for i in info["ids"] if i.startswith("mt_bench/")]
    assert {i.replace("turn1", "turn2") for i in mt if i.endswith("turn1")} <= set(mt)
    clean = routellm.load(root, exclude_contaminated=True)
    assert clean.n_prompts == ds.n_prompts - info["count"]
    assert not set(info["ids"]) & set(clean.ids)
    assert clean.meta["contaminated"]["excluded"] is True


def test_round_trip_through_canonical(ds: Dataset, tmp_path: Path) -> None:
    back = canonical.load(canonical.save(ds, tmp_path / "routellm.jsonl.gz"))
    assert back.models == ds.models
    assert back.ids == ds.ids
    assert back.prompts == ds.prompts
    assert back.task == ds.task
    for name in ("quality", "cost_usd", "tokens_in", "tokens_out", "split"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name), err_msg=name)
    assert back.responses is not None
    assert ds.responses is not None
    assert back.responses.tolist() == ds.responses.tolist()
    assert back.meta == ds.meta


def test_loading_everything_is_fast(root: Path) -> None:
    start = time.perf_counter()
    routellm.load(root)
    assert time.perf_counter() - start < 5.0


# -- small synthetic copies ------------------------------------------------------------------


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]], extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra, encoding="utf-8")
    return path


def _judgement(qid: int, model: str, turn: int, score: float, answer: str) -> dict[str, Any]:
    if turn == 1:
        prompt = (f"[Question]\nQ{qid}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                  "[The End of Assistant's Answer]")
    else:
        prompt = ("<|The Start of Assistant A's Conversation with User|>\n\n### User:\nQ\n\n"
                  f"### Assistant A:\nfirst\n\n### User:\nQ2\n\n### Assistant A:\n{answer}\n\n"
                  "<|The End of Assistant A's Conversation with User|>")
    return {"question_id": qid, "model": model, "judge": ["gpt-4", "single-v1"],
            "user_prompt": prompt, "judgment": "[[x]]", "score": score, "turn": turn,
            "tstamp": 0.0}


def _mt_bench(folder: Path, judgements: list[dict[str, Any]], extra: str = "") -> Path:
    _write_jsonl(folder / "question.jsonl", [
        {"question_id": q, "category": "math", "turns": [f"Q{q}", f"Q{q} again"]}
        for q in (1, 2)])
    return _write_jsonl(folder / "judgements.jsonl", judgements, extra)


def _full_judgements() -> list[dict[str, Any]]:
    return [_judgement(q, m, t, 8, f"answer {q} {t}")
            for q in (1, 2) for t in (1, 2) for m in (GPT4, MIXTRAL)]


def _gsm8k(folder: Path, rows: Sequence[Sequence[str]]) -> Path:
    header = ["prompt", MIXTRAL, GPT4, MIXTRAL + "_response", GPT4 + "_response"]
    return _write_csv(folder / "gsm8k_responses.csv", header, rows)


def test_synthetic_mt_bench_extracts_answers(tmp_path: Path) -> None:
    _mt_bench(tmp_path, _full_judgements())
    ds = routellm.load(tmp_path)
    assert ds.ids == ("mt_bench/1/turn1", "mt_bench/1/turn2", "mt_bench/2/turn1",
                      "mt_bench/2/turn2")
    assert ds.responses is not None
    assert ds.responses[1, ds.model_index(GPT4)] == "answer 1 2"
    assert ds.prompts[1] == "Q1\n\nQ1 again"
    assert (ds.quality == 0.8).all()


def test_mt_bench_drop_rules(tmp_path: Path) -> None:
    judgements = _full_judgements()
    judgements = [j for j in judgements  # q1 turn 2: GPT-4 unjudged
                  if not (j["question_id"] == 1 and j["turn"] == 2 and j["model"] == GPT4)]
    judgements.append(_judgement(2, MIXTRAL, 1, 3, "again"))  # q2 turn 1: judged twice
    judgements.append(_judgement(2, GPT4, 2, -1, "x"))  # unrated: ignored, one rating is left
    judgements.append(_judgement(99, GPT4, 1, 5, "x"))  # unknown question: ignored
    odd = _judgement(1, MIXTRAL, 1, 6, "x")
    judgements = [j for j in judgements
                  if not (j["question_id"] == 1 and j["turn"] == 1 and j["model"] == MIXTRAL)]
    odd["user_prompt"] = "no template markers here"  # answer not extractable: fallback tokens
    judgements.append(odd)
    ds = routellm.load(_mt_bench(tmp_path, judgements).parent)
    assert ds.ids == ("mt_bench/1/turn1", "mt_bench/2/turn2")
    dropped = ds.meta["dropped"]
    assert dropped["prompts"] == 2
    assert dropped["dropped_missing"] == 1
    assert dropped["dropped_duplicate"] == 1
    assert dropped["unrated_judgements"] == 1
    assert dropped["ignored_judgements"] == 1
    assert dropped["tokens_out_fallback"] == 1
    j = ds.model_index(MIXTRAL)
    assert ds.tokens_out is not None
    assert ds.responses is not None
    assert ds.tokens_out[0, j] == routellm.MT_BENCH_TOKENS_OUT
    assert ds.responses[0, j] is None
    assert ds.quality[0, j] == pytest.approx(0.6)


def _bad_mmlu_missing_prompt(tmp: Path) -> tuple[Path, str]:
    f = _write_csv(tmp / "mmlu" / "responses" / "mmlu_a.csv", ["question", MIXTRAL, GPT4],
                   [["q", "True", "False"]])
    return tmp / "mmlu", f"{f}:1"


def _bad_mmlu_models_differ(tmp: Path) -> tuple[Path, str]:
    _write_csv(tmp / "mmlu" / "responses" / "mmlu_a.csv", ["prompt", MIXTRAL, GPT4],
               [["q", "True", "False"]])
    f = _write_csv(tmp / "mmlu" / "responses" / "mmlu_b.csv", ["prompt", GPT4, "other"],
                   [["q", "True", "False"]])
    return tmp / "mmlu", f"{f}:1"


def _bad_gsm8k_maybe(tmp: Path) -> tuple[Path, str]:
    f = _gsm8k(tmp / "gsm8k", [["q1", "True", "False", "a", "b"],
                               ["multi\nline q2", "True", "True", "a", "b"],
                               ["q3", "maybe", "True", "a", "b"]])
    return tmp / "gsm8k", f"{f}:5"  # header, q1, two lines of q2, then q3


def _bad_gsm8k_no_response(tmp: Path) -> tuple[Path, str]:
    f = _write_csv(tmp / "gsm8k" / "gsm8k_responses.csv", ["prompt", MIXTRAL, GPT4],
                   [["q", "True", "True"]])
    return tmp / "gsm8k", f"{f}:1"


def _bad_gsm8k_short_row(tmp: Path) -> tuple[Path, str]:
    f = _gsm8k(tmp / "gsm8k", [["q1", "True", "False", "a", "b"], ["q2", "True"]])
    return tmp / "gsm8k", f"{f}:3"


def _bad_judgement_json(tmp: Path) -> tuple[Path, str]:
    f = _mt_bench(tmp / "mt_bench", _full_judgements(), extra='{"question_id": 1, "mod\n')
    return tmp / "mt_bench", f"{f}:9"


def _bad_judgement_field(tmp: Path) -> tuple[Path, str]:
    judgements = _full_judgements()
    del judgements[2]["score"]
    return tmp / "mt_bench", f"{_mt_bench(tmp / 'mt_bench', judgements)}:3"


def _bad_judgement_score(tmp: Path) -> tuple[Path, str]:
    judgements = _full_judgements()
    judgements[0]["score"] = 11
    return tmp / "mt_bench", f"{_mt_bench(tmp / 'mt_bench', judgements)}:1"


def _bad_duplicate_question(tmp: Path) -> tuple[Path, str]:
    _mt_bench(tmp, _full_judgements())
    q = _write_jsonl(tmp / "question.jsonl", [
        {"question_id": 1, "category": "math", "turns": ["a", "b"]},
        {"question_id": 1, "category": "math", "turns": ["c", "d"]}])
    return tmp, f"{q}:2"


def _bad_contaminated(tmp: Path) -> tuple[Path, str]:
    _gsm8k(tmp / "gsm8k", [["q1", "True", "False", "a", "b"]])
    f = _write_jsonl(tmp / "gsm8k" / routellm.CONTAMINATED, [{"train_prompt": "q1"}])
    return tmp / "gsm8k", f"{f}:1"


def _bad_root_models_differ(tmp: Path) -> tuple[Path, str]:
    _write_csv(tmp / "mmlu" / "responses" / "mmlu_a.csv", ["prompt", MIXTRAL, GPT4],
               [["q", "True", "False"]])
    f = _write_csv(tmp / "gsm8k" / "gsm8k_responses.csv",
                   ["prompt", GPT4, "x", GPT4 + "_response", "x_response"],
                   [["q", "True", "False", "a", "b"]])
    return tmp, str(f)


@pytest.mark.parametrize("make", [
    _bad_mmlu_missing_prompt, _bad_mmlu_models_differ, _bad_gsm8k_maybe, _bad_gsm8k_no_response,
    _bad_gsm8k_short_row, _bad_judgement_json, _bad_judgement_field, _bad_judgement_score,
    _bad_duplicate_question, _bad_contaminated, _bad_root_models_differ,
])
def test_bad_input_names_file_and_line(make: Any, tmp_path: Path) -> None:
    path, where = make(tmp_path)
    with pytest.raises(DataFormatError) as info:
        routellm.load(path)
    message = str(info.value)
    assert where in message
    assert "Fix:" in message


def test_maybe_message_names_column_and_row(tmp_path: Path) -> None:
    path, _ = _bad_gsm8k_maybe(tmp_path)
    with pytest.raises(DataFormatError, match=r"'maybe' in data row 2, not True/False"):
        routellm.load(path)


def test_not_a_routellm_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a RouteLLM evals folder"):
        routellm.load(tmp_path)
    with pytest.raises(DataError, match="no RouteLLM mmlu"):
        routellm.load_mmlu(tmp_path)
