"""Methods: hooks around the training step (see ``methods.base``); ``get_method(name)`` finds one."""

from raytrain_vireid.methods.registry import get_method, register

__all__ = ["get_method", "register"]
