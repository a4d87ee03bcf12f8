"""3. Backbone memory and speed: fp32 vs bitsandbytes 8-bit vs 4-bit (nf4) loads of the teaching
VLM, of tiny random configs scaled up, and of tiny random configs of the real classes (LLaVA,
Qwen2-VL, ...: ``mmict_core.backbones.tiny``) scaled up to the largest that fits a RAM budget —
footprint, resident memory and LM forward time."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from mmict_core.backbones import ASSETS_DIR, TeachingVLM

from .common import scaled_backbone
from .stats import fmt_bytes, peak_rss_bytes, ratio, release_memory, reset_peak_rss, round_robin, rss_bytes, summarize

QUANTS = ("none", "8bit", "4bit")
GIB = 1024 ** 3
# Peak resident memory of measuring one real-class size in the worker (build fp32 + save, then the fp32,
# 8-bit and 4-bit loads held together for the interleaved timing; loading from the fp32 file leaves about
# its size resident per quantised load): PEAK_BASE_BYTES (interpreter, torch, transformers, bitsandbytes,
# what earlier sizes left) + FP32_PEAK_FACTOR x the fp32 weight bytes (4 per parameter).  Calibrated on a
# 2-core CPU: worker peak RSS 2.71 GiB for LLaVA 1024x12 (156 M parameters, 0.58 GiB fp32) and 2.79 GiB for
# Qwen2-VL 1024x12 (136 M, 0.51 GiB) over a 0.45 GiB worker baseline, i.e. 3.9x / 4.6x; rounded up to 5.
FP32_PEAK_FACTOR = 5.0
PEAK_BASE_BYTES = 1 * GIB


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


def _load(path, quant: str, ids: torch.Tensor, loader=TeachingVLM.load):
    """Load (``loader(path, quant=...)``), then run one forward (safetensors maps the file lazily: weights
    become resident when first used), measuring resident memory before, at the peak and after."""
    release_memory()
    before = rss_bytes()
    reset_peak_rss()
    t0 = time.perf_counter()
    bb = loader(path, quant=quant)
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


def measure(path, name: str, sizes: dict | None, settings, loader=TeachingVLM.load) -> dict:
    t_start = time.perf_counter()
    vocab = int(json.loads((Path(path or ASSETS_DIR) / "config.json").read_text())["text_config"]["vocab_size"])
    g = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(5, vocab, (1, settings.backbone_tokens), generator=g)
    loaded, rows = {}, []
    for q in QUANTS:
        bb, mem = _load(path, q, ids, loader)
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


# ---------------------------------------------------------------------------------------------
# tiny random configs of the real classes, scaled up to a RAM budget (in one fresh worker process)


def fp32_peak_bytes(parameters: int, factor: float = FP32_PEAK_FACTOR, base: int = PEAK_BASE_BYTES) -> int:
    """Estimated peak resident memory of measuring an fp32 model of ``parameters`` parameters:
    ``base + factor * 4 * parameters`` bytes."""
    return int(base + factor * 4 * parameters)


def max_parameters_under(budget_bytes: int, factor: float = FP32_PEAK_FACTOR, base: int = PEAK_BASE_BYTES) -> int:
    """The most parameters whose :func:`fp32_peak_bytes` stays within ``budget_bytes`` (0 if none)."""
    return max(0, int((budget_bytes - base) // (4 * factor)))


def plan_under_budget(parameters: dict[str, int], budget_bytes: int, factor: float = FP32_PEAK_FACTOR,
                      base: int = PEAK_BASE_BYTES) -> list[dict]:
    """For each candidate ``label -> parameter count``: its estimated fp32 peak and whether it fits the
    budget (``fits``); ``largest`` marks the fitting candidate with the most parameters (the first such on a tie)."""
    plan = [{"label": label, "parameters": int(n), "fp32_peak_estimate": fp32_peak_bytes(n, factor, base),
             "fits": fp32_peak_bytes(n, factor, base) <= budget_bytes, "largest": False}
            for label, n in parameters.items()]
    fitting = [p for p in plan if p["fits"]]
    if fitting:
        max(fitting, key=lambda p: p["parameters"])["largest"] = True
    return plan


def real_parameters(kind: str, sizes: dict, tok=None) -> int:
    """Parameters of the tiny ``kind`` config at ``sizes``, counted on the meta device (nothing allocated)."""
    from mmict_core.backbones.loading import model_class_for
    from mmict_core.backbones.tiny import tiny_config

    config = tiny_config(kind, tok, **sizes)
    with torch.device("meta"):
        model = model_class_for(config)(config)
    return count_parameters(model)


class _PeakRss:
    """The highest :func:`rss_bytes` of this process while the block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_bytes() or 0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "_PeakRss":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _real_worker(jobs: list[tuple[str, dict, str]], settings) -> list[dict]:
    """In a fresh worker process: for each (kind, sizes, label), smallest first, build the tiny random
    fp32 model, save it in the real format and :func:`measure` its fp32 / 8-bit / 4-bit loads through
    ``load_hf_backbone`` (as a real checkpoint is loaded); the model folder is removed afterwards."""
    import warnings

    from mmict_core.backbones.loading import load_hf_backbone
    from mmict_core.backbones.tiny import save_tiny

    from .cli import _quiet

    torch.set_num_threads(settings.threads)
    out = []
    with _quiet():
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
        for kind, sizes, label in jobs:
            tmp = Path(tempfile.mkdtemp(prefix=f"mmict-bench-{kind}-"))
            try:
                release_memory()
                with _PeakRss() as peak:
                    t0 = time.perf_counter()
                    save_tiny(kind, tmp, seed=settings.seed, **sizes)
                    build_s = time.perf_counter() - t0
                    release_memory()
                    res = measure(tmp, label, dict(sizes), settings, loader=load_hf_backbone)
                res.update(kind=kind, build_s=build_s, worker_rss_peak=peak.peak, seconds=res["seconds"] + build_s)
                out.append(res)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                release_memory()
    return out


