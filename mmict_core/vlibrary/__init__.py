"""VLibrary: an on-disk library of trained adapters (any method) to list, search, load, compose and inject."""
from .library import LibraryError, VLibrary, check_name, default_root, example_key, mix_tensors

__all__ = ["LibraryError", "VLibrary", "check_name", "default_root", "example_key", "mix_tensors"]
