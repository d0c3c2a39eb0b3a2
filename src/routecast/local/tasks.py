"""A task set the project writes itself: prompts with gold answers and a grader kind.

Two families, both reproducible from a seed:

* **arithmetic**, generated, in five levels of difficulty: 1-digit addition, 2-digit addition
  and subtraction, multiplication tables, two-step expressions, and multi-step word problems;
* **facts**, written here by hand: capitals, simple science and unit conversions, some as
  multiple choice (the seed shuffles the options, so the gold letter moves).

Every task names how it is graded (see :mod:`routecast.local.graders`): ``exact`` (a short
answer, with accepted aliases), ``number``, ``choice`` (a letter) or ``judge`` (a model grades).
Task ids are stable for a given seed, which is what lets ``collect`` resume a run.

Task files (``--tasks FILE``) are JSON Lines, one task per line::

    {"id": "q1", "prompt": "What is 2 + 2?", "gold": "4", "grader": "number",
     "category": "math", "difficulty": 1, "aliases": []}

``category``, ``difficulty`` and ``aliases`` are optional.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from routecast.errors import ConfigError, DataError, DataFormatError

GraderKind = Literal["exact", "number", "choice", "judge"]
GRADER_KINDS: tuple[str, ...] = get_args(GraderKind)

NUMBER_ONLY = "Answer with the number only."
LETTER_ONLY = "Answer with the letter only."
LETTERS = "ABCD"


@dataclass(frozen=True)
class Task:
    """One prompt with its gold answer. ``aliases`` are further accepted answers (``exact``)."""

    id: str
    prompt: str
    gold: str
    grader: GraderKind
    category: str = ""
    difficulty: int = 1
    aliases: tuple[str, ...] = ()

    @property
    def answers(self) -> tuple[str, ...]:
        """The gold answer followed by its aliases."""
        return (self.gold, *self.aliases)


# -- arithmetic ------------------------------------------------------------------------------

def _add1(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(1, 9), r.randint(1, 9)
    return f"What is {a} + {b}?", a + b


def _add2(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(10, 99), r.randint(10, 99)
    if r.random() < 0.5:
        return f"What is {a} + {b}?", a + b
    a, b = max(a, b), min(a, b)  # keep results non-negative: small models are not tested on signs
    return f"What is {a} - {b}?", a - b


def _mul(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(2, 12), r.randint(2, 12)
    return f"What is {a} times {b}?", a * b


def _two_step(r: random.Random) -> tuple[str, int]:
    a, b, c = r.randint(2, 20), r.randint(2, 20), r.randint(2, 9)
    if r.random() < 0.5:
        return f"What is ({a} + {b}) * {c}?", (a + b) * c
    return f"What is {a} * {c} - {b}?", a * c - b


def _word(r: random.Random) -> tuple[str, int]:
    name = r.choice(["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid"])
    kind = r.randrange(3)
    if kind == 0:
        start, sold, boxes, per = r.randint(20, 60), r.randint(2, 15), r.randint(2, 5), \
            r.randint(3, 8)
        return (f"{name} has {start} apples, gives away {sold}, then buys {boxes} bags of {per} "
                f"apples. How many apples does {name} have now?", start - sold + boxes * per)
    if kind == 1:
        price, n, paid = r.randint(2, 9), r.randint(2, 6), 50
        return (f"A pen costs {price} dollars. {name} buys {n} pens and pays with a {paid} dollar "
                f"note. How much change does {name} get, in dollars?", paid - price * n)
    per_day, days, extra = r.randint(3, 12), r.randint(3, 7), r.randint(5, 20)
    return (f"{name} reads {per_day} pages a day for {days} days, then {extra} more pages on "
            f"the last evening. How many pages did {name} read in total?", per_day * days + extra)


#: Arithmetic levels, easiest first: (category, generator).
ARITHMETIC: tuple[tuple[str, Callable[[random.Random], tuple[str, int]]], ...] = (
    ("arith-add1", _add1), ("arith-add2", _add2), ("arith-mul", _mul),
    ("arith-two-step", _two_step), ("arith-word", _word),
)


def arithmetic_tasks(per_level: int, seed: int = 0) -> list[Task]:
    """``per_level`` generated questions at each of the five levels (difficulty 1 to 5)."""
    r = random.Random(f"routecast-arith-{seed}")  # a str seed is stable across Python versions
    tasks = []
    for level, (category, make) in enumerate(ARITHMETIC, start=1):
        for k in range(per_level):
            question, answer = make(r)
            tasks.append(Task(f"{category}-{k}", f"{question} {NUMBER_ONLY}", str(answer),
                              "number", category, level))
    return tasks


# -- facts ----------------------------------------------------------------------------------

#: (country, capital, aliases) -- capitals with one unambiguous usual English name.
CAPITALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("France", "Paris", ()), ("Germany", "Berlin", ()), ("Italy", "Rome", ()),
    ("Spain", "Madrid", ()), ("Portugal", "Lisbon", ()), ("the United Kingdom", "London", ()),
    ("Ireland", "Dublin", ()), ("Norway", "Oslo", ()), ("Sweden", "Stockholm", ()),
    ("Finland", "Helsinki", ()), ("Denmark", "Copenhagen", ()), ("Poland", "Warsaw", ()),
    ("Austria", "Vienna", ()), ("Greece", "Athens", ()), ("Hungary", "Budapest", ()),
    ("the Czech Republic", "Prague", ()), ("Russia", "Moscow", ()), ("Ukraine", "Kyiv", ("kiev",)),
    ("Turkey", "Ankara", ()), ("Egypt", "Cairo", ()), ("Kenya", "Nairobi", ()),
    ("Nigeria", "Abuja", ()), ("Japan", "Tokyo", ()), ("China", "Beijing", ("peking",)),
    ("South Korea", "Seoul", ()), ("India", "New Delhi", ()), ("Thailand", "Bangkok", ()),
    ("Indonesia", "Jakarta", ()), ("Australia", "Canberra", ()),
    ("New Zealand", "Wellington", ()), ("Canada", "Ottawa", ()),
    ("the United States", "Washington, D.C.", ("washington", "washington dc")),
    ("Mexico", "Mexico City", ()), ("Brazil", "Brasilia", ("brasília",)),
    ("Argentina", "Buenos Aires", ()), ("Peru", "Lima", ()), ("Chile", "Santiago", ()),
    ("Cuba", "Havana", ()), ("Iran", "Tehran", ()), ("Saudi Arabia", "Riyadh", ()),
)

#: (question, gold, aliases) answered in a word or two.
SCIENCE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("What is the chemical symbol for gold?", "Au", ()),
    ("What is the chemical symbol for sodium?", "Na", ()),
    ("What is the chemical symbol for iron?", "Fe", ()),
    ("What is the chemical formula of water?", "H2O", ()),
    ("Which gas do plants take from the air for photosynthesis?", "carbon dioxide", ("co2",)),
    ("Which gas do humans need to breathe to live?", "oxygen", ("o2",)),
    ("What is the closest star to the Earth?", "the Sun", ("sun",)),
    ("Which planet is known as the Red Planet?", "Mars", ()),
    ("What is the largest planet in the Solar System?", "Jupiter", ()),
    ("Which planet is closest to the Sun?", "Mercury", ()),
    ("What is the hardest natural material?", "diamond", ()),
    ("What force pulls objects towards the Earth?", "gravity", ("gravitation",)),
    ("Which organ pumps blood around the human body?", "the heart", ("heart",)),
    ("Which organ of the human body is used for thinking?", "the brain", ("brain",)),
    ("What is frozen water called?", "ice", ()),
    ("What do bees make from nectar?", "honey", ()),
    ("What is the boiling point of water at sea level, in degrees Celsius?", "100", ()),
    ("What is the freezing point of water, in degrees Celsius?", "0", ("zero",)),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", ("pacific", "pacific ocean")),
    ("What is the largest mammal?", "the blue whale", ("blue whale",)),
)

#: (question, answer) whose answer is a number.
UNITS: tuple[tuple[str, int], ...] = (
    ("How many centimetres are in one metre?", 100),
    ("How many millimetres are in one centimetre?", 10),
    ("How many metres are in one kilometre?", 1000),
    ("How many grams are in one kilogram?", 1000),
    ("How many millilitres are in one litre?", 1000),
    ("How many seconds are in one minute?", 60),
    ("How many minutes are in one hour?", 60),
    ("How many seconds are in one hour?", 3600),
    ("How many hours are in one day?", 24),
    ("How many days are in one week?", 7),
    ("How many months are in one year?", 12),
    ("How many days are in a leap year?", 366),
    ("How many inches are in one foot?", 12),
    ("How many feet are in one yard?", 3),
    ("How many legs does an insect have?", 6),
    ("How many legs does a spider have?", 8),
    ("How many planets are in the Solar System?", 8),
    ("How many sides does a hexagon have?", 6),
    ("How many degrees are in a right angle?", 90),
    ("How many years are in one century?", 100),
)

#: (question, correct option, three wrong options); the seed decides the letters.
CHOICES: tuple[tuple[str, str, tuple[str, str, str]], ...] = (
    ("Which of these is a mammal?", "dolphin", ("shark", "trout", "octopus")),
    ("Which of these is a liquid at room temperature?", "mercury", ("iron", "copper", "salt")),
    ("Which unit measures electric current?", "ampere", ("volt", "watt", "ohm")),
    ("Which unit measures force?", "newton", ("joule", "pascal", "kelvin")),
    ("Which of these is the largest?", "kilometre", ("metre", "centimetre", "millimetre")),
    ("Which of these is a prime number?", "7", ("8", "9", "10")),
    ("Which of these is a continent?", "Africa", ("Brazil", "Pacific", "Sahara")),
    ("Which of these animals lays eggs?", "chicken", ("cow", "horse", "dog")),
    ("Which of these is a colour of the rainbow?", "green", ("pink", "brown", "black")),
    ("Which of these is the capital of Japan?", "Tokyo", ("Osaka", "Kyoto", "Seoul")),
    ("What do plants release during photosynthesis?", "oxygen", ("nitrogen", "helium", "neon")),
    ("Which of these is measured in litres?", "volume", ("mass", "length", "time")),
)


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def fact_tasks(seed: int = 0) -> list[Task]:
    """The hand-written factual questions; the seed only orders multiple-choice options."""
    tasks = [Task(f"capital-{_slug(country)}",
                  f"What is the capital of {country}? Answer with the city name only.",
                  capital, "exact", "capitals", 1, aliases)
             for country, capital, aliases in CAPITALS]
    tasks += [Task(f"science-{k}", f"{q} Answer in a few words.", gold, "exact", "science", 2,
                   aliases) for k, (q, gold, aliases) in enumerate(SCIENCE)]
    tasks += [Task(f"units-{k}", f"{q} {NUMBER_ONLY}", str(n), "number", "units", 2)
              for k, (q, n) in enumerate(UNITS)]
    r = random.Random(f"routecast-choice-{seed}")
    for k, (q, right, wrong) in enumerate(CHOICES):
        options = [right, *wrong]
        r.shuffle(options)
        lines = "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
        tasks.append(Task(f"choice-{k}", f"{q}\n{lines}\n{LETTER_ONLY}",
                          LETTERS[options.index(right)], "choice", "choice", 2))
    return tasks


def builtin_tasks(seed: int = 0, per_level: int = 30) -> list[Task]:
    """The built-in set: ``per_level`` arithmetic questions per level, then every fact."""
    return arithmetic_tasks(per_level, seed) + fact_tasks(seed)


def sample(tasks: Sequence[Task], limit: int | None, seed: int = 0) -> list[Task]:
    """A seeded random subset of ``limit`` tasks, kept in their original order."""
    if limit is None or limit >= len(tasks):
        return list(tasks)
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    keep = sorted(random.Random(f"routecast-sample-{seed}").sample(range(len(tasks)), limit))
    return [tasks[i] for i in keep]


# -- task files -----------------------------------------------------------------------------

def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSON Lines task file; every problem names its line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such task file", where=path, fix="check the path")
    tasks: list[Task] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                task = _task_from(raw, f"{path}:{lineno}")
                if task.id in seen:
                    raise DataFormatError(f"duplicate task id {task.id!r}",
                                          where=f"{path}:{lineno}", fix="make every id unique")
                seen.add(task.id)
                tasks.append(task)
    if not tasks:
        raise DataFormatError("has no tasks", where=path, fix="write one JSON object per line")
    return tasks


def _task_from(raw: str, where: str) -> Task:
    try:
        rec: Any = json.loads(raw)
    except ValueError as e:
        raise DataFormatError(f"invalid JSON ({e})", where=where,
                              fix="each line must be one JSON object") from None
    if not isinstance(rec, dict):
        raise DataFormatError("line is not a JSON object", where=where)
    for key in ("id", "prompt", "gold"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            raise DataFormatError(f"field {key!r} must be a non-empty string", where=where)
    grader = rec.get("grader", "exact")
    if grader not in GRADER_KINDS:
        raise DataFormatError(f"unknown grader {grader!r}", where=where,
                              fix=f"use one of {', '.join(GRADER_KINDS)}")
    aliases = rec.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataFormatError("field 'aliases' must be a list of strings", where=where)
    difficulty = rec.get("difficulty", 1)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise DataFormatError("field 'difficulty' must be an integer", where=where)
    category = rec.get("category", "")
    if not isinstance(category, str):
        raise DataFormatError("field 'category' must be a string", where=where)
    return Task(rec["id"], rec["prompt"], rec["gold"], grader, category, difficulty,
                tuple(aliases))
