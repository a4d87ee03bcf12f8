"""3. Backbone memory and speed: fp32 vs bitsandbytes 8-bit vs 4-bit (nf4) loads of the teaching
VLM and of tiny random configs scaled up — footprint, resident memory and LM forward time."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mmict_core.backbones import ASSETS_DIR, TeachingVLM

from .common import scaled_backbone
from .stats import peak_rss_bytes, ratio, release_memory, reset_peak_rss, round_robin, rss_bytes, summarize

QUANTS = ("none", "8bit", "4bit")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _quant_state_tensors(qs, out: list) -> None:
    """Every tensor of a bitsandbytes QuantState (absmax, code, offset, nested state2)."""
    for v in vars(qs).values():
        if torch.is_tensor(v):
            out.append(v)
        elif hasattr(v, "absmax") and hasattr(v, "code"):  # nested QuantState
            _quant_state_tensors(v, out)


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's weights as stored: parameters (packed for 4-bit), buffers, and the
    quantisation statistics (4-bit absmax/code, 8-bit per-row scales SCB, on the weight before the
    first forward and on the layer's state after it).  Each tensor once."""
    tensors: list[torch.Tensor] = []
    for p in module.parameters():
        tensors.append(p)
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            _quant_state_tensors(qs, tensors)
        scb = getattr(p, "SCB", None)
        if torch.is_tensor(scb):
            tensors.append(scb)
    tensors += list(module.buffers())
    for mod in module.modules():  # bitsandbytes 8-bit: after the first forward the scales live in layer.state
        state = getattr(mod, "state", None)
        for name in ("SCB", "CB"):  # CB is the int8 weight itself (counted once by the dedup below)
            t = getattr(state, name, None)
            if torch.is_tensor(t):
                tensors.append(t)
    seen, total = set(), 0
    for t in tensors:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if t.numel() and key not in seen:
            seen.add(key)
            total += tensor_bytes(t)
    return total


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _load(path, quant: str, ids: torch.Tensor):
    """Load, then run one forward (safetensors maps the file lazily: weights become resident when
    first used), measuring resident memory before, at the peak and after."""
    release_memory()
    before = rss_bytes()
    reset_peak_rss()
    t0 = time.perf_counter()
    bb = TeachingVLM.load(path, quant=quant)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    with torch.no_grad():
        t1 = time.perf_counter()
        bb.language_model(input_ids=ids, use_cache=False)
        first = time.perf_counter() - t1
    release_memory()
    after = rss_bytes()
    return bb, {"load_s": seconds, "first_forward_s": first,
                "rss_retained": None if before is None or after is None else max(0, after - before),
                "rss_peak_delta": None if before is None or peak is None else max(0, peak - before)}


def measure(path, name: str, sizes: dict | None, settings) -> dict:
    t_start = time.perf_counter()
    vocab = int(json.loads((Path(path or ASSETS_DIR) / "config.json").read_text())["text_config"]["vocab_size"])
    g = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(5, vocab, (1, settings.backbone_tokens), generator=g)
    loaded, rows = {}, []
    for q in QUANTS:
        bb, mem = _load(path, q, ids)
        loaded[q] = bb
        rows.append({"quant": q, **mem, "footprint": int(bb.model.get_memory_footprint()),
                     "lm_weight_bytes": weight_bytes(bb.language_model),
                     "lm_linear_types": sorted({type(m).__name__ for m in bb.decoder_layers()[0].modules()
                                                if isinstance(m, torch.nn.Linear)})})
    lm_params = count_parameters(loaded["none"].language_model)

    def task(q):
        lm = loaded[q].language_model

        def t(_r: int) -> float:
            with torch.no_grad():
                t0 = time.perf_counter()
                lm(input_ids=ids, use_cache=False)
                return time.perf_counter() - t0
        return t

    times = round_robin({q: task(q) for q in QUANTS}, settings.backbone_rounds)
    ref = {r["quant"]: r for r in rows}["none"]
    fp32_fwd = summarize(times["none"])["median"]
    for r in rows:
        s = summarize(times[r["quant"]])
        r["forward_s"] = s
        r["forward_ratio"] = ratio(s["median"], fp32_fwd)
        r["footprint_ratio"] = ratio(r["footprint"], ref["footprint"])
        r["lm_vs_fp16"] = ratio(r["lm_weight_bytes"], 2 * lm_params)
    loaded.clear()
    release_memory()
    return {"name": name, "sizes": sizes, "lm_parameters": lm_params, "fp16_lm_bytes": 2 * lm_params,
            "tokens": settings.backbone_tokens, "rows": rows, "seconds": time.perf_counter() - t_start}


def run(settings) -> dict:
    import warnings

    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    results = [measure(None, "teaching-vlm (shipped)", None, settings)]
    for sizes in settings.scaled_configs:
        tmp = Path(tempfile.mkdtemp(prefix="mmict-bench-"))
        try:
            bb = scaled_backbone(seed=settings.seed, **sizes)
            bb.save(tmp)
            del bb
            release_memory()
            label = f"random LM {sizes['lm_hidden']}x{sizes['lm_layers']}"
            results.append(measure(tmp, label, dict(sizes), settings))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"configs": results, "notes": [
        "fp16 reference = 2 bytes per LM parameter (parameters counted on the fp32 load; no fp16 load).",
        "LM weight bytes = the language model's parameters as stored (4-bit: packed uint8), its buffers, and the "
        "quantisation statistics (4-bit absmax + code incl. double-quant state, 8-bit per-row SCB scales); the "
        "embedding (tied with lm_head) and norms stay fp32, as bitsandbytes leaves them.",
        "Footprint = transformers' model.get_memory_footprint() of the whole VLM (vision tower, Q-Former, projection "
        "stay fp32; it counts parameters and buffers, not the quantisation statistics).",
        "RSS after load = growth of the process's resident memory after the load and one forward (weights are "
        "mapped lazily from the safetensors file and become resident when first used; gc + malloc_trim before and "
        "after); RSS peak = growth of VmHWM during the load itself (reset through /proc/self/clear_refs). Loads run "
        "one after another in one process, so these are deltas, not totals.",
        f"Forward = one LM forward of {settings.backbone_tokens} random tokens, batch 1, no cache; the three loads "
        f"interleaved round-robin ({settings.backbone_rounds} rounds); ratio to fp32 on the same config.",
        "bitsandbytes on CPU: 8-bit casts activations to fp16 for its int8 matmul; 4-bit dequantises per forward "
        "(the AVX512-BF16 repack is switched off so adapters keep their gradients).",
    ]}
