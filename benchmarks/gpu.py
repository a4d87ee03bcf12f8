"""``benchmarks/gpu.sh``: real-size (random-weight) cost of every method in 4-bit on one GPU, within a time
budget (420 s of measurements by default: under 8 minutes with the start-up) -- or the same code at toy
sizes on a CPU (``--tiny``).

For each model shape of :mod:`benchmarks.realsize` (Idefics2-8B, LLaVA-Interleave-Qwen-7B), built on
the device in nf4: LM weight bytes vs fp16, prefill throughput at 1k and 4k context (bare and with each
adapter attached), decode tokens/s, per-query latency (image encoding + assembly + prefill + decoding) of
0-shot, 8-shot ICL and every adapter at 0 demos, and the time and peak memory of one training step of
HiFICL, MimIC (teacher 8 and 32 shots), LoRA -- all through the project's own method classes
(``create_method``) on the real backbone adapter.  Goals are printed PASS/FAIL and everything is written
as JSON (+ a markdown summary) after every section, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .gpu_report import ADAPTERS, DISPLAY, NOTES, environment, goals, markdown
from .realsize import lm_formula
from .stats import Goal, ratio, summarize

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu"


@dataclass
class GpuSettings:
    scale: str = "full"  # 'full' (published sizes) or 'tiny' (toy sizes of the same classes)
    device: str = "cuda"
    dtype: str = "float16"  # non-quantised weights and 4-bit compute dtype
    models: tuple = ("idefics2-8b", "llava-interleave-qwen-7b")
    budget_s: float = 420.0  # the measurements (imports and the bitsandbytes install come on top: < 8 min in all)
    seed: int = 0
    task: str = "binding"
    fixed_binding: bool = True
    contexts: tuple = (1024, 4096)  # prefill lengths (random embeddings, batch 1)
    prefill_rounds: int = 3
    decode_context: int = 1024
    decode_tokens: int = 32
    icl_shots: int = 8
    new_tokens: int = 3  # decoded per query (exactly: EOS does not stop it)
    query_rounds: int = 5
    query_episodes: int = 2
    train_batch: int = 1
    train_rounds: int = 3
    mimic_teachers: tuple = (8, 32)
    # the least time (s) a section needs to start; below it the section is skipped with a note
    need_s: dict = field(default_factory=lambda: {"build": 60, "lm": 25, "queries": 45, "training": 60})
    reserve_s: float = 120.0  # kept back for each model still to come, so the first cannot use up the budget

    def as_dict(self) -> dict:
        return asdict(self)


def tiny_settings(**over) -> GpuSettings:
    s = GpuSettings(scale="tiny", device="cpu", dtype="float32", contexts=(64, 256), prefill_rounds=1,
                    decode_context=64, decode_tokens=4, query_rounds=1, query_episodes=1, train_rounds=1,
                    need_s={"build": 1, "lm": 1, "queries": 1, "training": 1}, reserve_s=0.0)
    for k, v in over.items():
        setattr(s, k, v)
    return s


class Budget:
    """Seconds left of the run; sections that would start with less than they need are skipped (noted)."""

    def __init__(self, seconds: float):
        self.seconds, self.t0, self.skipped = seconds, time.perf_counter(), []

    def used(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.used()

    def allow(self, what: str, need: float) -> bool:
        if self.left() >= need:
            return True
        self.skipped.append(f"{what}: skipped, {self.left():.0f} s of the {self.seconds:.0f} s budget left "
                            f"(needs >= {need:.0f} s)")
        print(f"[gpu bench] {self.skipped[-1]}", flush=True)
        return False


# ---------------------------------------------------------------------------------------------
# device helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> int:
    """Reset the device's peak-memory counter; returns the bytes allocated now (off CUDA: the process's
    resident set size, its high-water mark VmHWM reset; 0 where /proc refuses)."""
    if device.type != "cuda":
        from .stats import release_memory, reset_peak_rss, rss_bytes

        release_memory()
        return (rss_bytes() or 0) if reset_peak_rss() else 0
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak(device: torch.device) -> int | None:
    """torch.cuda.max_memory_allocated since the last reset; off CUDA the peak resident set size (VmHWM) since
    the last reset (None where /proc has none)."""
    if device.type != "cuda":
        from .stats import peak_rss_bytes

        return peak_rss_bytes()
    _sync(device)
    return int(torch.cuda.max_memory_allocated(device))


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(fn, device: torch.device):
    """(fn(), None), or (None, what went wrong: 'out of GPU memory' or the exception), memory released
    afterwards -- one configuration's failure must not lose the others' numbers."""
    try:
        return fn(), None
    except torch.cuda.OutOfMemoryError:
        err = "out of GPU memory"
    except Exception as exc:  # noqa: BLE001
        err = f"{type(exc).__name__}: {exc}"
    print(f"[gpu bench] failed: {err}", flush=True)
    _free(device)  # after the except block: the failed call's frames (and tensors) are gone
    return None, err


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def repeat(fn, device, rounds: int) -> dict:
    """One untimed warm-up call, then ``rounds`` timed calls: {'min', 'median', 'n'} seconds."""
    fn()
    return summarize([timed(fn, device) for _ in range(rounds)])


# ---------------------------------------------------------------------------------------------
# pieces of a measurement


def decode_fixed(bb, inputs_embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, new_tokens: int) -> None:
    """Prefill + exactly ``new_tokens`` greedy tokens with the KV cache (EOS does not stop it)."""
    lm = bb.causal_lm
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=pos, use_cache=True, **bb._last_only)
    for _ in range(new_tokens - 1):
        nxt = out.logits[:, -1].argmax(-1)  # (B,)
        cache = out.get("cache", None)
        cache = out.get("past_key_values", None) if cache is None else cache
        pos = bb.next_positions(pos)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        out = lm(inputs_embeds=bb.embed_ids(nxt[:, None]), attention_mask=mask, position_ids=pos, use_cache=True,
                 **{bb._cache_kw: cache})


def _random_input(bb, T: int, seed: int):
    """Random LM-space embeddings of T positions (the scale of the input embeddings), mask and positions."""
    emb = bb.language_model.get_input_embeddings().weight
    g = torch.Generator(device=emb.device).manual_seed(seed)
    scale = emb[:1024].float().std().to(emb.dtype)  # a slice: the full fp32 copy of a 152k x 4096 table is 2.5 GB
    x = torch.randn(1, T, emb.shape[1], device=emb.device, dtype=emb.dtype, generator=g) * scale
    mask = torch.ones(1, T, dtype=torch.long, device=emb.device)
    return x, mask, torch.arange(T, device=emb.device)[None]


def _prefill(bb, x, mask, pos) -> None:
    bb.causal_lm(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False, **bb._last_only)


def _methods(bb, s: GpuSettings) -> dict:
    from mmict_core.methods import create_method

    out = {name: create_method(name, bb, seed=s.seed) for name in ADAPTERS}
    for m in out.values():
        m.eval()
    return out


def _context(method, name: str):
    return method.merged if name == "lora" else method.attached


def measure_lm(bb, s: GpuSettings, methods: dict, dev) -> dict:
    """Prefill tokens/s at each context (bare and with each adapter attached; LoRA merged) and decode tokens/s."""
    rows = []
    inputs = {T: _random_input(bb, T, s.seed) for T in s.contexts}
    configs = [("bare", contextlib.nullcontext)] + [(DISPLAY[n], _context(m, n)) for n, m in methods.items()]
    with torch.no_grad():
        for label, ctx in configs:
            def body(label=label, ctx=ctx) -> list[dict]:
                out = []
                with ctx():  # attached / merged once per configuration (merging 4-bit LoRA re-quantises)
                    for T, (x, mask, pos) in inputs.items():
                        base = _reset_peak(dev)
                        t = repeat(lambda: _prefill(bb, x, mask, pos), dev, s.prefill_rounds)
                        peak = _peak(dev)
                        out.append({"context": T, "config": label, "prefill_s": t, "tokens_per_s": T / t["median"],
                                    "peak_bytes": peak, "peak_delta_bytes": None if peak is None else peak - base})
                return out

            got, err = attempt(body, dev)
            rows += got if err is None else [{"context": T, "config": label, "error": err} for T in s.contexts]
        rows.sort(key=lambda r: r["context"])  # stable: bare first within each context
        for r in rows:
            ref = next((b for b in rows if b["config"] == "bare" and b["context"] == r["context"] and "prefill_s" in b), None)
            r["ratio_to_bare"] = ratio(r.get("prefill_s", {}).get("median"), ref and ref["prefill_s"]["median"])
        del inputs
        x, mask, pos = _random_input(bb, s.decode_context, s.seed)
        n = s.decode_tokens
        both = repeat(lambda: decode_fixed(bb, x, mask, pos, n + 1), dev, s.prefill_rounds)
        pre = repeat(lambda: decode_fixed(bb, x, mask, pos, 1), dev, s.prefill_rounds)
    step = (both["median"] - pre["median"]) / n
    return {"prefill": rows, "decode": {"context": s.decode_context, "tokens": n, "with_prefill_s": both,
                                        "prefill_only_s": pre, "tokens_per_s": None if step <= 0 else 1.0 / step}}


def measure_queries(bb, s: GpuSettings, methods: dict, dev) -> list[dict]:
    """Per-query latency: assembly (image encoding + embedding) + prefill + ``new_tokens`` decoded, batch 1."""
    from mmict_core.methods import create_method

    from .common import episode

    icl0, icl8 = create_method("icl", bb), create_method("icl", bb, shots=s.icl_shots)
    configs = [("0-shot", "reference", icl0, icl0.attached, 0), (f"ICL {s.icl_shots}-shot", "icl", icl8, icl8.attached, s.icl_shots)]
    configs += [(DISPLAY[n], "adapter", m, _context(m, n), 0) for n, m in methods.items()]
    configs.append(("0-shot (again, last)", "reference", icl0, icl0.attached, 0))  # drift check: first and last
    rows = []
    for label, kind, method, ctx, k in configs:
        eps = [episode(s, k, index=i) for i in range(s.query_episodes)]
        state = {"r": 0, "tokens": None}

        def run():
            ep = eps[state["r"] % len(eps)]
            state["r"] += 1
            batch = method.batch([ep], with_answer=False, padding_side="left")
            state["tokens"] = int(batch.inputs_embeds.shape[1])
            decode_fixed(bb, batch.inputs_embeds, batch.attention_mask, bb.position_ids(batch), s.new_tokens)

        base = _reset_peak(dev)

        def timed_queries(ctx=ctx, run=run):
            with torch.no_grad(), ctx():
                return repeat(run, dev, s.query_rounds)

        t, err = attempt(timed_queries, dev)
        if err is not None:
            rows.append({"label": label, "kind": kind, "shots": k, "error": err})
            continue
        peak = _peak(dev)
        rows.append({"label": label, "kind": kind, "shots": k, "lm_tokens": state["tokens"], "query_s": t,
                     "peak_bytes": peak, "peak_delta_bytes": None if peak is None else peak - base,
                     "trainable": int(method.num_trainable())})
    refs = [r["query_s"]["median"] for r in rows if r["kind"] == "reference" and "query_s" in r]
    ref = min(refs) if refs else None  # the faster of the two 0-shot runs: the stricter reference for the <= goals
    for r in rows:
        r["ratio_to_0shot"] = ratio(r.get("query_s", {}).get("median"), ref)
    return rows


def measure_training(bb, s: GpuSettings, dev, budget: Budget, reserve: float = 0.0) -> list[dict]:
    """Time (median of ``train_rounds`` after one warm-up) and peak memory of one optimiser step: the
    method's loss (teacher forward included) + backward + clipping + AdamW."""
    from mmict_core.methods import create_method
    from mmict_core.train import TrainConfig, training_batch

    cfg = TrainConfig(task=s.task, fixed_binding=s.fixed_binding, batch_size=s.train_batch, samples=1000, seed=s.seed)
    variants = [("HiFICL", "hificl", {})] + [(f"MimIC (teacher {k} shots)", "mimic", {"train_shots": k})
                                             for k in s.mimic_teachers] + [("LoRA", "lora", {})]
    rows = []
    for label, name, over in variants:
        if not budget.allow(f"training step {label}", s.need_s["training"] / 4 + reserve):
            rows.append({"label": label, "method": name, "skipped": True})
            continue
        m = create_method(name, bb, seed=s.seed, **over)
        m.train()
        opt = torch.optim.AdamW(m.param_groups(cfg.weight_decay), lr=cfg.lr)
        state = {"r": 0}

        def step():
            episodes = training_batch(m, cfg, state["r"])
            state["r"] += 1
            loss, _ = m.loss(episodes, loss_on="query")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.trainable_parameters(), cfg.clip)
            opt.step()

        base = _reset_peak(dev)
        t, err = attempt(lambda: repeat(step, dev, s.train_rounds), dev)
        if err is not None:
            rows.append({"label": label, "method": name, "train_shots": over.get("train_shots"), "error": err})
            del m, opt
            _free(dev)
            continue
        peak = _peak(dev)
        rows.append({"label": label, "method": name, "train_shots": int(m.config.train_shots), "step_s": t,
                     "peak_bytes": peak, "peak_delta_bytes": None if peak is None else peak - base,
                     "trainable": int(m.num_trainable())})
        del m, opt
        _free(dev)
    return rows


