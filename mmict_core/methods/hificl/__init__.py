"""HiFICL: learnable low-rank virtual key/value pairs in every decoder attention head.

Per layer l and query head h: K_learn = K_A·K_B, V_learn = V_A·V_B ∈ R^{n×d_h}, mixed into the
real attention with the exact softmax weights (see :mod:`.attention`).  Teacher-free: trained with
the plain cross-entropy of the adapted model (Method.loss).  Spec: methods.md §2 and §9.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..base import Handle, Method, MethodConfig, check_range
from ..attention import STOCK, install_attention
from ..registry import register_method
from .attention import (ATTENTION_PATHS, ATTN_NAME, hificl_attention_forward, hificl_mask, implicit_mask,
                        prefix_visible)

Z2_MODES = ("masked", "faithful")
# implementations whose attention HiFICL reproduces as SA_out (eager itself; the rest through sdpa)
STOCK_IMPLEMENTATIONS = STOCK


@dataclass
class HiFICLConfig(MethodConfig):
    rank_field = "rank"  # ClassVar on the base
    n_virtual: int = field(default=8, metadata={"help": "virtual key/value slots n per layer and head"})
    rank: int = field(default=8, metadata={"help": "rank r of K_learn = K_A K_B and V_learn = V_A V_B (paper: 8 for VQAv2, 16 for OK-VQA)"})
    z2: str = field(default="masked", metadata={"help": "Z2 (the real keys' softmax mass): 'masked' = causal + padding mask "
                                                         "(training and cached decoding agree); 'faithful' = the official code, "
                                                         "logsumexp over all keys of the sequence, future and pads included"})

    def validate(self) -> None:
        for name in ("n_virtual", "rank"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{type(self).__name__}.{name} must be a whole number in [1, 4096], got {v!r}")
            check_range(self, name, 1, 4096)
        check_range(self, "z2", choices=Z2_MODES)


def low_rank_kv(K_A: torch.Tensor, K_B: torch.Tensor, V_A: torch.Tensor, V_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual keys and values from their rank-r factors, in fp32: K_learn = K_A·K_B, V_learn = V_A·V_B.
    K_A/V_A (…, n, r), K_B/V_B (…, r, d) -> (K_learn, V_learn), each (…, n, d)"""
    return K_A.float() @ K_B.float(), V_A.float() @ V_B.float()


