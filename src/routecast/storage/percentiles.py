"""Percentiles per group over the request log, and a portable ``floor()``, for ``routecast
stats`` and the dashboard (the rest of their figures are plain SQL aggregates).

A percentile is the linear interpolation numpy uses by default: for ``n`` sorted values and
``q`` in percent, position ``(n - 1) * q / 100`` between the values at its floor and the next.
On PostgreSQL the database computes it (``percentile_cont``, the same definition), one row per
group. SQLite has no such aggregate, so its values are fetched (only the grouping columns and
the value, one query for every level of grouping) and sorted here; measured on 200,000 rows,
that is faster than ranking them in SQLite with window functions (``row_number()``), which
sorts in the database but needs a pass per level (benchmarks/stats_queries.py).

:func:`floor_int` is ``floor()`` to an integer on both databases: SQLite's ``CAST(x AS
INTEGER)`` truncates (the same for the non-negative values it is used on), PostgreSQL's would
round, and SQLite builds without the math functions have no ``floor()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Float, Integer, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import func
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

Group = tuple[Any, ...]


class floor_int(GenericFunction[int]):  # noqa: N801 (a SQL function's name)
    """``floor(x)`` as an integer (see the module docstring)."""

    type = Integer()
    inherit_cache = True


@compiles(floor_int)
def _floor_default(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(floor_int, "sqlite")
def _floor_sqlite(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)}) AS INTEGER)"


def percentiles(conn: Connection, value: ColumnElement[Any],
                groups: Sequence[ColumnElement[Any]], where: Iterable[ColumnElement[bool]],
                qs: Sequence[float], *, levels: Sequence[int], scale: float = 1.0
                ) -> dict[Group, list[float | None]]:
    """The percentiles ``qs`` (in percent) of ``value * scale`` over the rows matching
    ``where``, for each group of each level: a level ``k`` groups by the first ``k`` of
    ``groups`` (0: all rows together). Keys are the groups' values (tuples of length ``k``);
    groups without rows are absent."""
    inner = select(*(g.label(f"g{i}") for i, g in enumerate(groups)),
                   value.label("v")).where(*where).subquery()
    cols = [inner.c[f"g{i}"] for i in range(len(groups))]
    out: dict[Group, list[float | None]] = {}
    if conn.dialect.name == "postgresql":
        fractions = literal([q / 100 for q in qs], ARRAY(Float))
        for k in levels:
            stmt = select(*cols[:k], func.percentile_cont(fractions).within_group(inner.c.v))
            for row in conn.execute(stmt.group_by(*cols[:k]) if k else stmt):
                found = row[k]
                if found is not None:  # no rows at all: one row of NULL
                    out[tuple(row[:k])] = [v * scale for v in found]
        return out
    values: dict[Group, list[float]] = {}
    finest = max(levels)
    # fetchall (all()), not row by row: SQLAlchemy fetches one at a time when iterated.
    for row in conn.execute(select(*cols[:finest], inner.c.v)).all():
        group = tuple(row[:finest])
        found = values.get(group)
        if found is None:
            found = values[group] = []
        found.append(row[finest] * scale)
    for k in sorted(set(levels) - {finest}):  # coarser levels: the finest groups joined
        for group in [g for g in values if len(g) == finest]:
            values.setdefault(group[:k], []).extend(values[group])
    values = {g: v for g, v in values.items() if len(g) in levels}
    for group, found in values.items():
        found.sort()
        out[group] = [percentile(found, q) for q in qs]
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile of sorted ``values`` (numpy's default method)."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)