def measure_model(name: str, s: GpuSettings, budget: Budget, save, res: dict, reserve: float = 0.0) -> dict:
    """Build model ``name`` and run its sections, filling ``res`` in place (``save()`` after each section);
    ``reserve``: seconds of the budget kept for the models after this one.  The goal sections (queries,
    training) run before the prefill / decode section."""
    from .backbone import weight_bytes
    from .realsize import build_4bit, count_parameters, meta_model

    dev, dtype = torch.device(s.device), getattr(torch, s.dtype)
    res.update(model=name, notes=[])
    if not budget.allow(f"{name}: build", s.need_s["build"] + reserve):
        res["skipped"] = True
        return res
    _reset_peak(dev)
    t0 = time.perf_counter()
    bb, sh = build_4bit(name, s.scale, dev, dtype, s.seed)
    _sync(dev)
    lm = bb.language_model
    lm_params = count_parameters(lm)
    lm_bytes = weight_bytes(lm)
    res.update(shape=sh, build_s=time.perf_counter() - t0, build_peak_bytes=_peak(dev),
               allocated_after_build=int(torch.cuda.memory_allocated(dev)) if dev.type == "cuda" else None,
               parameters=count_parameters(bb.model), parameters_meta=sum(p.numel() for p in meta_model(bb.model.config).parameters()),
               lm_parameters=lm_params, lm_parameters_formula=lm_formula(sh["text"]), lm_weight_bytes=lm_bytes,
               fp16_lm_bytes=2 * lm_params, lm_vs_fp16=ratio(lm_bytes, 2 * lm_params),
               footprint=int(bb.model.get_memory_footprint()), image_tokens=int(bb.num_image_tokens),
               describe=bb.describe())
    save()
    methods = _methods(bb, s)
    for section, fn in (("queries", lambda: measure_queries(bb, s, methods, dev)),
                        ("training", lambda: measure_training(bb, s, dev, budget, reserve)),
                        ("lm", lambda: measure_lm(bb, s, methods, dev))):
        if not budget.allow(f"{name}: {section}", s.need_s[section] + reserve):
            res["notes"].append(f"{section} skipped (time budget)")
            continue
        t0 = time.perf_counter()
        res[section] = fn()
        res[f"{section}_s"] = time.perf_counter() - t0
        print(f"[gpu bench] {name}: {section} done in {res[f'{section}_s']:.1f} s ({budget.left():.0f} s left)", flush=True)
        save()
    res["peak_bytes"] = max_peak(res)  # the highest of every section's peak (the counter is reset per section)
    del methods, bb
    _free(dev)
    return res


