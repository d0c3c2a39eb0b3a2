"""The privacy rule: prompts that look sensitive stay on local models, and are masked in the log.

``privacy.patterns`` lists built-in detectors by name or custom regular expressions. A request
whose text (every message, or the prompt) matches one is restricted to the models marked
``local: true``; a routed endpoint then picks the best local model by its policy, a fallback
chain or cascade skips the others, and an endpoint with no local model answers 403 rather than
send the prompt out. With ``storage.log_prompts`` on, matches are replaced by ``[REDACTED:<name>]``
before the prompt is written.

The built-ins favour catching too much over too little (a false positive only costs a cheaper
route): card numbers are 13-19 digits with optional spaces or dashes that pass the Luhn check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

BUILTIN_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "phone": r"\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
}


def compile_patterns(patterns: Iterable[str]) -> list[tuple[str, re.Pattern[str]]]:
    """(name, regex) per entry: a built-in name, or a regex named ``custom<i>``."""
    out: list[tuple[str, re.Pattern[str]]] = []
    for i, pattern in enumerate(patterns):
        name = pattern if pattern in BUILTIN_PATTERNS else f"custom{i}"
        source = BUILTIN_PATTERNS.get(pattern, pattern)
        try:
            out.append((name, re.compile(source)))
        except re.error as e:
            raise ValueError(f"patterns[{i}] is neither a built-in ({', '.join(BUILTIN_PATTERNS)})"
                             f" nor a valid regular expression: {e}") from None
    return out


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def request_text(body: Mapping[str, Any]) -> str:
    """Every piece of text in a request that an upstream would see."""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, Mapping):
                content = m.get("content")
                if isinstance(content, str):
                    parts.append(content)
                elif content is not None:
                    parts.append(json.dumps(content, ensure_ascii=False))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts += [p for p in prompt if isinstance(p, str)]
    return "\n".join(parts)


class PrivacyRule:
    """Detects sensitive text and masks it; :meth:`allowed` gives the models a request may see.
    """

    def __init__(self, patterns: Iterable[str], local_models: Iterable[str]) -> None:
        self.patterns = compile_patterns(patterns)
        self.local_models = frozenset(local_models)

    def _hits(self, text: str) -> Iterable[tuple[str, re.Match[str]]]:
        for name, regex in self.patterns:
            for match in regex.finditer(text):
                if name == "card" and not _luhn(re.sub(r"\D", "", match.group())):
                    continue
                yield name, match

    def sensitive(self, text: str) -> str | None:
        """The name of the first pattern found in ``text``, or ``None``."""
        return next((name for name, _ in self._hits(text)), None)

    def allowed(self, body: Mapping[str, Any]) -> frozenset[str] | None:
        """The local models when the request is sensitive, else ``None`` (any model)."""
        if not self.patterns:
            return None
        return self.local_models if self.sensitive(request_text(body)) else None

    def redact(self, text: str) -> str:
        """``text`` with every match replaced by ``[REDACTED:<pattern name>]``."""
        spans = sorted(((m.start(), m.end(), name) for name, m in self._hits(text)))
        out: list[str] = []
        pos = 0
        for start, end, name in spans:
            if start < pos:  # overlapping matches of two patterns: the first one wins
                continue
            out += [text[pos:start], f"[REDACTED:{name}]"]
            pos = end
        out.append(text[pos:])
        return "".join(out)
