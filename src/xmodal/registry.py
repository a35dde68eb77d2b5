"""Named extension points: one mechanism for encoders, aligners, metrics and data loaders.

A `Registry` maps names (as written in configs and spec strings) to entries: aligner classes,
encoder factories, metric definitions, loader functions. Entries come from
1. `register(name)` in xmodal's own modules, imported on the first lookup (`builtins`);
2. `register(name)` anywhere else (a notebook, a test);
3. entry points of installed packages in the registry's group (e.g. `xmodal.aligners`): listing
   names reads only package metadata; an entry point's object is imported the first time its
   name is looked up, and registered under the entry point's name.
Names registered in code win over entry points of the same name. This module imports nothing
from xmodal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no registry entry has; the message lists the choices."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class PluginError(RuntimeError):
    """An installed package's entry point could not be imported, or gave the wrong object."""


class Registry(Mapping[str, T], Generic[T]):
    """Names -> entries of one kind (e.g. "aligner"), with entry-point plugins.

    `prepare(name, obj)` checks (and may adapt) every entry as it is registered; it raises
    TypeError or ValueError for an object of the wrong shape.
    """

    def __init__(
        self,
        what: str,
        group: str,
        builtins: str | None = None,
        prepare: Callable[[str, Any], T] | None = None,
    ) -> None:
        self.what, self.group, self._builtins = what, group, builtins
        self._prepare = prepare or (lambda name, obj: obj)
        self._entries: dict[str, T] = {}
        self._plugins: dict[str, list[EntryPoint]] = {}
        self._scanned_path: tuple[str, ...] | None = None

    def register(self, name: str, obj: Any = None) -> Any:
        """`register(name, obj)`, or `@register(name)` as a decorator; returns the object."""
        if obj is None:
            return lambda o: self.register(name, o)
        old = self._entries.get(name)
        if old is not None and old is not obj:
            raise ValueError(
                f"{self.what} {name!r} is already registered ({_origin(old)}), "
                f"not registering {_origin(obj)}"
            )
        self._entries[name] = self._prepare(name, obj)
        return obj

    def __setitem__(self, name: str, obj: Any) -> None:
        """Register or replace (tests substitute entries this way)."""
        self._load_builtins()
        self._entries[name] = self._prepare(name, obj)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __getitem__(self, name: str) -> T:
        self._load_builtins()
        if name not in self._entries:
            found = self._entry_points().get(name)
            if not found:
                raise self.unknown(name)
            self._entries[name] = self._load(name, found)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries or name in self._entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Registered names in registration order, then the installed plugins' names, sorted."""
        self._load_builtins()
        return list(self._entries) + sorted(set(self._entry_points()) - set(self._entries))

    def unknown(
        self, name: str, where: str = "", hint: str = "", also: Iterable[str] = ()
    ) -> UnknownName:
        """The error for a name no entry has: what was asked for, and the choices (this
        registry's names, then `also`: names another registry accepts in the same place)."""
        names = self.names()
        choices = ", ".join(names + [n for n in also if n not in names]) or "none"
        return UnknownName(f"unknown {self.what} {name!r}{where}; choices: {choices}{hint}")

    def refresh(self) -> None:
        """Read installed entry points again (after installing a package into this process;
        a change of sys.path is noticed without it)."""
        self._scanned_path = None

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None  # once, and no recursion
            import_module(module)

    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        """This group's entry points by name, read again whenever sys.path changed."""
        if self._scanned_path != tuple(sys.path):
            self._plugins = {}
            for ep in entry_points(group=self.group):
                known = self._plugins.setdefault(ep.name, [])
                if not any(e.value == ep.value for e in known):  # one package seen twice
                    known.append(ep)
            self._scanned_path = tuple(sys.path)
        return self._plugins

    def _load(self, name: str, found: list[EntryPoint]) -> T:
        where = f"entry point {name!r} in group {self.group!r}"
        if len(found) > 1:
            sources = "; ".join(f"{ep.value} ({_dist(ep)})" for ep in found)
            raise PluginError(f"{where}: several installed packages define it: {sources}")
        ep = found[0]
        where = f"{where} ({ep.value}, from {_dist(ep)})"
        try:
            obj = ep.load()
        except Exception as e:  # any import-time failure of foreign code
            raise PluginError(f"{where} failed to load: {type(e).__name__}: {e}") from e
        try:
            return self._prepare(name, obj)
        except (TypeError, ValueError) as e:
            raise PluginError(f"{where} is not a usable {self.what}: {e}") from None


def _dist(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name} {dist.version}" if dist is not None else "an unnamed package"


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
