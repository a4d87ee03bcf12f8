"""Did a training run learn its task?  A quick held-out check the front ends run after training, so
a run whose loss fell but whose answers did not improve says so instead of reporting "finished".

The adapter and the bare model answer the same held-out episodes (test split, the adapter's own
number of demonstrations); the run *learned* when the adapter beats the bare model by at least
``margin``."""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate.icl import evaluate_generation

CHECK_EPISODES = 32
MARGIN = 0.10  # ~2 standard errors of a difference of two accuracies on 32 episodes near the middle


@dataclass
class LearningCheck:
    accuracy: float  # the adapter, held-out
    baseline: float  # the bare model on the same episodes with the same demonstrations
    shots: int
    episodes: int
    margin: float = MARGIN

    @property
    def learned(self) -> bool:
        return self.accuracy >= self.baseline + self.margin

    def describe(self) -> str:
        """One sentence for a status line: the verdict first, then the numbers it rests on."""
        demos = f"{self.shots} demo{'s' if self.shots != 1 else ''}"
        nums = (f"held-out accuracy {self.accuracy:.2f} on {self.episodes} episodes vs {self.baseline:.2f} for the "
                f"bare model ({demos})")
        if self.learned:
            return f"Learned the task: {nums}."
        return (f"Did not learn the task: {nums}, no gain of {self.margin:.2f} or more. Try more steps, a task the "
                f"method can learn (HiFICL: binding with 'fixed binding'), or another method.")


def learning_check(backbone, method, task: str, *, fixed_binding: bool = False, episodes: int = CHECK_EPISODES,
                   seed: int = 0) -> LearningCheck:
    """Score ``method`` (a trained adapter) and the bare ``backbone`` on ``episodes`` held-out
    episodes of ``task`` at the adapter's number of demonstrations."""
    shots = int(method.config.shots) if method.uses_demos else 0
    opts = {"fixed_binding": True} if fixed_binding and task == "binding" else None
    kw = dict(episodes=episodes, seed=seed, progress=False, task_options=opts)
    acc = evaluate_generation(method.generate, task, [shots], **kw)[0].accuracy
    base = evaluate_generation(backbone.generate, task, [shots], **kw)[0].accuracy
    return LearningCheck(float(acc), float(base), shots, episodes)
