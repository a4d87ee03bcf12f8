"""Read-only views into an adapted model (attention, virtual K/V), ready for plotting."""
