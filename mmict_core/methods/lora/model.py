"""LoRA through peft's layer classes: out = W x + (alpha / r) B A dropout(x) on chosen LM linears.

The adapter's A and B are this Method's own parameters.  At construction, one peft LoRA layer
(``peft.tuners.lora.layer.Linear``, or ``peft.tuners.lora.bnb.Linear8bitLt`` / ``Linear4bit``
for bitsandbytes layers, chosen by peft's own dispatchers) wraps each target; its lora_A/lora_B
weights are replaced by this Method's parameters.  Attaching swaps the wrappers into the
decoder layers; detaching swaps the original modules back, so the backbone is untouched.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn

from ...backbones.quant import import_bitsandbytes_quietly
from ..base import Handle, Method, swap_attr
from ..registry import register_method
from .config import LoRAConfig

ADAPTER = "default"


def find_targets(backbone, names: tuple) -> list[tuple[int, str, nn.Module]]:
    """(layer, dotted name inside the decoder layer, module) of every linear whose name is in ``names``."""
    out, found = [], set()
    for i, layer in enumerate(backbone.decoder_layers()):
        for name, mod in layer.named_modules():
            last = name.rsplit(".", 1)[-1]
            if last in names and isinstance(mod, nn.Linear):  # bnb Linear8bitLt / Linear4bit are nn.Linear too
                out.append((i, name, mod))
                found.add(last)
    missing = [n for n in names if n not in found]
    if missing:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in backbone.decoder_layers()[0].named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRAConfig.target_modules: no linear module named {missing} in the LM's decoder layers; "
                         f"available: {linears}")
    return out


def peft_lora_layer(target: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """A peft LoRA layer around ``target``, by peft's dispatchers (bitsandbytes 8/4-bit, then plain)."""
    import_bitsandbytes_quietly()  # peft imports bitsandbytes: without its 4-bit remote-kernel notice
    from peft import LoraConfig  # imported here: peft (and bitsandbytes) take seconds to import
    from peft.tuners.lora.layer import dispatch_default

    pcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, init_lora_weights=False,
                      target_modules=list(cfg.target_modules))
    dispatchers = []
    try:
        from peft.tuners.lora.bnb import dispatch_bnb_4bit, dispatch_bnb_8bit
        dispatchers += [dispatch_bnb_8bit, dispatch_bnb_4bit]
    except ImportError:  # bitsandbytes absent: only plain layers
        pass
    kwargs = dict(r=cfg.r, lora_alpha=cfg.lora_alpha, loaded_in_8bit=True, loaded_in_4bit=True)
    with torch.random.fork_rng(devices=[]):  # peft's throwaway nn.Linear inits must not move the global RNG
        for dispatch in dispatchers + [dispatch_default]:
            layer = dispatch(target, ADAPTER, config=pcfg, **kwargs)
            if layer is not None:
                return layer
    raise ValueError(f"peft has no LoRA layer for {type(target).__name__}")


@register_method
class LoRA(Method):
    name = "lora"
    config_class = LoRAConfig
    tiny_config = {"r": 2}
    summary = "LoRA (peft layers) on the LM's attention projections, trained on the query's answer (0-shot)"

    def __init__(self, backbone, config: LoRAConfig | None = None):
        super().__init__(backbone, config)
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed)
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        targets, layers = [], []
        for i, name, mod in find_targets(backbone, cfg.target_modules):
            key = f"{i}_{name.replace('.', '_')}"
            a = torch.empty(cfg.r, mod.in_features)  # A (r, in): peft's default kaiming-uniform init
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)
            self.lora_A[key] = nn.Parameter(a.to(backbone.device))
            self.lora_B[key] = nn.Parameter(torch.zeros(mod.out_features, cfg.r, device=backbone.device))  # B (out, r) = 0
            layer = peft_lora_layer(mod, cfg)
            layer.lora_A[ADAPTER].weight = self.lora_A[key]  # the wrapper computes with our parameters
            layer.lora_B[ADAPTER].weight = self.lora_B[key]
            parent_name, _, attr = name.rpartition(".")
            parent = backbone.decoder_layers()[i].get_submodule(parent_name)
            targets.append((parent, attr, mod))
            layers.append(layer)
        # plain lists: the wrappers hold backbone modules and must not become submodules of the adapter
        object.__setattr__(self, "_targets", targets)
        object.__setattr__(self, "_layers", layers)

    def expected_num_parameters(self) -> int:
        return sum(self.config.r * (mod.in_features + mod.out_features) for _, _, mod in self._targets)

    def _attach(self) -> list[Handle]:
        handles = []
        for (parent, attr, mod), layer in zip(self._targets, self._layers):
            if getattr(parent, attr) is not mod:
                raise RuntimeError(f"{attr} of layer {type(parent).__name__} was replaced since this LoRA was built")
            layer.training = self.training  # only the LoRA branch's own flags: the base module keeps its mode
            for drop in layer.lora_dropout.values():
                drop.train(self.training)
            handles.append(swap_attr(parent, attr, layer))
        return handles

    @contextlib.contextmanager
    def merged(self) -> Iterator["LoRA"]:
        """Attached with B A merged into the base weights (one matmul per linear, as after
        ``merge_and_unload``); the original weights are put back bit-exactly on exit.  On
        bitsandbytes layers peft requantises the merged weight (rounding error)."""
        with self.attached():
            saved = []
            for layer in self._layers:
                base = layer.get_base_layer()
                state = getattr(base, "state", None)
                saved.append((base, base.weight, base.weight.data.clone(), dict(vars(state)) if state is not None else None))
            try:
                with torch.no_grad():
                    for layer in self._layers:
                        layer.merge()
                yield self
            finally:
                for layer, (base, weight, data, state) in zip(self._layers, saved):
                    layer.merged_adapters.clear()
                    base.weight = weight
                    weight.data = data
                    if state is not None:
                        base.state.__dict__.clear()
                        base.state.__dict__.update(state)
