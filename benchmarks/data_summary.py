"""Section 4 from the per-run JSON of ``benchmarks.data_efficiency``: the loss-curve summary and
plateau check of one run, the per-(method, samples) mean with its 95% t-interval over seeds, the
verdicts against ICL (``mmict_core.evaluate.claims``), the markdown and the plotly figures.
Plain numbers in; no model code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

# "trained to convergence": the mean training loss of the last 10% of steps differs from that of the
# 10% before by less than PLATEAU_REL of the latter, or by less than PLATEAU_ABS nats (a loss near 0,
# where a relative change of per-batch noise means nothing).  Fixed before any full run was looked at.
FIGURES = ("fig_data_efficiency.html", "fig_shots.html")
WINDOW = 0.10
PLATEAU_REL = 0.05
PLATEAU_ABS = 0.01


def loss_summary(losses: Sequence[float]) -> dict:
    """first step's loss, the means of the last and the previous ``WINDOW`` of the steps, their
    relative change and whether the run plateaued (see PLATEAU_REL / PLATEAU_ABS)."""
    xs = [float(x) for x in losses]
    if len(xs) < 2:
        raise ValueError(f"a plateau check needs at least 2 training steps, got {len(xs)}")
    w = max(1, int(len(xs) * WINDOW))
    last, prev = xs[-w:], xs[-2 * w:-w]
    last_mean, prev_mean = sum(last) / len(last), sum(prev) / len(prev)
    change = abs(last_mean - prev_mean)
    rel = change / prev_mean if prev_mean > 0 else (0.0 if change == 0 else float("inf"))
    return {"steps": len(xs), "window": w, "first": xs[0], "last_mean": last_mean, "prev_mean": prev_mean,
            "rel_change": rel, "plateau": bool(rel < PLATEAU_REL or change < PLATEAU_ABS)}


def load_runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def _seed_stats(recs: list[dict]) -> dict:
    from mmict_core.evaluate.claims import summarize_seeds

    recs = sorted(recs, key=lambda r: r["seed"])
    s = summarize_seeds([r["accuracy"] for r in recs], bounds=(0.0, 1.0))
    plateau = [(r.get("loss") or {}).get("plateau") for r in recs]
    return {**s.as_dict(), "per_seed": {r["seed"]: r["accuracy"] for r in recs}, "plateau": plateau,
            "not_plateaued": [r["seed"] for r, p in zip(recs, plateau) if p is False],
            "unchecked": [r["seed"] for r, p in zip(recs, plateau) if p is None],
            "rel_change": [(r.get("loss") or {}).get("rel_change") for r in recs],
            "train_s": sum(r["train_seconds"] for r in recs) / len(recs), "steps": recs[0].get("steps"),
            "_summary": s}


def _wilson_ge(a: dict | None, b: dict | None) -> str | None:
    """The verdict on "a >= b" for two single runs on the same test episodes, from their 95% Wilson
    intervals over episodes (no seeds to vary: training-free): the same accuracy holds; disjoint intervals
    decide; overlapping ones are inconclusive.  None when either run is missing."""
    from mmict_core.evaluate.claims import SeedSummary, verdict_ge

    if not a or not b:
        return None
    a_s, b_s = (SeedSummary(r["accuracy"], r["wilson95"][0], r["wilson95"][1], 1, (r["accuracy"],)) for r in (a, b))
    return verdict_ge(a_s, b_s)  # the claims' rule, on the Wilson intervals


def summarise(runs: list[dict], source: str = "", seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """The section-4 dict of a report from the per-run records (``data_efficiency.run_one``)."""
    from mmict_core.evaluate.claims import summarize_seeds, verdict_ge

    trains = [r for r in runs if r["kind"] == "train"]
    icl = next((r for r in runs if r["kind"] == "icl"), None)
    fits = next((r for r in runs if r["kind"] == "icl-fits"), None)
    refs = {}
    if icl:
        refs["icl8"] = summarize_seeds([icl["accuracy"]], bounds=(0.0, 1.0))
    if fits:
        refs["icl-best"] = summarize_seeds([fits["accuracy"]], bounds=(0.0, 1.0))
    data, shots = [], []
    groups: dict[tuple, list[dict]] = {}
    for r in trains:
        groups.setdefault((r["variant"], r["samples"]), []).append(r)
    for (variant, n), recs in sorted(groups.items(), key=lambda kv: (kv[1][0]["method"], kv[0][1], kv[1][0]["train_shots"] or 0)):
        st = _seed_stats(recs)
        s = st.pop("_summary")
        complete = len(recs) == len(seeds)
        r0 = recs[0]
        row = {"method": r0["method"], "variant": variant, "samples": n, "train_shots": r0["train_shots"],
               "teacher_sets": r0["teacher_sets"], **st, "seeds_planned": len(seeds),
               "vs_icl8": verdict_ge(s, refs["icl8"]) if complete and "icl8" in refs else None}
        if "shots" in r0["curves"]:
            shots.append({**row, "vs_icl_best": verdict_ge(s, refs["icl-best"]) if complete and "icl-best" in refs else None})
        if "samples" in r0["curves"]:
            data.append(row)
    vectors = sorted((r for r in runs if r["kind"] == "vector"), key=lambda r: (r["method"], r["shots"]))
    vec_rows = [{"method": r["method"], "variant": r["variant"], "shots": r["shots"],
                 "contexts": r["method_config"]["contexts"], "per_context": r["method_config"]["per_context"],
                 "accuracy": r["accuracy"], "wilson95": r["wilson95"], "command": r.get("command"),
                 "vs_icl_best": _wilson_ge(r, fits), "vs_icl8": _wilson_ge(r, icl)} for r in vectors]
    reaches = {}
    for m in dict.fromkeys(r["method"] for r in data):
        held = [r["samples"] for r in data if r["method"] == m and r["vs_icl8"] == "holds"]
        reaches[m] = min(held) if held else None
    ck = sorted({(r.get("checkpoint") or {}).get("sha256") or "not recorded" for r in runs})
    commits = sorted({(r.get("git") or {}).get("commit") or "not recorded" for r in runs})
    steps = sorted({r.get("steps") for r in trains if r.get("steps")})
    return {"source": source, "runs": len(runs), "train_runs": len(trains), "checkpoints": ck, "commits": commits,
            "steps": steps, "episodes": sorted({r["episodes"] for r in runs}),
            "train_config": next((r["train_config"] for r in trains if r.get("train_config")), None),
            "icl8": icl and {"shots": icl["shots"], "accuracy": icl["accuracy"]},
            "icl_fits": fits and {k: fits[k] for k in ("shots", "accuracies", "accuracy", "best_shots")},
            "data": data, "m2iv_shots": shots, "mtv_shots": vec_rows, "reaches_icl8_at": reaches,
            "reused": sorted(r["reused_from"] for r in trains if r.get("reused_from")),
            "plateau_rule": f"|mean(last {WINDOW:.0%}) - mean(previous {WINDOW:.0%})| < {PLATEAU_REL:.0%} of the "
                            f"latter or < {PLATEAU_ABS:g} nats"}


# ---------------------------------------------------------------------------------------------
# markdown


def _cell(r: dict) -> str:
    flag = ""
    if len(r["values"]) < r.get("seeds_planned", len(r["values"])):
        flag += f" ({len(r['values'])} of {r['seeds_planned']} seeds so far)"
    if r["not_plateaued"]:
        flag += f" ⚠ no plateau: seed {', '.join(map(str, r['not_plateaued']))}"
    if r["unchecked"]:
        flag += f" (plateau not checked: seed {', '.join(map(str, r['unchecked']))})"
    return f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]{flag}"


def _per_seed(r: dict) -> str:
    return ", ".join(f"{v:.3f}" for v in r["values"])


def markdown(de: dict) -> list[str]:
    """The lines of section 4 of report.md."""
    L = ["## 4. Data efficiency and many-shot", ""]
    if not de.get("train_runs"):
        return L + [f"Not measured yet: no run JSON under `{de.get('source')}`. Run "
                    "`python -m benchmarks.data_efficiency --jobs 2` (resumable), then "
                    "`python -m benchmarks.data_efficiency --summary --report benchmarks/results`.", ""]
    tc = de["train_config"] or {}
    where = ("A --quick in-process run at toy sizes (not a measurement): " if de.get("quick") else
             f"From the {de['runs']} per-run JSON under `{de['source']}` (`python -m benchmarks.data_efficiency`), ")
    L += [where + f"measured on checkpoint sha256 {', '.join(f'`{c[:16]}`' for c in de['checkpoints'])}, commit(s) "
          f"{', '.join(f'`{c[:12]}`' for c in de['commits'])}. Fixed binding; every adapter trained "
          f"{', '.join(map(str, de['steps']))} steps, lr {tc.get('lr')}, batch {tc.get('batch_size')}, mix-fixed "
          f"{tc.get('mix_fixed')}{'' if de.get('quick') else ' (the starter library budget)'} with only the samples "
          f"changed, scored at 0 demos on the same {', '.join(map(str, de['episodes']))} held-out test episodes "
          f"(seed 0). Mean [95% t-interval over seeds]. Plateau check per run: {de['plateau_rule']}; runs that "
          "failed it are marked ⚠.", ""]
    if de.get("reused"):
        L += [f"{len(de['reused'])} run(s) taken from the binding claims (`--reuse-claims`: byte-identical command; no "
              f"loss curve recorded, so no plateau check; checkpoint not recorded): "
              + ", ".join(f"`{Path(p).name}`" for p in de["reused"]) + ".", ""]
    if de.get("icl8"):
        L += [f"8-shot ICL: **{de['icl8']['accuracy']:.3f}**. "
              + (f"Best ICL that fits (k in {', '.join(map(str, de['icl_fits']['shots']))}, the demonstration counts the "
                 f"teaching VLM was pretrained on; scripts/measure_binding_claims.py's definition): "
                 f"**{de['icl_fits']['accuracy']:.3f}** at k = {de['icl_fits']['best_shots']} "
                 f"({', '.join(f'{k}: {a:.3f}' for k, a in zip(de['icl_fits']['shots'], de['icl_fits']['accuracies']))})."
                 if de.get("icl_fits") else ""), ""]
    samples = sorted({r["samples"] for r in de["data"]})
    methods = list(dict.fromkeys(r["method"] for r in de["data"]))
    rows = {(r["method"], r["samples"]): r for r in de["data"]}
    L += ["### Accuracy vs training samples", "",
          "| method | " + " | ".join(f"{n} samples" for n in samples) + " | reaches 8-shot ICL at |",
          "|---|" + "---|" * (len(samples) + 1)]
    for m in methods:
        cells = [_cell(rows[m, n]) if (m, n) in rows else "not run" for n in samples]
        at = de["reaches_icl8_at"].get(m)
        L.append(f"| {m} | " + " | ".join(cells) + f" | {f'{at} samples' if at else 'no size (see verdicts)'} |")
    L += ["", "Per seed, and the verdict on \"reaches 8-shot ICL\" (holds / does not hold / inconclusive: "
              "`mmict_core.evaluate.claims.verdict_ge`):", "",
          "| method | samples | per seed | vs 8-shot ICL | train s (mean) | loss rel. change (per seed) |",
          "|---|---|---|---|---|---|"]
    for r in de["data"]:
        rc = ", ".join("n/a" if x is None else f"{x:.3f}" for x in r["rel_change"])
        L.append(f"| {r['method']} | {r['samples']} | {_per_seed(r)} | {r['vs_icl8'] or 'incomplete'} | "
                 f"{r['train_s']:.0f} | {rc} |")
    if de["m2iv_shots"]:
        L += ["", "### Many-shot: M2IV's teacher beyond one context (0 demos at inference)", "",
              "| teacher demos | contexts of 8 | samples | accuracy | per seed | vs best ICL that fits | vs 8-shot ICL |",
              "|---|---|---|---|---|---|---|"]
        for r in de["m2iv_shots"]:
            L.append(f"| {r['train_shots']} | {r['teacher_sets']} | {r['samples']} | {_cell(r)} | {_per_seed(r)} | "
                     f"{r['vs_icl_best'] or 'incomplete'} | {r['vs_icl8'] or 'incomplete'} |")
    if de.get("mtv_shots"):
        L += ["", "### Many-shot: MTV reading the test episode's demonstrations in several prompts (training-free)", "",
              "MTV's mean head activations from k demonstrations cut into prompts of k / contexts (the last of each "
              "the dummy query), its heads chosen on those prompts' dummy queries, then the query at 0 demos. One run "
              "each on the same test episodes (no training seed); 95% Wilson intervals over episodes, and verdicts "
              "from them (disjoint: decided; overlapping: inconclusive).", "",
              "| demos | prompts | demos per prompt | accuracy [95% Wilson] | vs best ICL that fits | vs 8-shot ICL |",
              "|---|---|---|---|---|---|"]
        for r in de["mtv_shots"]:
            L.append(f"| {r['shots']} | {r['contexts']} | {r['per_context']} | {r['accuracy']:.3f} "
                     f"[{r['wilson95'][0]:.3f}, {r['wilson95'][1]:.3f}] | {r['vs_icl_best'] or 'not measured'} | "
                     f"{r['vs_icl8'] or 'not measured'} |")
        L += ["", "What MTV's vector carries here (its answers against its prompts' dummy answers, per number of prompts): "
              "`python scripts/probe_mtv_many_shot.py`, explained in docs/methods/mtv.md."]
    return L + [""]


# ---------------------------------------------------------------------------------------------
# figures


def _band(fig, x, lo, hi, name, color):
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], mode="lines", fill="toself", fillcolor=color,
                             opacity=0.2, line=dict(width=0), hoverinfo="skip", showlegend=False,
                             name=f"{name} 95% interval", legendgroup=name))


def _errors(rows: list[dict], mid: str = "mean", interval: str = "ci95") -> dict:
    """Asymmetric error bars of the 95% intervals (seen also where a band has one point)."""
    return dict(type="data", symmetric=False, array=[r[interval][1] - r[mid] for r in rows],
                arrayminus=[r[mid] - r[interval][0] for r in rows], thickness=1)


def _hline(fig, xs, y, name, dash):
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[y, y], mode="lines", name=name, line=dict(dash=dash, color="black")))


def figures(de: dict) -> dict:
    """{file name: plotly figure}: accuracy vs samples per method (log x, interval bands, the 8-shot ICL
    line) and M2IV (teacher demos) and MTV (demos read) accuracy vs demonstrations (the best-ICL-that-fits
    and 8-shot ICL lines)."""
    import plotly.graph_objects as go

    from mmict_core.viz.curves import PALETTE

    out = {}
    if not de.get("train_runs"):
        return out
    fig = go.Figure()
    samples = sorted({r["samples"] for r in de["data"]})
    for i, m in enumerate(dict.fromkeys(r["method"] for r in de["data"])):
        rows = sorted((r for r in de["data"] if r["method"] == m), key=lambda r: r["samples"])
        c = PALETTE[i % len(PALETTE)]
        _band(fig, [r["samples"] for r in rows], [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], m, c)
        fig.add_trace(go.Scatter(x=[r["samples"] for r in rows], y=[r["mean"] for r in rows], mode="lines+markers", name=m,
                                 legendgroup=m, line=dict(color=c), error_y=_errors(rows)))
    if de.get("icl8"):
        _hline(fig, samples, de["icl8"]["accuracy"], "ICL 8-shot", "dot")
    fig.update_layout(title="Accuracy vs training samples (fixed binding; mean and 95% t-interval over seeds)",
                      xaxis_title="training samples", xaxis_type="log", yaxis_title="accuracy", template="plotly_white")
    fig.update_xaxes(tickvals=samples)
    out["fig_data_efficiency.html"] = fig
    mtv = sorted(de.get("mtv_shots") or [], key=lambda r: r["shots"])
    if de["m2iv_shots"] or mtv:
        fig = go.Figure()
        xs = []
        if de["m2iv_shots"]:
            rows = sorted(de["m2iv_shots"], key=lambda r: r["train_shots"])
            x = [r["train_shots"] for r in rows]
            _band(fig, x, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], "M2IV", PALETTE[0])
            fig.add_trace(go.Scatter(x=x, y=[r["mean"] for r in rows], mode="lines+markers", name="M2IV (teacher demos)",
                                     line=dict(color=PALETTE[0]), error_y=_errors(rows)))
            xs += x
        if mtv:
            x = [r["shots"] for r in mtv]
            fig.add_trace(go.Scatter(x=x, y=[r["accuracy"] for r in mtv], mode="lines+markers",
                                     error_y=_errors(mtv, "accuracy", "wilson95"),
                                     name="MTV (demos read at inference)", line=dict(color=PALETTE[2])))
            xs += x
        if de.get("icl_fits"):
            f = de["icl_fits"]
            xs += f["shots"]
            fig.add_trace(go.Scatter(x=f["shots"], y=f["accuracies"], mode="lines+markers", name="ICL (demos in context)",
                                     line=dict(color=PALETTE[1])))
            _hline(fig, xs, f["accuracy"], f"best ICL that fits ({f['best_shots']}-shot)", "dash")
        if de.get("icl8"):
            _hline(fig, xs, de["icl8"]["accuracy"], "ICL 8-shot", "dot")
        fig.update_layout(title="Many-shot: M2IV's teacher and MTV, demonstrations in contexts of 8, against ICL",
                          xaxis_title="demonstrations",
                          xaxis_type="log", yaxis_title="accuracy", template="plotly_white")
        fig.update_xaxes(tickvals=sorted(set(xs)))
        out["fig_shots.html"] = fig
    return out
