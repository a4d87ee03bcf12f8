"""Goals (PASS/FAIL), report.md, report.json and the plotly figures of a benchmark run."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .stats import Goal, fmt_bytes, fmt_ratio, ratio

SECTIONS = ("inference", "training", "backbone", "data_efficiency", "hotpath", "compare")
ADAPTER_LIMIT = 1.15
ICL_FACTOR = 3.0
TRAIN_LIMIT = 0.2
FOURBIT_LIMIT = 0.35


# ---------------------------------------------------------------------------------------------
# goals


def _row(rows, **match):
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _median(row, key):
    return None if row is None else row[key]["median"]


def inference_goals(inf: dict, tag: str = "") -> list[Goal]:
    rows = inf["rows"]
    out = []
    for r in rows:
        if r["kind"] == "adapter":
            out.append(Goal(f"{tag}{r['label']} at 0 demos: per-query latency / plain 0-shot (median)",
                            r["query_ratio_median"], "<=", ADAPTER_LIMIT,
                            f"LM forward alone: {fmt_ratio(r['forward_ratio_median'])}"))
    icl8, hif = _row(rows, label="ICL 8-shot"), _row(rows, label="HiFICL")
    if icl8 is not None and hif is not None:
        out.append(Goal(f"{tag}ICL 8-shot / HiFICL at 0 demos: per-query latency (median)",
                        ratio(_median(icl8, "query_s"), _median(hif, "query_s")), ">=", ICL_FACTOR,
                        f"LM forward alone: {fmt_ratio(ratio(_median(icl8, 'forward_s'), _median(hif, 'forward_s')))}; "
                        f"LM tokens {icl8['lm_tokens']} vs {hif['lm_tokens']}"))
    return out


def goals(report: dict) -> list[Goal]:
    """Every goal of the run; a section that failed or did not run gives FAIL rows ('not measured')."""
    out: list[Goal] = []
    inf = report.get("inference") or {}
    if "teaching" in inf:
        out += inference_goals(inf["teaching"])
    else:
        out += [Goal("adapters at 0 demos: per-query latency / plain 0-shot", None, "<=", ADAPTER_LIMIT, "inference section missing"),
                Goal("ICL 8-shot / HiFICL at 0 demos: per-query latency", None, ">=", ICL_FACTOR, "inference section missing")]
    if "scaled" in inf:
        s = inf["scaled"]["sizes"]
        out += inference_goals(inf["scaled"], f"[random LM {s['lm_hidden']}x{s['lm_layers']}] ")
    tr = report.get("training")
    if not tr:
        out.append(Goal("HiFICL training step / MimIC's (time, median)", None, "<=", TRAIN_LIMIT, "training section missing"))
    else:
        h, m = _row(tr["rows"], method="hificl"), _row(tr["rows"], method="mimic")
        extra = "".join(f"; vs {r['method']}: time {fmt_ratio(ratio(_median(h, 'step_s'), _median(r, 'step_s')))}, "
                        f"FLOPs {fmt_ratio(ratio(h and h['flops'], r['flops']))}"
                        for r in tr["rows"] if r["method"].startswith("mimic (teacher"))
        out.append(Goal("HiFICL training step / MimIC's (time, median)", ratio(_median(h, "step_s"), _median(m, "step_s")),
                        "<=", TRAIN_LIMIT,
                        f"FLOPs ratio {fmt_ratio(ratio(h and h['flops'], m and m['flops']))}; "
                        f"MimIC teacher {m and m['train_shots']} shots (default){extra}"))
    bb = report.get("backbone")
    if not bb:
        out.append(Goal("4-bit LM weights / fp16", None, "<=", FOURBIT_LIMIT, "backbone section missing"))
    else:
        for c in bb["configs"]:
            r4 = _row(c["rows"], quant="4bit")
            out.append(Goal(f"[{c['name']}] 4-bit LM weights / fp16 (2 B per LM parameter)",
                            r4 and r4["lm_vs_fp16"], "<=", FOURBIT_LIMIT,
                            f"{fmt_bytes(r4 and r4['lm_weight_bytes'])} vs {fmt_bytes(c['fp16_lm_bytes'])}"))
    return out


# ---------------------------------------------------------------------------------------------
# markdown


def _ms(s: dict | None) -> str:
    return "n/a" if s is None else f"{1000 * s:.2f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return lines


def _notes(notes) -> list[str]:
    return [f"- {n}" for n in notes] + [""]


def provenance_line(meta: dict) -> str:
    """Checkpoint hash, git commit and machine of a run (reports written before they were recorded: 'not recorded')."""
    ck, git, mach = meta.get("checkpoint") or {}, meta.get("git") or {}, meta.get("machine") or {}
    sha = ck.get("sha256")
    commit = git.get("commit")
    return (f"Checkpoint: `{ck.get('path', 'not recorded')}` sha256 `{sha if sha else 'not recorded'}`; commit "
            f"`{commit[:12] if commit else 'not recorded'}`{' (with uncommitted changes)' if git.get('dirty') else ''}; "
            f"machine: {mach.get('cpu_model') or 'CPU not recorded'}, {mach.get('cores', meta.get('cpu_count'))} cores, "
            f"torch {mach.get('torch', meta.get('torch'))}.")


def markdown(report: dict, goal_list: list[Goal]) -> str:
    meta = report["meta"]
    L = [f"# MMICT Studio benchmarks ({'quick' if meta['quick'] else 'full'} run)", "",
         f"Started {meta['started']} UTC; wall time **{meta['wall_s']:.1f} s**; torch {meta['torch']}, "
         f"{meta['threads']} torch thread(s), {meta['cpu_count']} CPU cores; training beside this run: "
         f"**{meta['training_running']}**. `python -m benchmarks{' --quick' if meta['quick'] else ''}`.", ""]
    L += [provenance_line(meta), ""]
    for w in meta.get("warnings", []):
        L += [f"> **Note:** {w}", ""]
    for name, err in meta.get("errors", {}).items():
        L += [f"> **Section {name} FAILED:** `{err}`", ""]
    n_pass = sum(g.passed for g in goal_list)
    L += [f"## Goals ({n_pass}/{len(goal_list)} PASS)", ""]
    L += _table(["status", "goal", "value", "target", "detail"],
                [[f"**{g.status}**", g.name, "n/a" if g.value is None else f"{g.value:.3f}", f"{g.op} {g.threshold:g}", g.detail]
                 for g in goal_list])
    L.append("")

    inf = report.get("inference")
    if inf:
        L += ["## 1. Inference: per-query latency and LM tokens", ""]
        for key in ("teaching", "scaled"):
            if key not in inf:
                continue
            d = inf[key]
            title = "teaching VLM (shipped)" if key == "teaching" else \
                f"random LM {d['sizes']['lm_hidden']}x{d['sizes']['lm_layers']} (teaching VLM's vision side)"
            L += [f"### {title}: {d['lm_parameters']:,} LM parameters, {d['rounds']} rounds", ""]
            L += _table(["configuration", "LM tokens", "query ms (min)", "query ms (median)", "query / 0-shot",
                         "LM forward ms (median)", "forward / 0-shot", "tokens / 0-shot"],
                        [[r["label"], r["lm_tokens"], _ms(r["query_s"]["min"]), _ms(r["query_s"]["median"]),
                          fmt_ratio(r["query_ratio_median"]), _ms(r["forward_s"]["median"]), fmt_ratio(r["forward_ratio_median"]),
                          fmt_ratio(r["token_ratio"])] for r in d["rows"]])
            L.append("")
        L += _notes(inf["notes"])

    tr = report.get("training")
    if tr:
        L += ["## 2. Training: one optimiser step", ""]
        L += _table(["method", "teacher", "demos / episode", "step ms (min)", "step ms (median)", "/ HiFICL", "GFLOPs", "/ HiFICL",
                     "peak RSS delta", "/ HiFICL", "trainable", "/ HiFICL"],
                    [[r["method"], "yes" if r["teacher"] else "no", r["train_shots"], _ms(r["step_s"]["min"]),
                      _ms(r["step_s"]["median"]), fmt_ratio(r["time_ratio"]), f"{r['flops'] / 1e9:.3f}", fmt_ratio(r["flops_ratio"]),
                      fmt_bytes(r["peak_rss_delta"]), fmt_ratio(r["memory_ratio"]), f"{r['trainable']:,}", fmt_ratio(r["params_ratio"])]
                     for r in tr["rows"]])
        L += [""] + _notes(tr["notes"])

    bb = report.get("backbone")
    if bb:
        L += ["## 3. Backbone memory and speed (fp32 / 8-bit / 4-bit)", ""]
        rows = []
        for c in bb["configs"]:
            for r in c["rows"]:
                rows.append([c["name"], f"{c['lm_parameters']:,}", r["quant"], fmt_bytes(r["footprint"]), fmt_ratio(r["footprint_ratio"]),
                             fmt_bytes(r["lm_weight_bytes"]), fmt_ratio(r["lm_vs_fp16"]), fmt_bytes(r["rss_retained"]),
                             fmt_bytes(r["rss_peak_delta"]), f"{r['load_s']:.2f}", _ms(r["forward_s"]["median"]), fmt_ratio(r["forward_ratio"])])
        L += _table(["backbone", "LM params", "quant", "footprint", "/ fp32", "LM weights", "/ fp16", "RSS after load + 1 fwd",
                     "RSS peak (load)", "load s", "LM forward ms", "/ fp32"], rows)
        L += [""] + _notes(bb["notes"])

    de = report.get("data_efficiency")
    if de:
        from .data_summary import markdown as data_markdown

        L += data_markdown(de)
    hp = report.get("hotpath")
    if hp:
        L += ["## 5. HiFICL hot path: fused single-SDPA attention vs the original split path", ""]
        rows = []
        names = {"prefill": f"prefill forward (batch {hp['batch']})", "train_step": f"train step fwd+bwd (batch {hp['batch']})",
                 "query": "per-query latency (batch 1)"}
        for what, d in hp["timing"].items():
            plain = d.get("plain")
            rows.append([names[what], _ms(plain["median"]) if plain else "—", _ms(d["split"]["median"]), _ms(d["auto"]["median"]),
                         fmt_ratio(d["split"].get("ratio_to_plain")), fmt_ratio(d["auto"].get("ratio_to_plain")),
                         fmt_ratio(d["speedup_fused_vs_split"])])
        a = hp["attention_call"]
        rows.append([f"attention call alone (q {a and hp['attention_call_shape']['q']})", _ms(a["stock sdpa"]["median"]) + " (stock sdpa)",
                     _ms(a["split"]["median"]), _ms(a["auto"]["median"]), fmt_ratio(a["split"]["ratio_to_stock"]),
                     fmt_ratio(a["auto"]["ratio_to_stock"]), fmt_ratio(a["speedup_fused_vs_split"])])
        L += _table(["measure", "plain model ms", "split (before) ms", "fused (after) ms", "before / plain", "after / plain",
                     "speed-up"], rows)
        p = hp["profile"]
        L += ["", f"Profile (torch.profiler, per prefill forward): self CPU {p['split']['self_cpu_ms_per_iter']:.2f} ms in "
                  f"{p['split']['op_calls_per_iter']:.0f} op calls before, {p['auto']['self_cpu_ms_per_iter']:.2f} ms in "
                  f"{p['auto']['op_calls_per_iter']:.0f} op calls after.", ""]
        for path, title in (("split", "before"), ("auto", "after")):
            L.append(f"Top ops {title}: " + ", ".join(f"{t['op']} {t['self_cpu_ms_per_iter']:.2f} ms ({t['calls_per_iter']:.0f}x)"
                                                      for t in p[path]["top"][:6]))
            L.append("")
        L += [f"Fused vs split: max |logit difference| {hp['max_abs_logit_diff']:.2e}, max |gradient difference| "
              f"{hp['max_abs_grad_diff']:.2e}; K_A·K_B / V_A·V_B formed {hp['kv_products_per_generation']} time(s) for a "
              f"{hp['new_tokens']}-token generation ({hp['decoder_calls_per_generation']} decoder calls).", "", "What changed:", ""]
        L += _notes(hp["changes"]) + _notes(hp["notes"])
    cp = report.get("compare")
    if cp:
        L += ["## 6. Compare path: one assembly per query and the image-encoding cache", ""]
        before = {"compare": _row(cp["rows"], label="compare before"), "demo": _row(cp["rows"], label="demo click before")}
        L += _table(["path", "ms (min)", "ms (median)", "before / this (median)", "vision-encoder runs"],
                    [[r["label"], _ms(r["s"]["min"]), _ms(r["s"]["median"]),
                      fmt_ratio(ratio(before["demo" if r["label"].startswith("demo") else "compare"]["s"]["median"], r["s"]["median"])),
                      r["encoder_runs"]] for r in cp["rows"]])
        L += [""] + _notes(cp["notes"])
    L += real_size_lines()
    L += ["## Settings", "", "```json", json.dumps(report["settings"], indent=1), "```", ""]
    return "\n".join(L)


RESULTS = Path(__file__).resolve().parent / "results"


def real_size_lines(results: Path = RESULTS) -> list[str]:
    """Where the real-size runs, measured separately, stand: their goals from the JSON kept beside this report,
    or that they were not run (a GPU run only when a machine was lent; its toy --tiny runs do not count)."""
    L = ["## Real sizes (measured separately)", ""]
    cpu = results / "realsize_cpu" / "realsize_cpu.json"
    if cpu.exists():
        g = json.loads(cpu.read_text()).get("goals", [])
        L.append(f"- On this CPU (`bash benchmarks/cpu_realsize.sh`): {sum(x['passed'] for x in g)} of {len(g)} goals PASS "
                 "(`results/realsize_cpu/realsize_cpu.md`).")
    else:
        L.append("- On this CPU (`bash benchmarks/cpu_realsize.sh`): not run.")
    gpu = [p for p in sorted((results / "gpu").glob("gpu_*.json")) if "tiny" not in p.name] if (results / "gpu").is_dir() else []
    for p in gpu:
        d = json.loads(p.read_text())
        g = d.get("goals", [])
        L.append(f"- On a GPU, {d.get('environment', {}).get('device', 'device not recorded')} (`bash benchmarks/gpu.sh`): "
                 f"{sum(x['passed'] for x in g)} of {len(g)} goals PASS (`results/gpu/{p.with_suffix('.md').name}`).")
    if not gpu:
        L.append("- On a GPU (`bash benchmarks/gpu.sh`, prepared and tested at toy size on the CPU): **not run** — no GPU "
                 "machine has been lent to this project yet.")
    return L + [""]


# ---------------------------------------------------------------------------------------------
# figures


def figures(report: dict, out: Path) -> list[str]:
    import plotly.graph_objects as go

    written = []

    def save(fig, name):
        # plotly.min.js is written once next to the figures, which reference it (viewable offline)
        fig.write_html(out / name, include_plotlyjs="directory")
        written.append(name)

    inf = report.get("inference")
    if inf:
        fig = go.Figure()
        for key in ("teaching", "scaled"):
            if key in inf:
                d = inf[key]
                name = "teaching VLM" if key == "teaching" else f"random LM {d['sizes']['lm_hidden']}x{d['sizes']['lm_layers']}"
                fig.add_trace(go.Bar(x=[r["label"] for r in d["rows"]], y=[r["query_ratio_median"] for r in d["rows"]],
                                     name=f"{name}: per-query latency"))
                fig.add_trace(go.Bar(x=[r["label"] for r in d["rows"]], y=[r["forward_ratio_median"] for r in d["rows"]],
                                     name=f"{name}: LM forward"))
        fig.add_hline(y=ADAPTER_LIMIT, line_dash="dash", annotation_text=f"adapter goal {ADAPTER_LIMIT}x")
        fig.update_layout(title="Inference cost relative to the plain 0-shot query (median)", yaxis_title="x 0-shot",
                          barmode="group", template="plotly_white")
        save(fig, "fig_inference.html")
    tr = report.get("training")
    if tr:
        fig = go.Figure()
        for key, label in (("time_ratio", "step time"), ("flops_ratio", "FLOPs"), ("memory_ratio", "peak RSS delta"),
                           ("params_ratio", "trainable parameters")):
            fig.add_trace(go.Bar(x=[r["method"] for r in tr["rows"]], y=[r[key] for r in tr["rows"]], name=label))
        fig.update_layout(title="Training step relative to HiFICL", yaxis_title="x HiFICL (log)", yaxis_type="log",
                          barmode="group", template="plotly_white")
        save(fig, "fig_training.html")
    bb = report.get("backbone")
    if bb:
        fig = go.Figure()
        for q in ("none", "8bit", "4bit"):
            fig.add_trace(go.Bar(x=[c["name"] for c in bb["configs"]],
                                 y=[_row(c["rows"], quant=q)["lm_vs_fp16"] for c in bb["configs"]], name=f"{q}: LM weights / fp16"))
        for q in ("8bit", "4bit"):
            fig.add_trace(go.Scatter(x=[c["name"] for c in bb["configs"]], y=[_row(c["rows"], quant=q)["forward_ratio"] for c in bb["configs"]],
                                     mode="lines+markers", name=f"{q}: LM forward / fp32", yaxis="y2"))
        fig.add_hline(y=FOURBIT_LIMIT, line_dash="dash", annotation_text=f"4-bit goal {FOURBIT_LIMIT}x fp16")
        fig.update_layout(title="Backbone: LM weight bytes vs fp16, forward time vs fp32", barmode="group", template="plotly_white",
                          yaxis=dict(title="LM weights / fp16"), yaxis2=dict(title="forward / fp32", overlaying="y", side="right"))
        save(fig, "fig_backbone.html")
    de = report.get("data_efficiency")
    if de:
        from .data_summary import figures as data_figures

        for name, fig in data_figures(de).items():
            save(fig, name)
    hp = report.get("hotpath")
    if hp:
        fig = go.Figure()
        keys = list(hp["timing"])
        for path, label in (("split", "split (before)"), ("auto", "fused (after)")):
            y = [1000 * hp["timing"][k][path]["median"] for k in keys] + [1000 * hp["attention_call"][path]["median"]]
            fig.add_trace(go.Bar(x=keys + ["attention call"], y=y, name=label))
        plain = [1000 * hp["timing"][k]["plain"]["median"] if "plain" in hp["timing"][k] else None for k in keys]
        fig.add_trace(go.Bar(x=keys + ["attention call"], y=plain + [1000 * hp["attention_call"]["stock sdpa"]["median"]],
                             name="plain model / stock sdpa"))
        fig.update_layout(title="HiFICL hot path: median ms, before vs after", yaxis_title="ms", barmode="group", template="plotly_white")
        save(fig, "fig_hotpath.html")
    return written


# ---------------------------------------------------------------------------------------------


def _clean(x):
    """JSON-safe: NaN/inf -> None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write(report: dict, out: Path) -> list[Goal]:
    out.mkdir(parents=True, exist_ok=True)
    goal_list = goals(report)
    report["goals"] = [g.as_dict() for g in goal_list]
    report["figures"] = figures(report, out)
    (out / "report.json").write_text(json.dumps(_clean(report), indent=1))
    (out / "report.md").write_text(markdown(report, goal_list))
    return goal_list
