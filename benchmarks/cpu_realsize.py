"""``benchmarks/cpu_realsize.sh``: the real classes at >= 1 B parameters in 4-bit on this CPU, within a time
budget -- the measuring code of :mod:`benchmarks.gpu` (per-query latency, training steps), plus per-token
decode latency over a random KV cache, at sizes a 2-core / 24 GB machine can run.

Models (:data:`MODELS`): InstructBLIP-Vicuna, LLaVA-Interleave-Qwen, Idefics2 and Qwen2-VL shapes scaled down
by the rule of :func:`benchmarks.realsize.scaled` (published head size, GQA and MLP ratios, vocabulary, RoPE and
image tokens per image; narrower and shallower decoder; a small vision tower) to >= 1 B decoder parameters, and
Idefics2 at ~0.25 B and ~0.5 B for the size trend.  Per model, sections in order (each starts only with
enough of the budget left, else it is skipped with a note; JSON + markdown + figure rewritten after each):

- build: parameters, LM weight bytes 4-bit vs fp16, build time;
- decode: per-token latency after a context of T positions held in a KV cache of random tensors of the right
  shape (latency does not depend on the cached values), bare at every ``decode_contexts`` T and with each
  adapter at 0 demos (HiFICL, MimIC, LIVE, M2IV attached; LoRA merged) at ``adapter_contexts``;
- queries (``query_models``): :func:`benchmarks.gpu.measure_queries` -- 0-shot, 8-shot ICL, adapters at 0 demos;
- training (``train_models``): :func:`benchmarks.gpu.measure_training` -- HiFICL, MimIC (teacher 8 / 32), LoRA,
  step time and peak RSS.

Then fits (least squares): decode latency linear in context per model, and linear in decoder parameters at
1k context over the sizes measured (:mod:`benchmarks.cpu_realsize_report`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import gpu
from .gpu_report import DISPLAY, environment
from .stats import summarize

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "realsize_cpu"

# (label, shape, decoder width, target decoder parameters), in the order they run: Idefics2 at 1 B (every
# section: the goals at the papers' 64 image tokens per image), its smaller sizes (the size trend: cheap), then
# the other classes at 1 B (build + decode)
MODELS = (("idefics2-1b", "idefics2-8b", 2048, 1.0e9),
          ("idefics2-0.25b", "idefics2-8b", 1024, 0.25e9),
          ("idefics2-0.5b", "idefics2-8b", 1536, 0.5e9),
          ("instructblip-vicuna-1b", "instructblip-vicuna-7b", 2048, 1.0e9),
          ("qwen2-vl-1b", "qwen2-vl-7b", 1792, 1.0e9),  # 14 heads of 128, 2 key-value heads (Qwen2-VL's 7:1)
          ("llava-interleave-qwen-1b", "llava-interleave-qwen-7b", 2048, 1.0e9))
# toy sizes (tests): the tiny shapes of realsize.py (width and target None)
TINY_MODELS = (("idefics2-tiny", "idefics2-8b", None, None), ("qwen2-vl-tiny", "qwen2-vl-7b", None, None),
               ("instructblip-tiny", "instructblip-vicuna-7b", None, None),
               ("llava-interleave-tiny", "llava-interleave-qwen-7b", None, None))


@dataclass
class CpuSettings(gpu.GpuSettings):
    scale: str = "1b"  # '1b' (>= 1 B decoder parameters; the trend models smaller) or 'tiny'
    device: str = "cpu"
    # non-quantised weights and the 4-bit compute dtype: bf16 stores what the GPU run's fp16 stores (2 B), and a
    # 4-layer Idefics2-width decode step ran in 2.9 s vs 5.2 s in fp32 here (interleaved, median of 3; the CPU
    # shared with a training run): bitsandbytes dequantises every weight to it on every forward
    dtype: str = "bfloat16"
    models: tuple = MODELS
    budget_s: float = 2400.0  # 40 min of measurements
    threads: int = 0  # torch threads (0: all cores)
    decode_contexts: tuple = (512, 1024, 2048, 4096)  # bare
    adapter_contexts: tuple = (1024, 4096)  # bare and every adapter
    decode_steps: int = 2  # timed single-token steps per (configuration, context, round); one warm-up step per model
    decode_rounds: int = 3  # rounds over all configurations (bare, each adapter, bare, ...): drift hits them alike
    adapter_models: tuple = tuple(m[0] for m in MODELS)  # every model: overhead vs context and vs size
    query_models: tuple = ("idefics2-1b",)  # the papers' 64 image tokens per image (add instructblip-vicuna-1b: 32)
    train_models: tuple = ("idefics2-1b", "idefics2-0.25b", "idefics2-0.5b")  # the last two: the size trend
    query_rounds: int = 2  # after one warm-up query
    train_rounds: int = 1
    need_s: dict = None  # type: ignore[assignment]
    reserve_s: float = 0.0

    def __post_init__(self):
        if self.need_s is None:
            # measured: ~7.5 s per forward of the 1 B Idefics2 in fp32 on 2 cores shared with a training run
            # (bf16 ~1.5x less); decode ~29 forwards per model, queries 8 x 3 queries of 3 forwards, training 8 steps
            self.need_s = {"build": 120, "decode": 120, "queries": 240, "training": 240}


def tiny_cpu_settings(**over) -> CpuSettings:
    """The same code at toy sizes (tests): four tiny models of the four classes, seconds in all."""
    names = tuple(m[0] for m in TINY_MODELS)
    s = CpuSettings(scale="tiny", models=TINY_MODELS, budget_s=600.0, dtype="float32", decode_contexts=(16, 32, 48, 64),
                    adapter_contexts=(16, 64), decode_steps=2, adapter_models=names[:1], query_models=names[:1],
                    train_models=names[:1], query_rounds=1, query_episodes=1, new_tokens=2, mimic_teachers=(2, 4),
                    need_s={"build": 0, "decode": 0, "queries": 0, "training": 0})
    for k, v in over.items():
        setattr(s, k, v)
    return s


def model_shape(spec: tuple, tok) -> dict:
    """The shape dict of a :data:`MODELS` row: ``scaled`` to its width and target size, or (width None) the
    tiny shape of the class."""
    from .realsize import scaled, shape

    _, name, hidden, target = spec
    return shape(name, "tiny", tok) if hidden is None else scaled(name, hidden, target=target, tok=tok)


# ---------------------------------------------------------------------------------------------
# decode over a random KV cache


def context_positions(bb, T: int) -> torch.Tensor:
    """Position ids of a T-position text context, through the backbone's own ``position_ids`` ((1, T), or
    (3, 1, T) for M-RoPE)."""
    from mmict_core.backbones.base import AssembledBatch

    mask = torch.ones(1, T, dtype=torch.long, device=bb.device)
    empty = torch.empty(1, T, 0)
    batch = AssembledBatch(inputs_embeds=empty, attention_mask=mask, labels=mask, token_ids=mask,
                           spans=[[("prompt", 0, 0, T)]])
    return bb.position_ids(batch)


def random_cache(bb, T: int, seed: int = 0):
    """A DynamicCache holding T positions of random keys and values, (1, kv_heads, T, head_dim) per layer in
    the LM's dtype: what a T-token prefill leaves, with other values."""
    from transformers import DynamicCache

    tc = bb.text_config
    kv = getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads
    dtype = bb.language_model.get_input_embeddings().weight.dtype
    g = torch.Generator(device="cpu").manual_seed(seed)
    cache = DynamicCache(config=tc)
    for i in range(bb.num_layers):
        k = torch.randn(1, kv, T, bb.head_dim, generator=g).to(bb.device, dtype)  # (1, H_kv, T, d)
        v = torch.randn(1, kv, T, bb.head_dim, generator=g).to(bb.device, dtype)
        cache.update(k, v, i)
    return cache


