"""Plots and figures from plain arrays: loss / accuracy curves, virtual-K/V attention, case studies.

Rule of this package: it imports no model code (no torch, no transformers, nothing from
``mmict_core.backbones`` or ``mmict_core.methods``): numpy arrays and lists in, plotly figures,
PIL images and HTML out.
"""
from .attention import collapse_image_bands, slot_weights_figure, virtual_mass_grid, virtual_mass_per_token
from .case_study import (MARK_COLORS, CaseStudyLayout, case_study_html, case_study_layout, case_study_png,
                         save_case_study, upscale_nearest)
from .curves import accuracy_intervals, accuracy_vs_shots, ema, loss_curve, loss_curves
from .render import NOTEBOOK_RENDERER, figure_bundle, use_notebook_renderer

__all__ = [
    "loss_curve", "loss_curves", "accuracy_vs_shots", "accuracy_intervals", "ema",
    "collapse_image_bands", "virtual_mass_grid", "virtual_mass_per_token", "slot_weights_figure",
    "case_study_html", "case_study_png", "save_case_study", "case_study_layout", "CaseStudyLayout",
    "upscale_nearest", "MARK_COLORS", "NOTEBOOK_RENDERER", "figure_bundle", "use_notebook_renderer",
]
