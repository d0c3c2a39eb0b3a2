"""Registries of named classes: what makes ``make_router("knn")`` or ``make_signal("learned")``
work, and the path a plugin takes to add one of its own.

A family's package owns one :class:`Registry`; its classes join it with the package's class
decorator (``@register_router``), keyed by their class attribute ``name``. Built-ins are imported
only when first asked for, by the ``load_builtins`` function the package gives: importing a
family's base class then costs none of its implementations' imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from routecast.errors import ConfigError

__all__ = ["Named", "Registry"]


class Named(Protocol):
    """What a registry holds: classes with a ``name`` to be made by."""

    name: ClassVar[str]


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Subclasses of ``T`` by ``name``; ``kind`` names the family in errors ("router").

    Names list in registration order, except for those in ``builtin_order``, which come first
    and in that order: the documented order of the built-ins, whichever of them was imported
    first.
    """

    def __init__(self, kind: str, load_builtins: Callable[[], object],
                 builtin_order: Sequence[str] = ()) -> None:
        self.kind = kind
        #: name -> class, in listing order once built-ins are loaded. Kept as one dict for the
        #: life of the registry, so a package may export it (``ROUTERS``).
        self.classes: dict[str, type[T]] = {}
        self._load_builtins = load_builtins
        self._builtin_order = tuple(builtin_order)

    def register(self, cls: type[T]) -> type[T]:
        """Make ``cls`` constructible by its ``name`` (a later class of the same name replaces
        an earlier one in its place)."""
        if not cls.name:
            raise ConfigError(f"{cls.__name__} needs a non-empty class attribute `name`")
        self.classes[cls.name] = cls
        return cls

    def loaded(self) -> dict[str, type[T]]:
        """:attr:`classes`, built-ins included, in listing order.

        Every lookup loads: after the first, that is an import of modules already imported,
        and it leaves no state to get wrong (a lookup made while the built-ins are still being
        imported, or a load that failed once).
        """
        self._load_builtins()
        if self._builtin_order:
            # Importing one built-in module directly (e.g. signals.learned) registers it first;
            # put the built-ins back in their documented order, the others after them as they
            # came. In place: the dict may be exported.
            ordered = {n: self.classes[n] for n in self._builtin_order if n in self.classes}
            ordered.update(self.classes)
            if list(ordered) != list(self.classes):
                self.classes.clear()
                self.classes.update(ordered)
        return self.classes

    def names(self) -> list[str]:
        """Every registered name, in listing order."""
        return list(self.loaded())

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a :class:`ConfigError` naming the known ones if
        there is none."""
        classes = self.loaded()
        try:
            return classes[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: "
                              f"{', '.join(classes)}") from None

    def make(self, name: str, **params: Any) -> T:
        """A new instance of the class registered as ``name``; parameters it does not take are
        a :class:`ConfigError` too."""
        cls = self.get(name)
        try:
            return cls(**params)
        except TypeError as e:
            raise ConfigError(f"bad parameters for {self.kind} {name!r}: {e}") from None
