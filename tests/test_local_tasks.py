"""The built-in task set and task files."""

from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path

import pytest

from routecast.errors import ConfigError, DataError, DataFormatError
from routecast.local.graders import grade, options_of
from routecast.local.tasks import (
    ARITHMETIC,
    CAPITALS,
    CHOICES,
    Task,
    arithmetic_tasks,
    builtin_tasks,
    fact_tasks,
    load_tasks,
    sample,
)
from tests.task_files import save_tasks

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expr: str) -> int:
    """Evaluate + - * expressions independently of the generator."""
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return int(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(expr)
    return walk(ast.parse(expr, mode="eval").body)


def test_arithmetic_levels_have_correct_gold_answers() -> None:
    tasks = arithmetic_tasks(per_level=20, seed=3)
    assert len(tasks) == 20 * len(ARITHMETIC)
    assert [t.difficulty for t in tasks[::20]] == [1, 2, 3, 4, 5]
    checked = 0
    for t in tasks:
        assert t.grader == "number"
        m = re.match(r"What is (.+)\? Answer with the number only\.$", t.prompt)
        if m:  # levels 1-4 are expressions: recompute them
            assert _evaluate(m.group(1).replace("times", "*")) == int(t.gold), t
            checked += 1
        assert int(t.gold) >= 0  # no signed answers for small models
    assert checked == 80


def test_level_one_is_one_digit_addition() -> None:
    for t in arithmetic_tasks(per_level=30, seed=0)[:30]:
        a, b = map(int, re.findall(r"\d+", t.prompt))
        assert 1 <= a <= 9 and 1 <= b <= 9


def test_word_problems_are_multi_step() -> None:
    words = [t for t in arithmetic_tasks(per_level=15, seed=1) if t.category == "arith-word"]
    assert len(words) == 15
    for t in words:
        assert len(re.findall(r"\d+", t.prompt)) >= 3


def test_task_set_is_seeded() -> None:
    assert builtin_tasks(seed=5) == builtin_tasks(seed=5)
    a, b = arithmetic_tasks(10, seed=1), arithmetic_tasks(10, seed=2)
    assert [t.id for t in a] == [t.id for t in b]  # ids stay put: a resume keys on them
    assert [t.prompt for t in a] != [t.prompt for t in b]


def test_builtin_ids_unique_and_every_task_gradeable_by_its_own_gold() -> None:
    tasks = builtin_tasks(seed=0)
    assert len({t.id for t in tasks}) == len(tasks)
    assert len(tasks) == 5 * 30 + len(fact_tasks())
    for t in tasks:
        gold_response = t.gold
        if t.grader == "choice":
            gold_response = f"{t.gold}) {options_of(t.prompt)[t.gold]}"
        assert grade(t, gold_response) == 1.0, t


def test_choice_options_are_shuffled_by_seed_and_gold_follows() -> None:
    golds = {tuple(t.gold for t in fact_tasks(seed) if t.grader == "choice") for seed in range(5)}
    assert len(golds) > 1
    for seed in range(3):
        for t, (_, right, _) in zip([t for t in fact_tasks(seed) if t.grader == "choice"],
                                    CHOICES, strict=True):
            assert options_of(t.prompt)[t.gold] == right


def test_capitals_cover_the_list() -> None:
    caps = [t for t in fact_tasks() if t.category == "capitals"]
    assert [t.gold for t in caps] == [c for _, c, _ in CAPITALS]


def test_sample_is_seeded_ordered_and_bounded() -> None:
    tasks = builtin_tasks()
    s1, s2 = sample(tasks, 25, seed=1), sample(tasks, 25, seed=1)
    assert s1 == s2 and len(s1) == 25
    index = {t.id: i for i, t in enumerate(tasks)}
    assert [index[t.id] for t in s1] == sorted(index[t.id] for t in s1)
    assert sample(tasks, 25, seed=2) != s1
    assert sample(tasks, None) == tasks and sample(tasks, 10_000) == tasks
    with pytest.raises(ConfigError):
        sample(tasks, 0)


def test_task_file_round_trip(tmp_path: Path) -> None:
    tasks = builtin_tasks(per_level=2)
    path = save_tasks(tasks, tmp_path / "tasks.jsonl")
    assert load_tasks(path) == tasks


def test_task_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "Sky colour?", "gold": "blue"}) + "\n\n")
    assert load_tasks(path) == [Task("a", "Sky colour?", "blue", "exact")]


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "invalid JSON"),
    ('["a"]', "not a JSON object"),
    ('{"id": "a", "prompt": "p"}', "'gold'"),
    ('{"id": "a", "prompt": "p", "gold": "g", "grader": "regex"}', "unknown grader"),
    ('{"id": "a", "prompt": "p", "gold": "g", "aliases": "x"}', "aliases"),
    ('{"id": "a", "prompt": "p", "gold": "g", "difficulty": "hard"}', "difficulty"),
])
def test_task_file_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "prompt": "p", "gold": "g"}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=message) as info:
        load_tasks(path)
    assert f"{path}:2" in str(info.value)


def test_task_file_duplicate_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "gold": "g"}\n' * 2)
    with pytest.raises(DataFormatError, match="duplicate"):
        load_tasks(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataFormatError, match="no tasks"):
        load_tasks(empty)
    with pytest.raises(DataError, match="no such task file"):
        load_tasks(tmp_path / "nope.jsonl")