def measure_real(settings) -> dict:
    """The real-class part: plan every candidate size against ``settings.ram_budget_gb`` from its parameter
    count (before anything is built), then measure the fitting ones in one fresh worker process."""
    from mmict_core.backbones.tiny import tiny_name, tiny_tokenizer

    budget = int(settings.ram_budget_gb * GIB)
    tok = tiny_tokenizer()
    plans, jobs = {}, []
    for kind, candidates in settings.real_configs:
        labels = {tiny_name(kind, **sizes): sizes for sizes in candidates}
        if len(labels) < len(candidates):
            raise ValueError(f"{kind}: candidate sizes must differ in hidden size or layers (labels {list(labels)})")
        plan = plan_under_budget({label: real_parameters(kind, sizes, tok) for label, sizes in labels.items()}, budget)
        for p in plan:
            p["sizes"] = dict(labels[p["label"]])
            if p["fits"]:
                jobs.append((kind, p["sizes"], p["label"]))
        plans[kind] = plan
    configs = []
    if jobs:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            configs = pool.submit(_real_worker, jobs, settings).result()
    return {"budget_bytes": budget, "max_parameters": max_parameters_under(budget), "plans": plans, "configs": configs}


def _real_notes(real: dict) -> list[str]:
    budget = real["budget_bytes"]
    notes = [
        f"Real classes: tiny random configs of the real transformers classes (mmict_core.backbones.tiny, toy vision "
        f"tower and vocabulary, LM scaled), saved with save_pretrained and loaded back through load_hf_backbone, "
        f"in one fresh worker process, smallest first (RSS columns: deltas within that worker). Candidate sizes are "
        f"planned against a RAM budget of {fmt_bytes(budget)} from their parameter count (meta device, nothing "
        f"allocated): estimated fp32 peak = {fmt_bytes(PEAK_BASE_BYTES)} + {FP32_PEAK_FACTOR:g} x 4 B per parameter "
        f"(build + save, then fp32, 8-bit and 4-bit loads held together); sizes above the budget are skipped before "
        f"they are built. The budget admits up to {real['max_parameters'] / 1e6:,.0f} M parameters by this estimate; "
        f"the candidates are chosen to keep the section within its time share.",
        "Real classes: LM = the decoder (model.get_decoder(): embeddings, layers, final norm); the untied lm_head stays "
        "fp32 outside it (counted in the footprint). The teaching VLM's LM is its LlamaForCausalLM (lm_head tied).",
    ]
    for kind, plan in real["plans"].items():
        measured = {c["name"]: c for c in real["configs"]}
        parts = []
        for p in plan:
            c = measured.get(p["label"])
            if c is not None:
                parts.append(f"{p['label']} ({p['parameters'] / 1e6:,.1f} M parameters, estimated peak "
                             f"{fmt_bytes(p['fp32_peak_estimate'])}, measured worker peak RSS "
                             f"{fmt_bytes(c['worker_rss_peak'])}; {c['seconds']:.1f} s)"
                             + (" — the largest measured" if p["largest"] else ""))
            else:
                parts.append(f"{p['label']} ({p['parameters'] / 1e6:,.0f} M parameters): skipped, estimated fp32 peak "
                             f"{fmt_bytes(p['fp32_peak_estimate'])} > budget {fmt_bytes(budget)}")
        notes.append(f"{kind}: " + "; ".join(parts) + ".")
    return notes


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
    real = measure_real(settings)
    results += real["configs"]
    return {"configs": results, "real": {k: real[k] for k in ("budget_bytes", "max_parameters", "plans")}, "notes": [
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
        *_real_notes(real),
    ]}
