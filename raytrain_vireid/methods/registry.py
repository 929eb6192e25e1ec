"""Method registry: ``get_method(name)`` imports ``raytrain_vireid.methods.<name>`` and returns its class."""

from __future__ import annotations

import importlib

from raytrain_vireid.config import METHODS
from raytrain_vireid.errors import UserError

REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a :class:`~raytrain_vireid.methods.base.Method` subclass findable by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    """The Method class called ``name`` (its module ``raytrain_vireid.methods.<name>`` is imported on demand)."""
    if name not in REGISTRY:
        if name not in METHODS:
            raise UserError(f"method: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
        try:
            importlib.import_module(f"raytrain_vireid.methods.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"raytrain_vireid.methods.{name}":
                raise
            raise UserError(f"method: {name!r} is not implemented yet") from None
    return REGISTRY[name]
