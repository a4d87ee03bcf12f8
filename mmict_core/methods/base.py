"""One API for every method (PEFT-style).

A method is a :class:`Method` (an ``nn.Module`` whose parameters are the *adapter only*; the
backbone is referenced, never registered) with a :class:`MethodConfig` dataclass.  It changes the
backbone only inside ``with method.attached():`` — hooks, attention functions and module swaps are
installed on entry and removed on exit, whatever happens, so the backbone's outputs afterwards are
bit-identical to before.  Saved adapters are safetensors + JSON, tagged with the backbone
fingerprint; loading refuses a backbone or shape mismatch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from ..backbones.base import AssembledBatch, Segment, VLMBackbone
from ..data import Episode

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterLoadError(ValueError):
    """An adapter file that does not fit: wrong backbone, wrong shapes, corrupt or not safetensors."""


@dataclass
class MethodConfig:
    """Fields shared by every method.  Subclasses add documented fields and validate them, and
    name in ``rank_field`` the field that sets the adapter's size (what the app's and the
    widgets' "rank" box sets), or leave it None where there is none."""

    rank_field: ClassVar[str | None] = None

    shots: int = field(default=0, metadata={"help": "demonstrations in the input at inference time"})
    train_shots: int = field(default=0, metadata={"help": "demonstrations per training episode (teacher context for distillation methods)"})
    seed: int = field(default=0, metadata={"help": "seed of the adapter's initialisation"})

    def __post_init__(self) -> None:
        for name in ("shots", "train_shots"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a whole number >= 0, got {v!r}")
        self.validate()

    def validate(self) -> None:
        """Subclass hook: raise ValueError naming the field and the accepted range."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MethodConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def describe(cls) -> list[dict]:
        """Field name, type, default and help text (what the app and notebooks show)."""
        out = []
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
            out.append({"name": f.name, "type": str(f.type), "default": default, "help": f.metadata.get("help", "")})
        return out


def check_range(obj: Any, name: str, lo: float | None = None, hi: float | None = None, choices: Sequence | None = None) -> None:
    """Raise a ValueError naming ``obj.name`` when it is outside [lo, hi] or not in ``choices``."""
    v = getattr(obj, name)
    where = f"{type(obj).__name__}.{name}"
    if choices is not None:
        if v not in choices:
            raise ValueError(f"{where} must be one of {list(choices)}, got {v!r}")
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{where} must be in [{lo}, {hi}], got {v!r}")


class Handle:
    """A removable change to the backbone (hook, attribute swap, ...)."""

    def __init__(self, remove_fn):
        self._remove = remove_fn
        self.removed = False

    def remove(self) -> None:
        if not self.removed:
            self._remove()
            self.removed = True


def swap_attr(obj: Any, name: str, value: Any) -> Handle:
    """Set ``obj.name = value`` until the handle is removed."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    return Handle(lambda: setattr(obj, name, old))


class Method(nn.Module):
    """Base of every method.  Subclasses set ``name``, ``config_class`` and override ``_attach``
    (changes to the backbone) and, when their input differs from plain ICL, ``segments``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    needs_training: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = False  # training runs a k-shot teacher forward
    uses_demos: ClassVar[bool] = False  # inference input contains demonstrations
    summary: ClassVar[str] = ""
    tiny_config: ClassVar[dict] = {}  # config overrides for the fast contract / backbone-matrix tests

    def __init__(self, backbone: VLMBackbone, config: MethodConfig | None = None):
        super().__init__()
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        object.__setattr__(self, "backbone", backbone)  # not a submodule: adapter params only
        self.config = config
        self._depth = 0

    # -- injection ----------------------------------------------------------------------------
    def _attach(self) -> list[Handle]:
        """Install this method's changes on the backbone; return handles that undo them."""
        return []

    @contextlib.contextmanager
    def attached(self) -> Iterator["Method"]:
        """Attach for the duration of the block; always detached afterwards (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        handles: list[Handle] = []
        try:
            handles = self._attach()
            self._depth = 1
            yield self
        finally:
            self._depth = 0
            for h in reversed(handles):
                h.remove()

    # -- input --------------------------------------------------------------------------------
    def inference_episode(self, episode: Episode) -> Episode:
        """The episode as this method sees it at inference (demos dropped unless it uses them)."""
        if self.uses_demos:
            return episode
        return Episode(demos=[], query=episode.query, task=episode.task, info=episode.info)

    def segments(self, episode: Episode, *, with_answer: bool, loss_on: str = "query") -> list[Segment]:
        return self.backbone.episode_segments(self.inference_episode(episode), with_answer=with_answer, loss_on=loss_on)

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query") -> AssembledBatch:
        if type(self).segments is Method.segments:  # plain layout: batch the image encoding
            return self.backbone.assemble_episodes([self.inference_episode(e) for e in episodes], with_answer=with_answer,
                                                   loss_on=loss_on, padding_side=padding_side)
        return self.backbone.assemble([self.segments(e, with_answer=with_answer, loss_on=loss_on) for e in episodes],
                                      padding_side=padding_side)

    def loss(self, episodes: Sequence[Episode], loss_on: str = "query") -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on ``episodes`` (default: cross-entropy of the attached model)."""
        with self.attached():
            ce = self.backbone.loss(self.batch(episodes, with_answer=True, loss_on=loss_on))
        return ce, {"ce": float(ce.detach())}

    @torch.no_grad()
    def generate(self, episodes: Sequence[Episode], max_new_tokens: int = 10, num_beams: int = 1) -> list[str]:
        return self.generate_batch(episodes, max_new_tokens=max_new_tokens, num_beams=num_beams)[0]

    @torch.no_grad()
    def generate_batch(self, episodes: Sequence[Episode], max_new_tokens: int = 10,
                       num_beams: int = 1) -> tuple[list[str], AssembledBatch]:
        """(answers, the left-padded batch they were generated from): one assembly, so callers
        read token counts off the batch instead of assembling again.  Always in eval mode (no
        dropout), whatever mode the method is in; the mode is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with self.attached():
                batch = self.batch(episodes, with_answer=False, padding_side="left")
                return self.backbone.generate_from(batch, max_new_tokens=max_new_tokens, num_beams=num_beams), batch
        finally:
            self.train(was_training)

    # -- parameters ---------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups (torch ``param_groups``): by default weight decay on >= 2-D parameters
        only.  Methods with per-part learning rates override this."""
        params = self.trainable_parameters()
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    def expected_num_parameters(self) -> int | None:
        """The parameter count from the method's formula (None where there is none)."""
        return None

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write ``adapter.safetensors`` + ``adapter_config.json`` atomically into folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"method": self.name, "config": self.config.to_dict(), "backbone": self.backbone.fingerprint(),
                "shapes": {k: list(v.shape) for k, v in tensors.items()}, "metadata": metadata or {}}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_file(tensors, str(tmp / ADAPTER_WEIGHTS))
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, backbone: VLMBackbone) -> "Method":
        """Load a saved adapter onto ``backbone``; refuses a mismatch with a clear error."""
        meta, tensors = read_adapter(path)
        if cls.name and meta["method"] != cls.name:
            raise AdapterLoadError(f"{path} holds a {meta['method']!r} adapter, not {cls.name!r}")
        fp = backbone.fingerprint()
        if meta["backbone"] != fp:
            raise AdapterLoadError(
                f"{path} was trained on another backbone (fingerprint {meta['backbone'][:12]}, this one {fp[:12]}); "
                f"load it onto the backbone it was trained on or retrain it")
        method = cls(backbone, cls.config_class.from_dict(meta["config"]))
        own = method.state_dict()
        bad = sorted(k for k in set(own) | set(tensors) if k not in own or k not in tensors or own[k].shape != tensors[k].shape)
        if bad:
            raise AdapterLoadError(f"{path}: parameter names or shapes do not match this method/backbone: {bad[:5]}")
        method.load_state_dict(tensors)
        return method