@register_method
class HiFICL(Method):
    name = "hificl"
    config_class = HiFICLConfig
    tiny_config = {"n_virtual": 2, "rank": 2}
    summary = "low-rank virtual K/V pairs per layer and head, mixed into attention by the exact softmax split (teacher-free)"

    def __init__(self, backbone, config: HiFICLConfig | None = None):
        super().__init__(backbone, config)
        cfg = self.config
        L, H, d = backbone.num_layers, backbone.num_heads, backbone.head_dim  # H: query heads (GQA keys repeated)
        n, r = cfg.n_virtual, cfg.rank
        g = torch.Generator().manual_seed(cfg.seed)
        self.K_A = nn.Parameter(torch.randn(L, H, n, r, generator=g))  # (L, H, n, r)  N(0, 1)
        self.K_B = nn.Parameter(torch.randn(L, H, r, d, generator=g) * 0.01)  # (L, H, r, d)  N(0, 1)·0.01
        self.V_A = nn.Parameter(torch.randn(L, H, n, r, generator=g))  # (L, H, n, r)  N(0, 1)
        self.V_B = nn.Parameter(torch.zeros(L, H, r, d))  # (L, H, r, d)  0: no injected value at init
        self.dims = dict(layers=L, heads=H, head_dim=d)
        self.to(backbone.device)
        self._capture: dict | None = None
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None
        self._kv_key: tuple | None = None
        self._call = 0  # forward calls of the decoder while attached
        self.kv_computations = 0  # how often K_learn / V_learn were formed (benchmarks, tests)
        self._memo: dict = {}  # per decoder call: this call's per-layer K/V and fused mask
        self.attention_path = "auto"

    @property
    def attention_path(self) -> str:
        """'auto': the fused single-SDPA path wherever it is exact (z2='masked', no capture), else
        the split path; 'split': always the original split formulation (reference / before-timing)."""
        return self._attention_path

    @attention_path.setter
    def attention_path(self, value: str) -> None:
        if value not in ATTENTION_PATHS:
            raise ValueError(f"attention_path must be one of {list(ATTENTION_PATHS)}, got {value!r}")
        self._attention_path = value

    # -- the virtual keys and values ------------------------------------------------------------
    def _factors(self) -> tuple[nn.Parameter, ...]:
        return (self.K_A, self.K_B, self.V_A, self.V_B)

    def virtual_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K_learn, V_learn), each (L, H, n, d_h), fp32.

        Formed by one batched matmul per decoder forward call.  When no gradient is recorded they
        are reused across calls (every generated token) until a factor changes in place."""
        grad = torch.is_grad_enabled()
        key = (grad, torch.is_inference_mode_enabled(), self._call if grad else None,
               tuple((p._version, p.data_ptr(), p.device) for p in self._factors()))
        if self._kv is None or self._kv_key != key:
            K, V = low_rank_kv(self.K_A, self.K_B, self.V_A, self.V_B)  # (L, H, n, d) each
            self._kv, self._kv_key = (K, V), key
            self.kv_computations += 1
        return self._kv

    def _clear_kv(self) -> None:
        self._kv = self._kv_key = None
        self._memo.clear()

    def _this_call(self) -> dict:
        """Scratch space for the current decoder forward call (emptied when the next one starts;
        mutated in place: nn.Module.__setattr__ is slow)."""
        memo = self._memo
        key = (self._call, torch.is_grad_enabled())
        if memo.get("key") != key:
            memo.clear()
            memo["key"] = key
        return memo

    def _layer_kv(self, layer: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(K_learn, V_learn) of ``layer`` as (1, H, n, d_h) in ``dtype``: the cache check of
        :meth:`virtual_kv` runs once per decoder call, not once per layer."""
        memo = self._this_call()
        kv = memo.get(("kv", device, dtype))
        if kv is None:
            K, V = self.virtual_kv()
            kv = memo[("kv", device, dtype)] = (K.to(device, dtype).unsqueeze(1).unbind(0), V.to(device, dtype).unsqueeze(1).unbind(0))
        return kv[0][layer], kv[1][layer]

    def _fused_mask(self, mask: torch.Tensor | None, n: int, dtype: torch.dtype, q_len: int, k_len: int,
                    device: torch.device) -> torch.Tensor | None:
        """The decoder call's attention mask as an additive ``dtype`` mask with ``n`` always-visible
        virtual-key columns in front, built once per call (every layer gets the same tensor).
        None (no mask at all) where every key is visible: a decode step without padding."""
        if mask is None and q_len == 1:
            return None
        memo = self._this_call()
        if mask is None:
            key = ("mask", None, q_len, k_len, n, dtype)
        else:  # per-layer slices of one mask share its storage
            key = ("mask", mask.data_ptr(), tuple(mask.shape), mask.stride(), mask.dtype, n, dtype)
        hit = memo.get("mask")
        if hit is None or hit[0] != key:
            base = implicit_mask(q_len, k_len, device) if mask is None else mask
            hit = memo["mask"] = (key, prefix_visible(base, n, dtype))
        return hit[1]

    # -- injection ------------------------------------------------------------------------------
    def _attach(self) -> list[Handle]:
        handles = install_attention(self, ATTN_NAME)  # refuses (changing nothing) when another is attached
        self._clear_kv()
        handles.insert(0, Handle(self._clear_kv))

        def new_call(module, args, kwargs):
            self._call += 1

        hook = self.backbone.decoder().register_forward_pre_hook(new_call, with_kwargs=True)
        handles.insert(1, Handle(hook.remove))
        return handles

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """While the block runs, the attention function records per layer (α (B, H, T), w (B, H, T, n))."""
        self._capture = {}
        try:
            yield self._capture
        finally:
            self._capture = None

    # -- parameters -----------------------------------------------------------------------------
    def expected_num_parameters(self) -> int:
        s, c = self.dims, self.config
        return s["layers"] * s["heads"] * 2 * (c.n_virtual * c.rank + c.rank * s["head_dim"])


__all__ = ["HiFICL", "HiFICLConfig", "ATTN_NAME", "ATTENTION_PATHS", "hificl_attention_forward", "hificl_mask", "Z2_MODES"]
