"""ipywidgets panels over the workbench (:mod:`mmict_core.workbench`): the notebook face of the same
library calls the Gradio app makes.  Each panel is a small controller over a
:class:`~mmict_core.workbench.Session` with its widgets as attributes, so it can be driven headless
(set ``.value``, call ``.click()``) as well as displayed (``display(panel)`` or ``panel.widget``).

- :class:`DemoPicker`: thumbnails to select / deselect, a selection strategy + k + "Fill", the query.
- :class:`TrainingPanel`: method, steps, lr; live progress and loss curve; background thread; cancel.
- :class:`ComparisonPanel`: ICL and the session's adapters on the same episode; table + case study.
- :class:`AttentionExplorer`: a HiFICL adapter's attention on its virtual K/V slots, per layer,
  head and token.
- :class:`Studio`: the four in tabs, wired together.
"""
from ._common import backbone_lock, png_bytes, set_figure
from ._figure import FigureView
from .attention import AttentionExplorer, head_view_figure
from .comparison import ComparisonPanel, rows_table_html
from .picker import DemoPicker
from .studio import Studio
from .training import TrainingPanel

__all__ = ["DemoPicker", "TrainingPanel", "ComparisonPanel", "AttentionExplorer", "Studio", "backbone_lock",
           "png_bytes", "set_figure", "FigureView", "head_view_figure", "rows_table_html"]
