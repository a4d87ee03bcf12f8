"""Goals, trend fits, markdown, plotly figure and the benchmarks/README.md block of a CPU real-size run
(:mod:`benchmarks.cpu_realsize`).

Fits (least squares, :func:`benchmarks.stats.linear_fit`): per model, bare per-token decode latency =
a + b x context; per class of the size trend, decode latency at ``trend_context`` = a + b x decoder parameters,
each adapter's decode latency / bare there = a + b x decoder parameters, and each method's training-step time =
a + b x decoder parameters.  Goals are issue 23's
(:func:`benchmarks.gpu_report.goals`, at >= 1 B decoder parameters) plus the same limits on the per-token decode
latency at each adapter context; a goal whose value was not measured FAILs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from .gpu_report import ADAPTER_LIMIT, ADAPTERS, DISPLAY, MIMIC_LIMIT, _med, _ms, query_table, training_table
from .gpu_report import goals as gpu_goals
from .stats import Goal, fmt_bytes, fmt_ratio, linear_fit

ONE_B = 1.0e9
README = Path(__file__).resolve().parent / "README.md"
BEGIN = ("<!-- CPU REAL-SIZE: generated from benchmarks/results/realsize_cpu/realsize_cpu.json by "
         "`bash benchmarks/cpu_realsize.sh --readme`; do not edit by hand -->")
END = "<!-- /CPU REAL-SIZE -->"

NOTES = [
    "Random weights; shapes of the published checkpoints scaled down by realsize.scaled (published head size, "
    "query/key-value head ratio, MLP ratio, vocabulary, RoPE settings and image tokens per image kept; decoder "
    "narrower and only as deep as needed for the target size; a small vision tower of the same class with the "
    "patch grid that sets the image-token count). Decoder linears nf4 4-bit (bitsandbytes Linear4bit, double "
    "quantisation, dequantised per forward on the CPU); the rest in the run's dtype.",
    "Decode latency = one cached decoding step (batch 1) after T positions held in a DynamicCache of random keys "
    "and values of the model's shape (1, key-value heads, T, head size) per layer: the cost of a step does not "
    "depend on the cached values, so no T-token prefill is run per method. One warm-up step, then decode_rounds "
    "rounds over all configurations in turn (bare, each adapter, bare, ...), each with decode_steps timed steps "
    "(the cache cut back to T after each); a row is the median of all its steps. LIVE, M2IV and merged LoRA "
    "decode exactly what the bare model decodes (next note), so their ratios show the noise of the measurement.",
    "LIVE and M2IV add their vectors on the prefill of the prompt only (mmict_core/methods/vectors.py): a cached "
    "decoding step runs the bare model, so their decode rows measure the attach overhead alone. HiFICL and MimIC "
    "add keys/values (or their attention term) at every step; LoRA is merged (re-quantised) once.",
    "Per-query latency and training steps: benchmarks.gpu.measure_queries / measure_training (the GPU script's code) "
    "on the CPU; peak memory there = the process's peak resident set size (VmHWM reset before each measurement).",
    "Goals at >= 1 B decoder parameters only (embeddings + layers + final norm); the smaller models feed the trends.",
    "InstructBLIP-Vicuna's published max_position_embeddings is 2048: its 4k-context rows measure the cost of a "
    "4k cache (RoPE positions are computed, not looked up), not a context the checkpoint was trained for. Qwen2-VL's "
    "image tokens follow the image size: 144 = the project adapter's 336 px square.",
    "The 1-minute load average at the start and end is recorded (load_start / load_end): the machine is shared, and "
    "a busy one inflates every time alike within a run (ratios) but not the absolute seconds.",
]


def model_goals(res: dict, s: dict) -> list[Goal]:
    """Issue 23's goals for one model of the run (settings ``s`` as a dict); [] below 1 B parameters (except the
    tiny run, whose goals say 'tiny scale')."""
    tiny = s["scale"] == "tiny"
    big = max(res.get("lm_parameters") or 0, res.get("target") or 0) >= ONE_B  # measured, or planned if skipped
    if not (tiny or big):
        return []
    shim = SimpleNamespace(scale="tiny" if tiny else "full", icl_shots=s["icl_shots"], mimic_teachers=s["mimic_teachers"])
    g = gpu_goals(res, shim)  # 5 adapter per-query rows, ICL / HiFICL, training, 4-bit (benchmarks.gpu_report)
    out = (g[:6] if res["model"] in s["query_models"] else []) + (g[6:7] if res["model"] in s["train_models"] else [])
    out.append(g[7])
    if res["model"] in s["adapter_models"]:
        tag = g[7].name.split("]")[0] + "] "
        rows = res.get("decode") or []
        for T in s["adapter_contexts"]:
            for n in ADAPTERS:
                r = next((r for r in rows if r["config"] == DISPLAY[n] and r["context"] == T), None)
                out.append(Goal(f"{tag}{DISPLAY[n]} at 0 demos: per-token decode latency / bare, {T} context",
                                r and r.get("ratio_to_bare"), "<=", MIMIC_LIMIT if n == "mimic" else ADAPTER_LIMIT,
                                "not measured" if r is None or "token_s" not in r else
                                f"{1000 * r['token_s']['median']:.1f} ms/token"))
    return out


def fits(report: dict) -> dict:
    """Least-squares trends of a run: decode vs context per model (bare), decode vs decoder parameters at the
    trend context per class, each adapter's decode ratio to bare vs decoder parameters, training step vs decoder
    parameters per (class, method)."""
    s = report["settings"]
    T0 = s["adapter_contexts"][0]
    out = {"context": {}, "size": {}, "overhead_size": {}, "training_size": {}, "trend_context": T0}
    done = [m for m in report["models"] if "lm_parameters" in m]
    for m in done:
        pts = [(r["context"], r["token_s"]["median"]) for r in m.get("decode") or [] if r["config"] == "bare" and "token_s" in r]
        if len({x for x, _ in pts}) >= 2:
            out["context"][m["model"]] = linear_fit(*zip(*pts))
    by_class: dict[str, list] = {}
    for m in done:
        by_class.setdefault(m["shape_name"], []).append(m)
    for cls, ms in by_class.items():
        pts = [(m["lm_parameters"], r["token_s"]["median"]) for m in ms for r in m.get("decode") or []
               if r["config"] == "bare" and r["context"] == T0 and "token_s" in r]
        if len({x for x, _ in pts}) >= 2:
            out["size"][cls] = linear_fit(*zip(*pts))
        over: dict[str, list] = {}
        for m in ms:
            for r in m.get("decode") or []:
                if r["config"] != "bare" and r["context"] == T0 and r.get("ratio_to_bare") is not None:
                    over.setdefault(r["config"], []).append((m["lm_parameters"], r["ratio_to_bare"]))
        for label, p in over.items():
            if len({x for x, _ in p}) >= 2:
                out["overhead_size"][f"{cls}: {label}"] = linear_fit(*zip(*p))
        steps: dict[str, list] = {}
        for m in ms:
            for r in m.get("training") or []:
                if "step_s" in r:
                    steps.setdefault(r["label"], []).append((m["lm_parameters"], r["step_s"]["median"]))
        for label, p in steps.items():
            if len({x for x, _ in p}) >= 2:
                out["training_size"][f"{cls}: {label}"] = linear_fit(*zip(*p))
    return out


def finish(report: dict) -> None:
    """Fill in the report's goals and fits (called before every write)."""
    s = report["settings"]
    report["goals"] = [g.as_dict() for m in report["models"] for g in model_goals(m, s)]
    report["fits"] = fits(report)