def decode_step(bb, cache, pos: torch.Tensor, token: int = 0):
    """One cached decoding step: the embedding of ``token`` after every cached position; -> logits (1, 1, V)."""
    T = cache.get_seq_length()
    mask = torch.ones(1, T + 1, dtype=torch.long, device=bb.device)
    x = bb.embed_ids(torch.tensor([[token]], device=bb.device))  # (1, 1, d)
    out = bb.causal_lm(inputs_embeds=x, attention_mask=mask, position_ids=bb.next_positions(pos), use_cache=True,
                       **{bb._cache_kw: cache}, **bb._last_only)
    return out.logits


def decode_times(bb, T: int, steps: int, seed: int = 0, warmup: int = 0) -> list[float]:
    """Seconds of each of ``steps`` decoded tokens after a T-position random cache (``warmup`` untimed steps
    first), the cache cut back to T after each (every step reads exactly T cached positions)."""
    cache, pos = random_cache(bb, T, seed), context_positions(bb, T)
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            decode_step(bb, cache, pos, token=i)
            dt = time.perf_counter() - t0
            cache.crop(T - cache.get_seq_length())  # this transformers takes the (negative) number to drop
            if i >= warmup:
                times.append(dt)
    del cache
    return times


def decode_latency(bb, T: int, steps: int, seed: int = 0, warmup: int = 0) -> dict:
    """:func:`decode_times` summarised (-> summarize())."""
    return summarize(decode_times(bb, T, steps, seed, warmup))


