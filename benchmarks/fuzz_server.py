"""A longer schemathesis run against the server's own OpenAPI schema (the test suite runs a
short one): every operation, many examples, and the single check that matters here, no 5xx::

    .venv/bin/python -m benchmarks.fuzz_server [--examples 1000]

Prints the cases tried per operation (schema-valid "positive" cases, which reach the backends,
and schema-violating "negative" ones, which must be refused with a 4xx) and the 5xx found.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from tests.fuzz_app import fuzz_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    args = parser.parse_args()
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())
    tried: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    def fuzz(operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path} ({mode.value})"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=args.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call()
            tried[label] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except AssertionError as e:
                failures.append(f"{label}: {str(e)[:200]}")

        run()

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # our own schema is valid
        # Positive cases reach the backends; negative ones (schema-violating) the checks.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # nothing to violate: no parameters
            fuzz(operation, mode)
    for label, n in tried.items():
        print(f"{label:<40} {n:>6} cases")
    print(f"total {sum(tried.values())} cases; statuses "
          + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print(f"failures (5xx): {len(failures)}")
    for f in failures[:20]:
        print("  " + f)


if __name__ == "__main__":
    main()