def _count(n) -> str:
    return "n/a" if n is None else f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"


def _fit_line(f: dict, per: str, scale: float) -> str:
    r2 = "n/a" if f["r2"] is None else f"{f['r2']:.3f}"
    return f"{1000 * f['intercept']:.1f} ms + {1000 * f['slope'] * scale:.3f} ms per {per} (R² {r2}, {f['n']} points)"


def summary(report: dict) -> list[str]:
    """The goals table, a per-model table and the fits: the part shared by the .md and the README block."""
    env, s = report["environment"], report["settings"]
    gl = report.get("goals", [])
    load = report.get("load_start")
    L = [f"{env['device']}, {report.get('threads')} torch threads"
         + (f" (1-minute load average {load[0]:.1f} at the start)" if load else "") + f", torch {env['torch']}, bitsandbytes "
         f"{env['bitsandbytes']}, dtype {s['dtype']}; {env['date']}; commit "
         f"`{(env.get('git') or {}).get('commit', 'n/a')}`; {report.get('seconds', 0):.0f} s of a {s['budget_s']:.0f} s "
         f"budget. **{sum(g['passed'] for g in gl)} of {len(gl)} goals PASS.**", "",
         "| status | goal | value | target | detail |", "|---|---|---|---|---|"]
    L += [f"| {'PASS' if g['passed'] else 'FAIL'} | {g['name']} | {fmt_ratio(g['value'], 3)} | {g['op']} {g['threshold']:g} | "
          f"{g['detail']} |" for g in gl]
    ctxs = s["decode_contexts"]
    L += ["", "| model | parameters (decoder) | image tokens | LM 4-bit / fp16 | " +
          " | ".join(f"bare ms/token @{T}" for T in ctxs) + " | ms per 1k context (fit) |",
          "|---|---|---|---|" + "---|" * len(ctxs) + "---|"]
    fit = report.get("fits") or {}
    for m in report["models"]:
        if "lm_parameters" not in m:
            L.append(f"| {m['model']} | {'skipped (time budget)' if m.get('skipped') else m.get('error', 'not measured')} |"
                     + " |" * (3 + len(ctxs)))
            continue
        bare = {r["context"]: _med(r, "token_s") for r in m.get("decode") or [] if r["config"] == "bare"}
        f = (fit.get("context") or {}).get(m["model"])
        L.append(f"| {m['model']} | {_count(m['parameters'])} ({_count(m['lm_parameters'])}) | {m['image_tokens']} | "
                 f"{fmt_ratio(m['lm_vs_fp16'], 3)} ({fmt_bytes(m['lm_weight_bytes'])}) | "
                 + " | ".join(_ms(bare.get(T)) for T in ctxs) + f" | {_ms(f['slope'] * 1000) if f else 'n/a'} |")
    for cls, f in (fit.get("size") or {}).items():
        L.append(f"\nDecode latency vs size ({cls} class, {fit['trend_context']} context): {_fit_line(f, '1 B parameters', 1e9)}.")
    for key, f in (fit.get("overhead_size") or {}).items():
        L.append(f"\nDecode latency / bare vs size ({key}, {fit['trend_context']} context): {f['intercept']:.3f} + "
                 f"{f['slope'] * 1e9:.3f} per 1 B parameters ({f['n']} points).")
    for key, f in (fit.get("training_size") or {}).items():
        L.append(f"\nTraining step vs size ({key}): {_fit_line(f, '1 B parameters', 1e9)}.")
    return L