def measure_decode(bb, s: CpuSettings, methods: dict | None, budget: gpu.Budget | None = None) -> list[dict]:
    """Per-token decode latency: bare at every decode context, each adapter (if ``methods``) at the adapter
    contexts, after one untimed step for the model.  ``s.decode_rounds`` rounds go over all configurations in
    turn (bare, adapters, bare, adapters, ...), so a slow spell of the machine hits each alike; each row is the
    median over its rounds' steps.  A configuration that fails becomes an error row; one the ``budget`` has no
    time left for in the first round a skipped row (a later round cut short keeps what was measured)."""
    configs = [("bare", contextlib.nullcontext, s.decode_contexts)]
    if methods:
        configs += [(DISPLAY[n], gpu._context(m, n), s.adapter_contexts) for n, m in methods.items()]
    decode_latency(bb, min(s.decode_contexts), 1, s.seed)  # warm-up (first-call costs), discarded
    times: dict = {}
    errors: dict = {}
    rounds = max(1, s.decode_rounds)
    for r in range(rounds):
        for label, ctx, contexts in configs:
            if label in errors:
                continue
            if budget is not None and not budget.allow(f"decode {label}", s.need_s["decode"] / 4 / rounds):
                if r == 0:
                    errors[label] = "skipped (time budget)"
                continue

            def body(ctx=ctx, contexts=contexts):
                with ctx():  # attached / merged once per configuration and round
                    return [(T, decode_times(bb, T, s.decode_steps, s.seed + r)) for T in contexts]

            got, err = gpu.attempt(body, torch.device("cpu"))
            if err is not None:
                errors[label] = err
                continue
            for T, ts in got:
                times.setdefault((label, T), []).extend(ts)
    rows = []
    for label, _, contexts in configs:
        for T in contexts:
            if (label, T) in times:
                rows.append({"config": label, "context": T, "token_s": summarize(times[label, T]), "rounds": rounds})
            else:
                rows.append({"config": label, "context": T, "error": errors.get(label, "not measured")})
    for r in rows:
        ref = next((b for b in rows if b["config"] == "bare" and b["context"] == r["context"] and "token_s" in b), None)
        r["ratio_to_bare"] = gpu.ratio(r.get("token_s", {}).get("median"), ref and ref["token_s"]["median"])
    return rows


# ---------------------------------------------------------------------------------------------
# the run


def measure_model(spec: tuple, s: CpuSettings, budget: gpu.Budget, save, res: dict) -> dict:
    """Build the model of ``spec`` and run its sections into ``res`` (``save()`` after each)."""
    from mmict_core.backbones.tiny import tiny_tokenizer

    from .backbone import weight_bytes
    from .realsize import build_4bit, count_parameters, lm_formula

    label, name = spec[0], spec[1]
    dev, dtype = torch.device(s.device), getattr(torch, s.dtype)
    res.update(model=label, shape_name=name, target=spec[3], notes=[])
    if not budget.allow(f"{label}: build", s.need_s["build"]):
        res["skipped"] = True
        return res
    sh = model_shape(spec, tiny_tokenizer())
    base = gpu._reset_peak(dev)
    t0 = time.perf_counter()
    bb, sh = build_4bit(name, device=dev, dtype=dtype, seed=s.seed, sh=sh)
    lm = bb.language_model
    lm_params, lm_bytes = count_parameters(lm), weight_bytes(lm)
    peak = gpu._peak(dev)
    res.update(shape=sh, build_s=time.perf_counter() - t0, build_peak_bytes=peak,
               build_peak_delta_bytes=None if peak is None else peak - base,
               parameters=count_parameters(bb.model), lm_parameters=lm_params,
               lm_parameters_formula=lm_formula(sh["text"]), lm_weight_bytes=lm_bytes, fp16_lm_bytes=2 * lm_params,
               lm_vs_fp16=gpu.ratio(lm_bytes, 2 * lm_params), image_tokens=int(bb.num_image_tokens),
               describe=bb.describe())
    save()
    methods = gpu._methods(bb, s) if label in s.adapter_models + s.query_models else None
    sections = [("decode", lambda: measure_decode(bb, s, methods if label in s.adapter_models else None, budget))]
    if label in s.query_models:
        sections.append(("queries", lambda: gpu.measure_queries(bb, s, methods, dev)))
    if label in s.train_models:
        sections.append(("training", lambda: gpu.measure_training(bb, s, dev, budget)))
    for section, fn in sections:
        if not budget.allow(f"{label}: {section}", s.need_s[section]):
            res["notes"].append(f"{section} skipped (time budget)")
            continue
        t0 = time.perf_counter()
        res[section] = fn()
        res[f"{section}_s"] = time.perf_counter() - t0
        print(f"[cpu realsize] {label}: {section} done in {res[f'{section}_s']:.1f} s ({budget.left():.0f} s left)",
              flush=True)
        save()
    res["peak_bytes"] = gpu.max_peak(res)
    del methods, bb
    gpu._free(dev)
    return res


