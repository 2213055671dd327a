"""Registries for pluggable parts (STYLE.md, item 8): defect kinds, describers, rewards,
benchmark adapters… A name can be registered once; an unknown name lists the valid ones.

>>> colours = Registry("colour")
>>> red = colours.add("red", (255, 0, 0))
>>> colours.lookup("blue")
Traceback (most recent call last):
...
qsave.errors.ConfigError: unknown colour 'blue'; valid: red
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from qsave.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A ``name → item`` table that refuses duplicates and explains unknown names."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind  # what the items are, for messages: "reward", "defect kind", …

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a duplicate name raises."""
        if name in self:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def lookup(self, name: str) -> T:
        """The item called ``name``; an unknown name raises and lists the valid ones."""
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self))}")
        return self[name]