def markdown(report: dict) -> str:
    s = report["settings"]
    L = [f"# Real-size 4-bit benchmark on the CPU ({s['scale']} scale)", ""]
    if s["scale"] == "tiny":
        L += ["**Tiny scale: a check that the code runs; its timings and ratios say nothing about real sizes.**", ""]
    L += summary(report)
    for m in report["models"]:
        L += ["", f"## {m['model']}", ""]
        if "lm_parameters" not in m:
            L.append("skipped (time budget)" if m.get("skipped") else f"failed: `{m.get('error', 'not measured')}`")
            continue
        t = m["shape"]["text"]
        L.append(f"{m['shape'].get('published', '')}; scaled {m['shape'].get('scale')}: hidden {t['hidden_size']}, "
                 f"{t['num_hidden_layers']} layers, {t['num_attention_heads']} heads ({t.get('num_key_value_heads')} kv), "
                 f"MLP {t['intermediate_size']}, vocabulary {t['vocab_size']}; built in {m['build_s']:.1f} s; "
                 f"peak RSS {fmt_bytes(m.get('peak_bytes'))}.")
        if m.get("decode"):
            L += ["", "| config | context | ms/token (median) | x bare |", "|---|---|---|---|"]
            L += [f"| {r['config']} | {r['context']} | {_ms(_med(r, 'token_s')) if 'token_s' in r else r.get('error')} | "
                  f"{fmt_ratio(r.get('ratio_to_bare'), 3)} |" for r in m["decode"]]
        if m.get("queries"):
            L += query_table(m["queries"], memory="peak RSS", digits=3)
        if m.get("training"):
            L += training_table(m["training"], memory="peak RSS", growth=True)
        L += [f"- {n}" for n in m.get("notes", [])]
    L += ["", "## Notes", ""] + [f"- {n}" for n in report.get("skipped", []) + report["notes"]]
    return "\n".join(L) + "\n"


