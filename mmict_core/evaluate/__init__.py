"""Metrics (one per module, no model imports) and the evaluation loops."""
