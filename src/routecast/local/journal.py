"""The resumable journal of a ``collect`` run: one JSON line per finished (prompt, model).

Each record is appended and flushed to disk as soon as its answer is graded, so a run that is
killed keeps everything it finished; the next run with the same journal skips those pairs.
A record also stores a fingerprint of the prompt and of the model's settings: resuming with a
changed prompt or changed settings (another ``max_tokens``, template, ...) would silently mix
two experiments, so it is refused instead.

A kill can cut the last line short. Such a torn tail is cut off when the journal is opened
(it is the one record that was not finished); a malformed line anywhere else is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from routecast.errors import ConfigError, DataFormatError

Key = tuple[str, str]  # (prompt id, model)


def fingerprint(*parts: object) -> str:
    """A short stable hash of ``parts`` (JSON-encoded), for spotting changed inputs."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Journal:
    """Append-only JSON Lines records keyed by ``(record["id"], record["model"])``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[Key, dict[str, Any]]:
        """The finished records (creating an empty journal, or cutting a torn tail, if needed)."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            return {}
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1  # 0 when the torn line is the only one
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        records: dict[Key, dict[str, Any]] = {}
        for lineno, raw in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError as e:
                raise DataFormatError(f"invalid JSON ({e})", where=f"{self.path}:{lineno}",
                                      fix="delete the journal to start the run afresh") from None
            if not (isinstance(rec, dict) and isinstance(rec.get("id"), str)
                    and isinstance(rec.get("model"), str)):
                raise DataFormatError("record without a string 'id' and 'model'",
                                      where=f"{self.path}:{lineno}",
                                      fix="delete the journal to start the run afresh")
            records[(rec["id"], rec["model"])] = rec
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and push it to disk before returning."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def check_resumable(records: dict[Key, dict[str, Any]], expected: dict[Key, tuple[str, str]],
                    path: Path) -> None:
    """Refuse to resume from records made with another prompt or other model settings.

    ``expected`` maps each key of this run to ``(task fingerprint, settings fingerprint)``.
    Records of keys this run does not ask for are left alone (a smaller ``--limit`` is fine).
    """
    for key, rec in records.items():
        if key not in expected:
            continue
        task_fp, setup_fp = expected[key]
        if rec.get("task_fp") != task_fp:
            raise ConfigError(
                f"journal {path} holds an answer to task {key[0]!r} as it was before; its "
                "prompt or gold answer has changed since. Fix: delete the journal, or write to "
                "another output file")
        if rec.get("setup_fp") != setup_fp:
            raise ConfigError(
                f"journal {path} holds answers of {key[1]!r} made with other settings (template, "
                "max_tokens, stop, ...). Fix: delete the journal, use the earlier settings, or "
                "write to another output file")
