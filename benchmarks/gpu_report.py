"""Goals (PASS/FAIL), environment and markdown summary of a ``benchmarks/gpu.sh`` run (:mod:`benchmarks.gpu`).

The goals are issue 23's, at >= 1 B parameters: every adapter at 0 demos <= 1.10x the bare 0-shot per-query
latency (MimIC <= 1.15x), 8-shot ICL >= 5x HiFICL's, HiFICL's training step <= 0.2x MimIC's with a 32-shot
teacher, 4-bit LM weights <= 0.30x fp16.  A value that was not measured FAILs.
"""
from __future__ import annotations

import platform
import time

import torch

from .stats import Goal, fmt_bytes, fmt_ratio, ratio

ADAPTER_LIMIT, MIMIC_LIMIT, ICL_FACTOR, TRAIN_LIMIT, FOURBIT_LIMIT = 1.10, 1.15, 5.0, 0.2, 0.30
ADAPTERS = ("hificl", "mimic", "live", "m2iv", "lora")  # per-query rows at 0 demos (LoRA merged)
DISPLAY = {"hificl": "HiFICL", "mimic": "MimIC", "live": "LIVE", "m2iv": "M2IV", "lora": "LoRA merged"}


def _row(rows, key, value):
    return next((r for r in rows or [] if r.get(key) == value), None)


def _med(row, key):
    return None if row is None or key not in row else row[key]["median"]


def goals(res: dict, s) -> list[Goal]:
    """The issue's goals for one model; a missing measurement is a FAIL 'not measured'."""
    tag = f"[{res['model']}{'' if s.scale == 'full' else ', tiny scale: not >= 1 B'}] "
    q, out = res.get("queries"), []
    for n in ADAPTERS:
        r = _row(q, "label", DISPLAY[n])
        limit = MIMIC_LIMIT if n == "mimic" else ADAPTER_LIMIT
        out.append(Goal(f"{tag}{DISPLAY[n]} at 0 demos: per-query latency / bare 0-shot (median)",
                        r and r.get("ratio_to_0shot"), "<=", limit,
                        "not measured" if r is None or "query_s" not in r else f"LM tokens {r['lm_tokens']}"))
    icl, hif = _row(q, "label", f"ICL {s.icl_shots}-shot"), _row(q, "label", "HiFICL")
    out.append(Goal(f"{tag}ICL {s.icl_shots}-shot ({res.get('image_tokens')} image tokens per image) / HiFICL at 0 demos: "
                    f"per-query latency (median)", ratio(_med(icl, "query_s"), _med(hif, "query_s")), ">=", ICL_FACTOR,
                    f"LM tokens {icl and icl.get('lm_tokens')} vs {hif and hif.get('lm_tokens')}"))
    t = res.get("training")
    k = max(s.mimic_teachers)
    h, m = _row(t, "label", "HiFICL"), _row(t, "label", f"MimIC (teacher {k} shots)")
    out.append(Goal(f"{tag}HiFICL training step / MimIC's with a {k}-shot teacher (time, median)",
                    ratio(_med(h, "step_s"), _med(m, "step_s")), "<=", TRAIN_LIMIT,
                    "not measured" if m is None or "step_s" not in m else
                    f"peak memory {fmt_bytes(h and h.get('peak_bytes'))} vs {fmt_bytes(m.get('peak_bytes'))}"))
    out.append(Goal(f"{tag}4-bit LM weights / fp16 (2 B per LM parameter)", res.get("lm_vs_fp16"), "<=", FOURBIT_LIMIT,
                    f"{fmt_bytes(res.get('lm_weight_bytes'))} vs {fmt_bytes(res.get('fp16_lm_bytes'))}; "
                    f"{_count(res.get('lm_parameters'))} LM parameters"))
    return out


