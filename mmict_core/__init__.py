"""MMICT Studio core: multimodal in-context learning and in-context tuning on VLMs."""
__version__ = "0.1.0"
