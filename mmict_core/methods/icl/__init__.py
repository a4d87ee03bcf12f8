"""Plain k-shot in-context learning: no training, demonstrations interleaved in the input."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base import Method, MethodConfig
from ..registry import register_method


@dataclass
class ICLConfig(MethodConfig):
    shots: int = field(default=8, metadata={"help": "demonstrations interleaved before the query"})


@register_method
class ICL(Method):
    name = "icl"
    config_class = ICLConfig
    tiny_config = {"shots": 2}
    needs_training = False
    uses_demos = True
    summary = "k-shot in-context learning: (prompt, image, answer) demos, then the query"

    def expected_num_parameters(self) -> int:
        return 0
