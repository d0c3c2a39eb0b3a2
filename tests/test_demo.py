"""`routecast demo`: which questions it asks, how it sums up, and a real run on the local models."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from routecast.local import outcomes
from routecast.local.demo import Answered, DemoResult, pick_questions, summary
from routecast.local.outcomes import LARGE, SMALL


def test_questions_are_held_out_and_spread_over_categories() -> None:
    data = outcomes.load().plain
    test_ids = {i for i, s in zip(data.ids, data.split, strict=True) if s == "test"}
    questions = pick_questions(None)
    assert {q.id for q in questions} == test_ids  # every held-out question, none other
    categories = list(dict.fromkeys(q.category for q in questions))
    first = pick_questions(len(categories))
    assert [q.category for q in first] == categories  # one per category before any repeat
    assert pick_questions(3) == first[:3]


def _answer(endpoint: str, route: tuple[str, ...], right: bool, wall_s: float, cpu_s: float
            ) -> Answered:
    return Answered(endpoint, route[-1], route, "x", right, wall_s, cpu_s)


def test_summary_compares_each_endpoint_with_always_gemma() -> None:
    questions = pick_questions(2)
    result = DemoResult(questions, {
        "cascade": [_answer("cascade", (SMALL,), True, 1.0, 0.5),
                    _answer("cascade", (SMALL, LARGE), False, 3.0, 1.5)],
        "auto": [_answer("auto", (SMALL,), True, 1.0, 2.0),
                 _answer("auto", (LARGE,), True, 1.0, 2.0)],
        "gemma3": [_answer("gemma3", (LARGE,), False, 2.0, 1.0),
                   _answer("gemma3", (LARGE,), True, 2.0, 1.0)],
    })
    text = "\n".join(summary(result))
    # cascade: 4 s and 2 CPU-s against gemma's 4 s and 2 CPU-s; auto: 2 s and 4 CPU-s
    assert re.search(r"cascade\s+accuracy\s+50%.*time 0% saved, energy 0% saved; escalated "
                     r"1/2", text), text
    assert re.search(r"auto\s+accuracy\s+100%.*time 50% saved, energy 100% more", text), text
    n_test = int((outcomes.load().plain.split == "test").sum())
    assert f"Replayed over all {n_test} held-out questions" in text
    from routecast.local.default import tuned

    assert f"always {LARGE}" in text and f"cascade {tuned()[0].cascade.describe()}" in text


@pytest.mark.needs_local
def test_demo_runs_on_the_real_models() -> None:
    # --no-fleet: the recorded part has its own test (tests/test_fleet_demo.py).
    done = subprocess.run([sys.executable, "-m", "routecast.cli", "demo", "--questions", "1",
                           "--no-fleet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[1/1]" in out and "ready on http://127.0.0.1:" in out
    # one line per endpoint, naming the model(s) that answered and the verdict
    assert re.search(rf"^\s+gemma3\s+{LARGE}\s+(right|wrong)", out, re.M), out
    assert re.search(rf"^\s+cascade\s+{LARGE}( -> {SMALL})?\s+(right|wrong)", out, re.M), out
    assert re.search(rf"^\s+auto\s+({SMALL}|{LARGE})\s+(right|wrong)", out, re.M), out
    assert "On these 1 questions" in out and f"vs always {LARGE}" in out
    assert "Replayed over all" in out