def figure(report: dict, path: Path, shared_js: Path | None = None) -> None:
    """Decode latency vs context (bare per model; each adapter of the first model), decode latency vs decoder
    parameters, training step vs decoder parameters -- measured points and fitted lines (plotly, offline html
    referring to ``shared_js``, written there if missing; else to a plotly.min.js beside it)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fit = report.get("fits") or {}
    fig = make_subplots(rows=1, cols=3, subplot_titles=("decode ms/token vs context", "decode ms/token vs size",
                                                        "training step s vs size"))
    done = [m for m in report["models"] if m.get("decode")]
    for i, m in enumerate(done):
        by: dict[str, list] = {}
        for r in m["decode"]:
            if "token_s" in r and (r["config"] == "bare" or i == 0):
                by.setdefault(r["config"], []).append((r["context"], 1000 * r["token_s"]["median"]))
        for cfg, pts in by.items():
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers+lines" if cfg != "bare" else "markers",
                                     name=f"{m['model']} {cfg}"), 1, 1)
        f = (fit.get("context") or {}).get(m["model"])
        if f:
            xs = [min(p[0] for p in by["bare"]), max(p[0] for p in by["bare"])]
            fig.add_trace(go.Scatter(x=xs, y=[1000 * (f["intercept"] + f["slope"] * x) for x in xs], mode="lines",
                                     line={"dash": "dot"}, name=f"{m['model']} fit"), 1, 1)
    T0 = fit.get("trend_context")
    for cls, f in (fit.get("size") or {}).items():
        pts = [(m["lm_parameters"], 1000 * r["token_s"]["median"]) for m in done if m["shape_name"] == cls
               for r in m["decode"] if r["config"] == "bare" and r["context"] == T0 and "token_s" in r]
        xs = [min(p[0] for p in pts), max(p[0] for p in pts)]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=f"{cls} @{T0}"), 1, 2)
        fig.add_trace(go.Scatter(x=xs, y=[1000 * (f["intercept"] + f["slope"] * x) for x in xs], mode="lines",
                                 line={"dash": "dot"}, name=f"{cls} fit"), 1, 2)
    for key, f in (fit.get("training_size") or {}).items():
        cls, label = key.split(": ", 1)
        pts = [(m["lm_parameters"], r["step_s"]["median"]) for m in report["models"] if m.get("shape_name") == cls
               for r in m.get("training") or [] if r["label"] == label and "step_s" in r]
        xs = [min(p[0] for p in pts), max(p[0] for p in pts)]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=label), 1, 3)
        fig.add_trace(go.Scatter(x=xs, y=[f["intercept"] + f["slope"] * x for x in xs], mode="lines",
                                 line={"dash": "dot"}, name=f"{label} fit"), 1, 3)
    fig.update_xaxes(title_text="context (cached positions)", row=1, col=1)
    fig.update_xaxes(title_text="decoder parameters", row=1, col=2)
    fig.update_xaxes(title_text="decoder parameters", row=1, col=3)
    fig.update_layout(title=f"Real-size 4-bit on the CPU ({report['settings']['scale']} scale): points measured, "
                            f"dotted lines least-squares fits", template="plotly_white")
    if shared_js is None:
        fig.write_html(path, include_plotlyjs="directory")  # plotly.min.js beside the figure (viewable offline)
        return
    if not shared_js.is_file():  # the git-ignored copy of benchmarks/results/, as `python -m benchmarks` writes it
        from plotly.offline import get_plotlyjs

        shared_js.write_text(get_plotlyjs())
    fig.write_html(path, include_plotlyjs=os.path.relpath(shared_js, path.parent))


# ---------------------------------------------------------------------------------------------
# the README block


def block(report: dict | None) -> str:
    """The benchmarks/README.md block (markers included) for ``report`` (None: not run yet)."""
    if report is None:
        body = ["Not run yet on this machine: `bash benchmarks/cpu_realsize.sh` writes "
                "`results/realsize_cpu/` and regenerates this block."]
    else:
        body = summary(report) + ["", "Full tables: `results/realsize_cpu/realsize_cpu.md`; figure: "
                                      "`results/realsize_cpu/fig_realsize_cpu.html`."]
    return "\n".join([BEGIN, *body, END])


def _split(text: str) -> tuple[int, int]:
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{README.name} must hold exactly one CPU real-size block between {BEGIN!r} and {END!r}")
    return text.index(BEGIN), text.index(END) + len(END)


def current(text: str) -> str:
    a, b = _split(text)
    return text[a:b]


def update_readme(json_path: Path, readme: Path = README) -> str:
    """Rewrite the block of ``readme`` from ``json_path`` (the 'not run yet' block when it does not exist)."""
    report = json.loads(json_path.read_text()) if json_path.is_file() else None
    text = readme.read_text()
    a, b = _split(text)
    new = text[:a] + block(report) + text[b:]
    if new != text:
        readme.write_text(new)
    return f"{readme}: CPU real-size block {'rewritten' if new != text else 'already current'} from {json_path}"
