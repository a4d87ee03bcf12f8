"""Methods: one package each (config, modules, injection), registered in ``METHODS``."""
from .base import (AdapterLoadError, AttentionCapture, Handle, Method, MethodConfig, captures_attention, check_range,
                   read_adapter, swap_attr)
from .registry import METHODS, create_method, get_method, method_names, register_method
from . import icl  # noqa: F401  (registers)
from . import mmict  # noqa: F401  (registers)
from . import hificl  # noqa: F401  (registers)
from . import m2iv  # noqa: F401  (registers)
from . import mimic, live, lora  # noqa: F401  (register)
from . import task_vector, function_vector, mtv, i2cl  # noqa: F401  (register)

__all__ = ["AdapterLoadError", "AttentionCapture", "captures_attention", "Handle", "Method", "MethodConfig", "check_range", "read_adapter", "swap_attr",
           "METHODS", "create_method", "get_method", "method_names", "register_method"]
