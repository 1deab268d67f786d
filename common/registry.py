"""Registries of classes that answer to the names a config or flag gives (``face_weights``,
``face_detector``): one class may serve several names, and a name belongs to one class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def by_names(registry: dict[str, T], option: str) -> Callable[[T], T]:
    """A class decorator that registers a class under each name in its ``names`` attribute;
    ``option`` (the setting that selects it) names the clash when a name is taken twice."""

    def register(cls: T) -> T:
        for name in cls.names:
            if name in registry:
                raise ValueError(f"{option} name {name!r} is taken by {registry[name].__name__}")
            registry[name] = cls
        return cls

    return register