def environment(dev: torch.device) -> dict:
    import transformers

    try:
        import bitsandbytes
        bnb = bitsandbytes.__version__
    except ImportError:
        bnb = None
    from .provenance import git_state

    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "bitsandbytes": bnb, "python": platform.python_version(), "git": git_state(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _ms(sec: float | None) -> str:
    return "n/a" if sec is None else f"{1000 * sec:,.1f}"


def query_table(rows: list[dict], memory: str = "peak memory", digits: int = 2) -> list[str]:
    """Markdown lines of the per-query latency table (one row per query configuration)."""
    out = ["", f"| query | LM tokens | latency ms (median) | x 0-shot | {memory} |", "|---|---|---|---|---|"]
    return out + [f"| {r['label']} | {r.get('lm_tokens')} | {_ms(_med(r, 'query_s')) if 'query_s' in r else r.get('error', 'n/a')} | "
                  f"{fmt_ratio(r.get('ratio_to_0shot'), digits)} | {fmt_bytes(r.get('peak_bytes'))} |" for r in rows]


def training_table(rows: list[dict], memory: str = "peak memory", growth: bool = False) -> list[str]:
    """Markdown lines of the training-step table; ``growth``: also the memory growth during the step."""
    extra = " RSS growth |" if growth else ""
    out = ["", f"| training step | time ms (median) | {memory} |{extra} trainable |",
           "|---|---|---|" + ("---|" if growth else "") + "---|"]
    return out + [f"| {r['label']} | {_ms(_med(r, 'step_s')) if 'step_s' in r else r.get('error', 'skipped')} | "
                  f"{fmt_bytes(r.get('peak_bytes'))} |" + (f" {fmt_bytes(r.get('peak_delta_bytes'))} |" if growth else "")
                  + f" {r.get('trainable', 'n/a')} |" for r in rows]


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def _count(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"


def markdown(report: dict) -> str:
    env = report["environment"]
    L = [f"# Real-size 4-bit benchmark ({report['settings']['scale']} scale) on {env['device']}", "",
         f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, bitsandbytes "
         f"{env['bitsandbytes']}; {env['date']}; {report.get('seconds', 0):.0f} s of a "
         f"{report['settings']['budget_s']:.0f} s budget.", ""]
    if report["settings"]["scale"] != "full":
        L += ["**Tiny scale (toy sizes of the same classes): a check that the code runs; its timings and ratios say "
              "nothing about the real sizes.**", ""]
    gl = report.get("goals", [])
    L += [f"## Goals ({sum(g['passed'] for g in gl)}/{len(gl)} PASS)", "", "| status | goal | value | target | detail |",
          "|---|---|---|---|---|"]
    L += [f"| {'PASS' if g['passed'] else 'FAIL'} | {g['name']} | {fmt_ratio(g['value'])} | {g['op']} {g['threshold']:g} | "
          f"{g['detail']} |" for g in gl]
    for res in report["models"]:
        L += ["", f"## {res['model']}", ""]
        if res.get("error"):
            L += [f"failed: `{res['error']}`", ""]
        if res.get("skipped") or "parameters" not in res:
            L.append("skipped (time budget)" if res.get("skipped") else "not measured")
            continue
        L.append(f"{_count(res['parameters'])} parameters ({_count(res['lm_parameters'])} in the LM), "
                 f"{res['image_tokens']} image tokens per image; built in {res['build_s']:.1f} s; LM weights "
                 f"{fmt_bytes(res['lm_weight_bytes'])} (fp16: {fmt_bytes(res['fp16_lm_bytes'])}); peak memory "
                 f"{fmt_bytes(res.get('peak_bytes'))}.")
        lm = res.get("lm")
        if lm:
            L += ["", "| context | config | prefill tokens/s | x bare | peak memory |", "|---|---|---|---|---|"]
            L += [f"| {r['context']} | {r['config']} | {_num(r.get('tokens_per_s')) if 'prefill_s' in r else r.get('error', 'n/a')} | {fmt_ratio(r.get('ratio_to_bare'))} | "
                  f"{fmt_bytes(r.get('peak_bytes'))} |" for r in lm["prefill"]]
            L += ["", f"Decode: {_num(lm['decode']['tokens_per_s'])} tokens/s after a "
                      f"{lm['decode']['context']}-token prefix."]
        if res.get("queries"):
            L += query_table(res["queries"])
        if res.get("training"):
            L += training_table(res["training"])
        L += [f"- {n}" for n in res.get("notes", [])]
    L += ["", "## Notes", ""] + [f"- {n}" for n in report.get("skipped", []) + report["notes"]]
    return "\n".join(L) + "\n"


NOTES = [
    "Random weights, published sizes (benchmarks/realsize.py): decoder linears nf4 4-bit with double quantisation "
    "(bitsandbytes Linear4bit, built layer by layer on the device), everything else (vision tower, connector, "
    "embeddings, norms, lm_head) in the run's dtype. The tokenizer is the project's tiny word tokenizer (ids below the "
    "published vocabulary), so prompts are ShapesWorld ones; embeddings and lm_head have their published size.",
    "Adapters are freshly initialised through create_method (inference and step costs do not depend on training).",
    "Per-query latency = the method's assembly (image encoding + embedding) + prefill + exactly new_tokens greedy "
    "tokens with the KV cache, batch 1; one warm-up call, then query_rounds timed calls per configuration, one "
    "configuration after the other (attaching / merging LoRA done once, outside the timings); cuda synchronised.",
    "ICL has no training step: its cost is the 'ICL 8-shot' per-query row (latency, peak memory), 8 demos with "
    "the model's own image-token count per image (Idefics2 64, LLaVA-Interleave 729).",
    "Prefill = one causal-LM forward on random LM-space embeddings (logits of the last position only), batch 1.",
    "Decode tokens/s = decode_tokens / (time of prefill + decode_tokens more tokens - time of the prefill alone).",
    "Training step = the method's loss (MimIC: its k-shot teacher forward included) + backward + gradient clipping + "
    "AdamW step, on training_batch episodes (the ShapesWorld task), median after one warm-up step.",
    "Peak memory = torch.cuda.max_memory_allocated after a reset at the start of each measurement (the model's "
    "weights included); peak_delta_bytes = that minus what was allocated at the reset. On the CPU: the process's "
    "peak resident set size (VmHWM, reset through /proc/self/clear_refs) and its growth over the RSS at the reset.",
    "LM weights = the decoder (get_decoder(): embeddings, layers, final norm) as stored, quantisation statistics "
    "included; fp16 = 2 B per LM parameter. The embedding table stays in the run's dtype, as bitsandbytes leaves it.",
]
