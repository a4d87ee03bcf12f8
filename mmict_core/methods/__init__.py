"""Methods: one package each (config, modules, injection), registered in ``METHODS``."""
from .base import AdapterLoadError, Handle, Method, MethodConfig, check_range, read_adapter, swap_attr
from .registry import METHODS, get_method, method_names, register_method
from . import icl  # noqa: F401  (registers)

__all__ = ["AdapterLoadError", "Handle", "Method", "MethodConfig", "check_range", "read_adapter", "swap_attr",
           "METHODS", "get_method", "method_names", "register_method"]