def run(s: CpuSettings, out: Path) -> dict:
    """Measure every model of ``s`` within its budget; write realsize_cpu.json / .md / fig_realsize_cpu.html
    into ``out`` after every section.  -> the report dict."""
    from . import cpu_realsize_report as rep
    from .cli import _quiet

    if s.threads:
        torch.set_num_threads(s.threads)
    budget = gpu.Budget(s.budget_s)
    from .provenance import machine
    from .stats import cpu_info

    env = environment(torch.device("cpu"))
    mach = machine()
    env["device"] = f"CPU: {mach.get('cpu_model') or 'model not recorded'}, {mach.get('cores')} cores"
    report = {"settings": s.as_dict(), "environment": env, "machine": mach, "load_start": cpu_info()["load_avg"],
              "models": [], "notes": rep.NOTES, "threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"realsize_cpu{'' if s.scale == '1b' else '_' + s.scale}.json"

    def save():
        report["seconds"] = budget.used()
        report["load_end"] = cpu_info()["load_avg"]
        report["skipped"] = list(budget.skipped)
        rep.finish(report)
        path.write_text(json.dumps(report, indent=1, default=str))
        path.with_suffix(".md").write_text(rep.markdown(report))

    torch.manual_seed(s.seed)
    with _quiet():
        for spec in s.models:
            res = {"model": spec[0]}
            report["models"].append(res)
            try:
                measure_model(spec, s, budget, save, res)
            except Exception as exc:  # noqa: BLE001 -- one model's failure must not lose the others' numbers
                import traceback
                res["error"] = f"{type(exc).__name__}: {exc}"
                res["traceback"] = traceback.format_exc(limit=8)
                print(f"[cpu realsize] {spec[0]} failed: {res['error']}", flush=True)
            save()
    save()
    shared = DEFAULT_OUT.parent / "plotly.min.js" if out.resolve() == DEFAULT_OUT else None  # not committed twice
    rep.figure(report, out / f"fig_{path.stem}.html", shared)
    for g in report["goals"]:
        print(("[PASS] " if g["passed"] else "[FAIL] ") + f"{g['name']}: "
              + ("not measured" if g["value"] is None else f"{g['value']:.3f}") + f" (goal {g['op']} {g['threshold']:g})")
    print(f"[cpu realsize] {budget.used():.0f} s; wrote {path}, {path.with_suffix('.md')} and fig_{path.stem}.html")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/cpu_realsize.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=None, help="seconds of measurements (default 2400 = 40 min)")
    p.add_argument("--tiny", action="store_true", help="toy sizes of the same classes (a check that it runs)")
    p.add_argument("--models", default=None, help=f"comma-separated labels (default all: "
                                                  f"{', '.join(m[0] for m in MODELS)})")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/realsize_cpu)")
    p.add_argument("--readme", action="store_true",
                   help="only rewrite the CPU real-size block of benchmarks/README.md from the JSON in --out")
    a = p.parse_args(argv)
    out = Path(a.out or DEFAULT_OUT)
    if a.readme:
        from .cpu_realsize_report import update_readme
        print(update_readme(out / "realsize_cpu.json"))
        return 0
    s = tiny_cpu_settings() if a.tiny else CpuSettings()
    if a.models:
        known = {m[0]: m for m in s.models}
        want = [m.strip() for m in a.models.split(",") if m.strip()]
        bad = [m for m in want if m not in known]
        if bad:
            p.error(f"unknown model(s) {bad}; choose from {', '.join(known)}")
        s.models = tuple(known[m] for m in want)
    for key in ("budget_s", "dtype", "threads"):
        if getattr(a, key) is not None:
            setattr(s, key, getattr(a, key))
    report = run(s, out)
    if not a.tiny and a.out is None:  # the committed results: regenerate the README block from them
        from .cpu_realsize_report import update_readme
        print(update_readme(out / "realsize_cpu.json"))
    return 0 if report["models"] else 1


if __name__ == "__main__":
    sys.exit(main())
