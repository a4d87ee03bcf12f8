"""The method registry: what the CLI, the app and the notebooks enumerate."""
from __future__ import annotations

from .base import Method

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method called {cls.name!r} is already registered ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_names() -> list[str]:
    return list(METHODS)


def create_method(name: str, backbone, **overrides) -> Method:
    """A fresh ``name`` method on ``backbone`` with config fields ``overrides`` — the one factory
    every front end (workbench, compare, presets, benchmarks, tests) builds methods with.

    Raises ValueError naming the method and the problem (unknown name, unknown or bad field)."""
    cls = get_method(name)
    try:
        config = cls.config_class.from_dict(overrides)
    except TypeError as exc:  # e.g. a value of the wrong kind reaching a validator
        raise ValueError(f"{name}: {exc}") from None
    return cls(backbone, config)
