"""Where the default teaching VLM and its starter library live (no heavy imports: the CLI, the app and the
scripts read these before any model loads).

``ASSETS_DIR``: the shipped teaching VLM (``assets/teaching-vlm``), or ``$MMICT_TEACHING_DIR`` when set -- a
teaching-VLM folder, e.g. one made by ``mmict pretrain-teaching``.  Read once at import: every front end, script
and benchmark that loads the 'teaching' backbone then uses it, and the starter library defaults to its
``library/`` folder (``$MMICT_STARTER_LIBRARY`` overrides that in turn, see :func:`mmict_core.casestudy.starter_library`).
"""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "teaching-vlm"
ASSETS_DIR = Path(os.environ.get("MMICT_TEACHING_DIR") or SHIPPED_DIR).expanduser().resolve()
STARTER_DIR = ASSETS_DIR / "library"