def max_peak(res: dict) -> int | None:
    """The largest ``peak_bytes`` / ``build_peak_bytes`` anywhere in a model's results (None if none was measured)."""
    vals = [res.get("build_peak_bytes")]
    for sec in ("queries", "training"):
        vals += [r.get("peak_bytes") for r in res.get(sec) or []]
    vals += [r.get("peak_bytes") for r in (res.get("lm") or {}).get("prefill", [])]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def run(s: GpuSettings, out: Path) -> list[Goal]:
    from .cli import _quiet

    dev = torch.device(s.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run `bash benchmarks/gpu.sh --tiny` (CPU, toy sizes) instead")
    budget = Budget(s.budget_s)
    report = {"settings": s.as_dict(), "environment": environment(dev), "models": [], "notes": NOTES}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu_{s.scale}.json"

    def save():  # after every section: a run cut short keeps its numbers, goals and summary
        report["seconds"] = budget.used()
        report["skipped"] = list(budget.skipped)
        report["goals"] = [g.as_dict() for res in report["models"] for g in goals(res, s)]
        path.write_text(json.dumps(report, indent=1, default=str))
        path.with_suffix(".md").write_text(markdown(report))

    torch.manual_seed(s.seed)
    with _quiet():
        for i, name in enumerate(s.models):
            res = {"model": name}
            report["models"].append(res)
            try:
                measure_model(name, s, budget, save, res, reserve=s.reserve_s * (len(s.models) - i - 1))
            except Exception as exc:  # noqa: BLE001 -- one model's failure must not lose the other's numbers
                import traceback
                res["error"] = f"{type(exc).__name__}: {exc}"
                res["traceback"] = traceback.format_exc(limit=8)
                print(f"[gpu bench] {name} failed: {res['error']}", flush=True)
            save()
    save()
    goal_list = [g for res in report["models"] for g in goals(res, s)]
    for g in goal_list:
        print(g.line())
    print(f"[gpu bench] {budget.used():.0f} s; wrote {path} and {path.with_suffix('.md')}")
    return goal_list


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (= --device cpu --scale tiny)")
    p.add_argument("--device", default=None, help="cuda (default) or cpu")
    p.add_argument("--scale", choices=("full", "tiny"), default=None)
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None)
    p.add_argument("--models", default=None, help="comma-separated shapes of realsize.SHAPES (default: idefics2-8b, "
                   "llava-interleave-qwen-7b; also instructblip-vicuna-7b, qwen2-vl-7b)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds of measurements (default 420; imports and start-up come on top)")
    p.add_argument("--out", default=None, help="output folder (default: $OUT if set, else benchmarks/results/gpu)")
    a = p.parse_args(argv)
    tiny = a.tiny or a.scale == "tiny"
    s = tiny_settings() if tiny else GpuSettings()
    if a.device:
        s.device = a.device
        if a.device == "cpu" and not a.dtype:
            s.dtype = "float32"
    if a.dtype:
        s.dtype = a.dtype
    if a.models:
        from .realsize import SHAPES
        s.models = tuple(m.strip() for m in a.models.split(",") if m.strip())
        bad = [m for m in s.models if m not in SHAPES]
        if bad:
            p.error(f"unknown model(s) {bad}; choose from {', '.join(SHAPES)}")
    if a.budget_s:
        s.budget_s = a.budget_s
    out = Path(a.out or os.environ.get("OUT") or DEFAULT_OUT)
    goal_list = run(s, out)
    return 0 if goal_list else 1


if __name__ == "__main__":
    sys.exit(main())
