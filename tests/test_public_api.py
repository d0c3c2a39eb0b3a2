"""The curated public names: every package's ``__all__`` resolves, and the packages that
export lazily list in ``__all__`` exactly what their lazy tables can load."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import routecast

#: Packages whose names load on first use through a module-level ``__getattr__``.
LAZY = ["routecast", "routecast.server"]


def packages() -> list[str]:
    names = ["routecast"]
    names += [m.name for m in pkgutil.walk_packages(routecast.__path__, "routecast.")
              if m.ispkg]
    return names


@pytest.mark.parametrize("name", LAZY)
def test_all_and_the_lazy_table_agree(name: str) -> None:
    module = importlib.import_module(name)
    table: dict[str, str] = module._EXPORTS
    assert sorted(module.__all__) == sorted(table)
    for export, home in table.items():
        value = getattr(module, export)
        # Each name is defined where the table says, not merely re-exported from elsewhere.
        assert getattr(importlib.import_module(home), export) is value
        assert getattr(value, "__module__", home) == home, export


@pytest.mark.parametrize("name", packages())
def test_every_name_in_all_exists(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing
