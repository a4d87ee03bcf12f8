"""All four panels over one session, in tabs, wired together: a finished training run refreshes
the method lists of the comparison panel and the attention explorer."""
from __future__ import annotations

import ipywidgets as W

from ..workbench import Session
from ._common import Panel
from .attention import AttentionExplorer
from .comparison import ComparisonPanel
from .picker import DemoPicker
from .training import TrainingPanel


class Studio(Panel):
    """``picker``, ``training``, ``comparison`` and ``attention`` panels over ``session`` in a Tab."""

    def __init__(self, session: Session, *, threaded: bool = True, starter: bool = True):
        self.session = session
        if starter:  # the starter library shipped with the teaching VLM, read-only (its entries for this backbone)
            from ..casestudy import starter_library

            session.share_library(starter_library())
        self.picker = DemoPicker(session)
        self.training = TrainingPanel(session, threaded=threaded)
        self.comparison = ComparisonPanel(session)
        self.attention = AttentionExplorer(session)
        self.training.on_done.append(self.comparison.refresh)
        self.training.on_done.append(self.attention.refresh)
        self.status = W.HTML()
        self.widget = W.Tab(children=[self.picker.widget, self.training.widget, self.comparison.widget,
                                      self.attention.widget],
                            titles=("Demonstrations", "Train", "Compare", "Attention"))
