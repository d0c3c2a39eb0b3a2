"""One registry for every named family, and the path a plugin takes to join one.

A family (routers, signals, encoders, data formats, CLI commands, prompt formats, devices) owns
one :class:`Registry`: a read-only mapping from a name to an object (a class, a factory, a
module, a click command, a value). Entries come from three places, looked up in this order:

1. objects registered at run time with :meth:`Registry.register` (a notebook, a test);
2. the built-ins, a table of ``"module:attribute"`` references (``"module"`` for a module),
   the same form an entry point's value takes;
3. installed plugins: the entry points of the family's group in any installed distribution,
   read with :mod:`importlib.metadata`, e.g. in a plugin's ``pyproject.toml``::

       [project.entry-points."routecast.routers"]
       toy = "routecast_toy.router:ToyRouter"

Nothing is imported until it is asked for by name, and the entry points are read only when a
name is neither registered nor built in, or when the whole family is listed: importing a
family, or running a built-in command, costs none of it. A plugin cannot shadow a built-in (its
entry point is skipped with a warning), so a saved artifact naming a built-in means the same
thing wherever it is loaded.

The groups and what each entry point must point at are listed in :data:`GROUPS` (and in
``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["GROUPS", "Registry", "class_check", "resolve"]

#: Entry-point group -> what its entry points must point at.
GROUPS: dict[str, str] = {
    "routecast.routers": "a Router subclass whose `name` is the entry point's name",
    "routecast.signals": "a Signal subclass whose `name` is the entry point's name; its "
                         "`judge` class attribute names its live judge, if it has one",
    "routecast.encoders": "a callable (usually the class) that builds an Encoder from "
                          "keyword parameters",
    "routecast.formats": "a module (or object) with detect(path) -> bool and "
                         "load(path, *, seed, name) -> Dataset",
    "routecast.commands": "a click command or group",
    "routecast.prompt_formats": "a PromptFormat",
    "routecast.devices": "a hi.profile.Device",
}

T = TypeVar("T")


def resolve(reference: str) -> object:
    """The object ``"package.module:attribute.path"`` names (``"package.module"``: the module)."""
    module, _, attr = reference.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Mapping[str, T], Generic[T]):
    """The members of one family by name; see the module docstring.

    ``kind`` names the family in messages ("router"); ``group`` is its entry-point group;
    ``builtins`` maps each built-in name to its ``"module:attribute"``, in documented order;
    ``check(name, obj)`` validates a loaded object (raising :class:`ConfigError`) and returns
    it typed. Names list as built-ins, then run-time registrations, then plugins.

    As a :class:`~collections.abc.Mapping`, ``registry[name]`` raises :class:`KeyError` for
    an unknown name; :meth:`load` and :meth:`make` raise a :class:`ConfigError` listing the
    known names instead.
    """

    def __init__(self, kind: str, group: str, builtins: Mapping[str, str],
                 check: Callable[[str, object], T]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins)
        self._check = check
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._plugins: dict[str, EntryPoint] | None = None

    # -- adding ------------------------------------------------------------------------------

    def register(self, name: str, obj: T) -> T:
        """Make ``obj`` available as ``name`` in this process (replacing any earlier run-time
        registration of that name; built-ins cannot be replaced)."""
        if not name:
            raise ConfigError(f"a {self.kind} needs a non-empty name")
        if name in self._builtins and self.load(name) is not obj:
            raise ConfigError(f"{self.kind} {name!r} is built in; register yours under "
                              "another name")
        self._registered[name] = self._check(name, obj)
        return obj

    # -- looking up --------------------------------------------------------------------------

    def plugins(self) -> dict[str, EntryPoint]:
        """The installed entry points of :attr:`group` by name (read once, then cached)."""
        if self._plugins is None:
            from importlib.metadata import entry_points

            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                if ep.name in self._builtins:
                    warnings.warn(f"ignoring plugin {self.kind} {ep.name!r} ({ep.value}): "
                                  "the name is built in", stacklevel=2)
                    continue
                found.setdefault(ep.name, ep)
            self._plugins = found
        return self._plugins

    def refresh(self) -> None:
        """Forget the entry points read so far (after installing a plugin in this process)."""
        self._plugins = None
        for name in [n for n in self._loaded if n not in self._builtins]:
            del self._loaded[name]

    def names(self) -> list[str]:
        """Every name: built-ins in documented order, run-time registrations, plugins."""
        names = list(self._builtins)
        names += [n for n in self._registered if n not in self._builtins]
        names += [n for n in self.plugins() if n not in names]
        return names

    def load(self, name: str) -> T:
        """The object registered as ``name``; a :class:`ConfigError` naming the known ones if
        there is none, or naming the plugin if it fails to load."""
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtins:
            obj = self._check(name, resolve(self._builtins[name]))
        else:
            ep = self.plugins().get(name)
            if ep is None:
                raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: "
                                  f"{', '.join(self.names())}")
            obj = self._check(name, _load_entry_point(self.kind, ep))
        self._loaded[name] = obj
        return obj

    def make(self, name: str, /, **params: object) -> object:
        """Call the object registered as ``name`` (a class or factory) with ``params``;
        parameters it does not take are a :class:`ConfigError`."""
        factory = self.load(name)
        if not callable(factory):
            raise ConfigError(f"{self.kind} {name!r} cannot be called")
        try:
            return factory(**params)
        except TypeError as e:
            raise ConfigError(f"bad parameters for {self.kind} {name!r}: {e}") from None

    # -- Mapping -----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        if not self.__contains__(name):
            raise KeyError(name)
        return self.load(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._registered or name in self._builtins
                                          or name in self.plugins())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r})"


def _load_entry_point(kind: str, ep: EntryPoint) -> object:
    # A broken plugin is the plugin's problem, but the message must say which one it is.
    dist = getattr(ep, "dist", None)
    source = f"distribution {dist.name!r}" if dist is not None else "an installed distribution"
    try:
        return ep.load()
    except Exception as e:  # any import-time failure of third-party code
        raise ConfigError(f"the plugin {kind} {ep.name!r} ({ep.value}, from {source}) failed "
                          f"to load: {type(e).__name__}: {e}. Fix: reinstall or uninstall "
                          "that distribution") from e


def class_check(kind: str, base: type) -> Callable[[str, object], Any]:
    """A ``check`` for families of classes: a subclass of ``base`` whose ``name`` is the name
    it is registered under (saved artifacts store that name and are loaded by it). Typed
    ``Any``: ``base`` is usually abstract, which mypy will not take as a ``type[T]``."""

    def check(name: str, obj: object) -> Any:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ConfigError(f"{kind} {name!r} is {obj!r}, not a subclass of "
                              f"{base.__module__}.{base.__qualname__}")
        if getattr(obj, "name", None) != name:
            raise ConfigError(f"{kind} {name!r} is registered as {name!r} but its class "
                              f"attribute `name` is {getattr(obj, 'name', None)!r}; make them "
                              "equal")
        return obj

    return check
