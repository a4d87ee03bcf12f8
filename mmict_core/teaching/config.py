"""The pretraining recipe's settings.  The defaults ARE the shipped recipe: `mmict pretrain-teaching
--out DIR --seed S` needs no other flag.  The other fields exist for experiments and for
continuing a saved model (``init_from``)."""
from __future__ import annotations

from dataclasses import dataclass, field

# task mix of the episode stage (the downstream ft-* tasks are never part of it)
DEFAULT_MIX = {"shapes-vqa": 0.22, "shapes-caption": 0.04, "digits": 0.05, "binding": 0.18, "operator": 0.08,
               "format": 0.12, "clip-qa": 0.15, "clip-caption": 0.16}
MIX_TASKS = set(DEFAULT_MIX) | {"binding-cued"}
# Q-Former text-path stage: items whose text ("prompt answer") follows from the image
HUB_MIX = {"shapes-vqa": 0.3, "shapes-caption": 0.25, "digits": 0.1, "clip-qa": 0.15, "clip-caption": 0.2}


@dataclass
class PretrainConfig:
    seed: int = 0
    init_from: str | None = None  # continue from a saved teaching VLM instead of a fresh one
    # the model: the ViT is created (or grown, when continuing) to these sizes
    vision_layers: int | None = 4
    vision_intermediate: int | None = 256
    # stage: vision (supervised heads on the ViT's patch grid)
    vision_steps: int | None = None  # None: 3000 from scratch, 0 when continuing
    vision_batch: int = 64
    vision_lr: float = 2e-3
    vision_position: float = 1.0  # weight of the per-patch row / column loss (keeps where a patch is; 0: none)
    # stage: M-Hub text path (BLIP-2 stage-1 style ITG + ITM on the Q-Former)
    hub_steps: int | None = None  # None: 1500 from scratch, 0 when continuing
    hub_batch: int = 32
    hub_lr: float = 1e-3
    hub_itg: float = 1.0  # weight of image-grounded text generation
    hub_itm: float = 1.0  # weight of image-text matching
    hub_mlm: float = 1.0  # weight of masked-answer prediction from the bidirectional text outputs
    hub_text_negatives: bool = False  # ITM also on answer-swapped texts (see hub.hub_losses; off: the probe read less colour with them)
    probe_scenes: int = 900  # scenes of the M-Hub probe run around the stage (see hub.mhub_probe)
    # stage (experimental, off): text-only associative recall for the LM
    induction_steps: int = 0
    induction_lr: float = 5e-4
    induction_batch: int = 32
    # stage: episodes
    steps: int = 11000
    batch: int = 16
    lr: float = 1.5e-3
    vision_lr_scale: float = 0.1  # episode-stage lr of the vision encoder, relative
    warmup: int = 200
    min_lr_ratio: float = 0.05
    max_shots: int = 8
    clip_max_shots: int = 2  # demonstrations per training episode of the clip tasks (each clip is 4-8 images)
    clip: float = 1.0  # gradient-norm clip
    weight_decay: float = 0.01
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    binding_ways: tuple = (2, 4)  # n_way of training binding episodes, drawn uniformly in [lo, hi]
    key_loss: float = 1.0  # weight of the auxiliary binding-key loss (0: none); see auxiliary.colour_key_targets
    key_layer: int = 2  # LM layer whose output the key loss reads (1..num_layers-1)
    match_loss: float = 0.5  # weight of the binding-match attention loss (0: none); see auxiliary.binding_match_targets
    match_layer: int = 2  # decoder layer (0-based) whose head `match_head` the match loss supervises
    match_head: int = 0
    copy_loss: float = 1.0  # weight of the binding-copy loss on that head's direct logits (0: none); see auxiliary.copy_loss
    cell_loss: float = 1.0  # weight of the per-cell read-out loss on the image tokens, hub + episode stages (0: none); see cells
    cell_batch: int = 8  # fresh scenes per step for the cell read-out loss
    eval_every: int = 1000
    eval_episodes: int = 32
    stop_at: int | None = None  # stop after this many steps of the `steps`-long schedule (None: run it all)
    answer_marker: bool | None = None  # False: answers right after the image tokens (None: on / as the init has it)
    image_norm: float | None = None  # rescale the projection so image tokens have this mean norm (None: keep)
    threads: int | None = None  # torch threads (None: torch's default)

    def __post_init__(self) -> None:
        fresh = self.init_from is None
        if self.vision_steps is None:
            self.vision_steps = 3000 if fresh else 0
        if self.hub_steps is None:
            self.hub_steps = 1500 if fresh else 0
        for name in ("vision_layers", "vision_intermediate"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or None to keep the ViT's), got {getattr(self, name)}")
        if min(self.steps, self.vision_steps, self.hub_steps, self.induction_steps) < 0 or self.batch < 1:
            raise ValueError("steps, vision_steps, hub_steps and induction_steps must be >= 0 and batch >= 1")
        if self.hub_itg < 0 or self.hub_itm < 0 or self.hub_mlm < 0:
            raise ValueError(f"hub_itg and hub_itm must be >= 0, got {self.hub_itg} / {self.hub_itm}")
        if self.match_loss < 0 or self.match_layer < 0 or self.match_head < 0:
            raise ValueError(f"match_loss, match_layer and match_head must be >= 0, got "
                             f"{self.match_loss} / {self.match_layer} / {self.match_head}")
        if self.copy_loss < 0:
            raise ValueError(f"copy_loss must be >= 0, got {self.copy_loss}")
        if self.vision_position < 0:
            raise ValueError(f"vision_position must be >= 0, got {self.vision_position}")
        if self.cell_loss < 0 or self.cell_batch < 1:
            raise ValueError(f"cell_loss must be >= 0 and cell_batch >= 1, got {self.cell_loss} / {self.cell_batch}")
        if self.key_loss < 0 or self.key_layer < 1:
            raise ValueError(f"key_loss must be >= 0 and key_layer >= 1, got {self.key_loss} / {self.key_layer}")
        if self.vision_lr_scale < 0:
            raise ValueError(f"vision_lr_scale must be >= 0 (0 freezes the vision encoder), got {self.vision_lr_scale}")
        if self.image_norm is not None and not self.image_norm > 0:
            raise ValueError(f"image_norm must be > 0, got {self.image_norm}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"stop_at must be between 1 and steps ({self.steps}), got {self.stop_at}")
        if not 0 <= self.clip_max_shots <= self.max_shots:
            raise ValueError(f"clip_max_shots must be in [0, max_shots={self.max_shots}], got {self.clip_max_shots}")
        if abs(sum(self.mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"task mix weights must sum to 1, got {sum(self.mix.values())}")
        unknown = set(self.mix) - MIX_TASKS
        if unknown:
            raise ValueError(f"unknown tasks in the mix: {sorted(unknown)}; known: {sorted(MIX_TASKS)}")
        self.binding_ways = tuple(int(x) for x in self.binding_ways)
        lo, hi = self.binding_ways
        if not 2 <= lo <= hi <= 6:
            raise ValueError(f"binding_ways must satisfy 2 <= lo <= hi <= 6 (six colours), got {self.binding_ways}")
