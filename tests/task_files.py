"""Writing task files for tests (routecast itself only reads them: ``local.tasks.load_tasks``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from routecast.local.tasks import Task


def save_tasks(tasks: Sequence[Task], path: str | Path) -> Path:
    """Write ``tasks`` in the task-file format ``load_tasks`` reads (one JSON object a line)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps({"id": t.id, "prompt": t.prompt, "gold": t.gold,
                                "grader": t.grader, "category": t.category,
                                "difficulty": t.difficulty, "aliases": list(t.aliases)},
                               ensure_ascii=False) + "\n")
    return path