@runtime_checkable
class AttentionCapture(Protocol):
    """The attention-capture protocol (what the app's Attention tab and the widgets' explorer read).

    A method whose attention mixes ``n`` extra ("virtual") key/value slots into the real keys —
    HiFICL's learned K/V pairs, MimIC's gated shift (one slot), any new attention method —
    implements ``capture()``: a context manager yielding a dict that every attached forward fills
    with ``layer -> (alpha (B, H, T), w (B, H, T, n))``: alpha the share of the real keys, w the
    share of each virtual slot (alpha + w.sum(-1) = 1), computed by the method's own attention
    function (not a second implementation)."""

    def capture(self) -> ContextManager[dict[int, tuple[torch.Tensor, torch.Tensor]]]: ...


def captures_attention(method: Any) -> bool:
    """True when ``method`` implements :class:`AttentionCapture`."""
    return isinstance(method, AttentionCapture)


def read_adapter(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config json, tensors) of a saved adapter folder, with clear errors for bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg, wts = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg.is_file() or not wts.is_file():
        raise AdapterLoadError(f"{path} is not an adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterLoadError(f"{cfg} is not valid JSON ({exc})") from exc
    for key in ("method", "config", "backbone", "shapes"):
        if key not in meta:
            raise AdapterLoadError(f"{cfg} lacks the field {key!r}; it was not written by MMICT Studio")
    try:
        tensors = load_file(str(wts))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterLoadError(f"{wts} is not a readable safetensors file ({exc}); it may be truncated — save it again") from exc
    for k, shape in meta["shapes"].items():
        if k not in tensors or list(tensors[k].shape) != list(shape):
            raise AdapterLoadError(f"{wts} does not match its config at {k!r}; the folder is damaged")
    bad = nonfinite_tensors(tensors)
    if bad:
        raise AdapterLoadError(f"{wts} holds NaN or infinite values (in {bad[:3]}): its training diverged; "
                               f"retrain it with a lower learning rate")
    return meta, tensors


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity, sorted."""
    return sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
