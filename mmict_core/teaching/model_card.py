"""Write the teaching VLM's model card from its training log and `mmict eval --json` reports."""
from __future__ import annotations

import json
import platform
from pathlib import Path

from ..data import get_task


def _table(reports: list[dict]) -> str:
    shots = sorted({r["shots"] for rep in reports for r in rep["results"]})
    head = "| task | quant | chance | " + " | ".join(f"{s}-shot" for s in shots) + " |"
    sep = "|" + "---|" * (3 + len(shots))
    rows = []
    for rep in reports:
        by = {r["shots"]: r for r in rep["results"]}

        def cell(s):
            if s not in by:
                return "–"
            extra = "".join(f" ({k} {by[s][k]:.3f})" for k in ("cider",) if k in by[s])
            return f"{by[s]['accuracy']:.3f}{extra}"
        rows.append(f"| {rep['task']} | {rep['quant']} | {rep['chance']:.3f} | " + " | ".join(cell(s) for s in shots) + " |")
    return "\n".join([head, sep, *rows])


README_BEGIN, README_END = "<!-- teaching-table -->", "<!-- /teaching-table -->"
README_TASKS = ("shapes-vqa", "binding", "format", "operator", "clip-qa", "clip-caption", "digits", "shapes-caption")


def readme_table(eval_dir: str | Path) -> str:
    """The README's fp32 table of the shipped checkpoint (exact match; CIDEr-D of captions in brackets),
    made from the model card's ``mmict eval --json`` reports in ``eval_dir`` (``<task>-none.json``)."""
    reps = [json.loads(p.read_text()) for t in README_TASKS if (p := Path(eval_dir) / f"{t}-none.json").is_file()]
    if not reps:
        raise FileNotFoundError(f"no <task>-none.json reports in {eval_dir}: run bash scripts/measure_teaching.sh")
    shots = sorted({r["shots"] for rep in reps for r in rep["results"]})
    rows = []
    for rep in reps:
        by = {r["shots"]: r for r in rep["results"]}
        cells = [f"{by[s]['accuracy']:.3f}" + (f" ({by[s]['cider']:.2f})" if "cider" in by[s] else "") if s in by else "–"
                 for s in shots]
        rows.append(f"| {rep['task']} | {rep['chance']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(["| task | chance | " + " | ".join(f"{s}-shot" for s in shots) + " |",
                      "|" + "---|" * (2 + len(shots)), *rows])


def _acceptance(reports: list[dict]) -> str:
    """The foundation issue's targets against the measured table, PASS/FAIL (never edited by hand)."""
    acc = {(r["task"], r["quant"]): {x["shots"]: x["accuracy"] for x in r["results"]} for r in reports}
    chance = {r["task"]: r["chance"] for r in reports}
    rows = []

    def row(target: str, ok: bool | None, measured: str) -> None:
        rows.append(f"| {target} | {measured} | {'–' if ok is None else ('PASS' if ok else 'FAIL')} |")

    a = acc.get(("shapes-vqa", "none"), {})
    if 0 in a:
        row("shapes-vqa 0-shot >= 0.90", a[0] >= 0.9, f"{a[0]:.3f}")
    b = acc.get(("binding", "none"), {})
    if {0, 4, 8} <= set(b):
        row("binding 0-shot at chance (no leak)", b[0] <= chance["binding"], f"{b[0]:.3f} (chance {chance['binding']:.2f})")
        row("binding 4-shot >= 0.85", b[4] >= 0.85, f"{b[4]:.3f}")
        row("binding 8-shot >= 4-shot", b[8] >= b[4], f"{b[8]:.3f} vs {b[4]:.3f}")
    f = acc.get(("format", "none"), {})
    if {0, 2} <= set(f):
        row("format 2-shot >= 0.90, 0-shot far below", f[2] >= 0.9 and f[0] <= f[2] - 0.5, f"{f[2]:.3f} / {f[0]:.3f}")
    o = acc.get(("operator", "none"), {})
    if 4 in o:
        row("operator 4-shot >= 3x chance", o[4] >= 3 * chance["operator"], f"{o[4]:.3f} = {o[4] / chance['operator']:.2f}x")
    c = acc.get(("clip-qa", "none"), {})
    if 0 in c:
        row("clip-qa 0-shot >= 0.85", c[0] >= 0.85, f"{c[0]:.3f}")
    cc = acc.get(("clip-caption", "none"), {})
    if 0 in cc:
        row("clip-caption 0-shot exact match >= 0.6", cc[0] >= 0.6, f"{cc[0]:.3f}")
    for q in ("8bit", "4bit"):
        # accuracies are stored to 4 places: 196/300 - 187/300 is 3 points, not 3.0000000000000027
        diffs = [round(abs(acc[(t, q)][k] - acc[(t, "none")][k]), 4) for (t, qq) in acc if qq == q and (t, "none") in acc
                 for k in acc[(t, q)] if k in acc[(t, "none")]]
        if diffs:
            row(f"{q}: every accuracy within 3 points of fp32", max(diffs) <= 0.03, f"max |diff| {max(diffs):.3f}")
    return "\n".join(["| target | measured | status |", "|---|---|---|", *rows])


def _status(reports: list[dict]) -> str:
    """One sentence per demo-driven task: how far the demonstrations move it (from the numbers)."""
    acc = {r["task"]: {x["shots"]: x["accuracy"] for x in r["results"]} for r in reports if r["quant"] == "none"}
    parts = [f"{t} {a[0]:.2f} (0-shot) -> {a[max(a)]:.2f} ({max(a)}-shot)" for t, a in acc.items()
             if t in ("binding", "format", "operator") and 0 in a]
    return ("In-context learning, measured: " + "; ".join(parts) + ". Where a target row above says FAIL, "
            "this checkpoint does not reach it. A binding accuracy near 0.5 means the model copies *one of the "
            "shown words* without yet matching the query's colour.")


# fields added to PretrainConfig after runs were saved, with the value those runs had (the feature did not exist)
ADDED_LATER = {"copy_loss": 0.0, "hub_mlm": 0.0, "cell_loss": 0.0, "cell_batch": 16, "vision_position": 0.0}


# PretrainConfig field -> its `mmict pretrain-teaching` flag (the CLI's PRETRAIN_FLAGS, dashed)
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command(cfg: dict) -> str:
    """The `mmict pretrain-teaching` command line that reproduces a run's config: ``--out DIR
    --seed S`` and a flag for every field that differs from the recipe's default."""
    from dataclasses import asdict

    from ..cli import PRETRAIN_FLAGS
    from .config import PretrainConfig

    base = asdict(PretrainConfig(init_from=cfg.get("init_from")))  # continuation defaults depend on init_from
    cfg = {**ADDED_LATER, **cfg}
    parts = [f"mmict pretrain-teaching --out DIR --seed {cfg['seed']}"]
    if cfg.get("init_from"):
        parts.append(f"--init-from {cfg['init_from']}")
    for name in PRETRAIN_FLAGS:
        if name in ("seed", "init_from") or name not in cfg or cfg[name] == base[name]:
            continue
        v = cfg[name]
        parts.append(f"{_flag(name)} {v:g}" if isinstance(v, float) else f"{_flag(name)} {v}")
    if tuple(cfg["binding_ways"]) != tuple(base["binding_ways"]):
        parts.append(f"--binding-ways {cfg['binding_ways'][0]},{cfg['binding_ways'][1]}")
    if cfg.get("answer_marker") is not None:
        parts.append(f"--answer-marker {'on' if cfg['answer_marker'] else 'off'}")
    if cfg["mix"] != base["mix"]:
        parts.append("--mix " + ",".join(f"{k}={v:g}" for k, v in cfg["mix"].items()))
    return " ".join(parts)


TARGET_TASKS = ("shapes-vqa", "binding", "format", "operator", "clip-qa", "clip-caption")


def seed_comparison(a: list[dict], b: list[dict], label_a: str, label_b: str) -> str:
    """Side by side fp32 accuracies of two runs of the recipe and their largest difference."""
    acc = lambda reps: {(r["task"], x["shots"]): x["accuracy"] for r in reps if r["quant"] == "none"  # noqa: E731
                        for x in r["results"]}
    A, B = acc(a), acc(b)
    keys = [k for k in A if k in B]
    rows = [f"| {t} | {k} | {A[(t, k)]:.3f} | {B[(t, k)]:.3f} | {B[(t, k)] - A[(t, k)]:+.3f} |" for t, k in keys]
    worst = max((abs(B[k] - A[k]) for k in keys if k[0] in TARGET_TASKS), default=0.0)
    return "\n".join([f"| task | shots | {label_a} | {label_b} | diff |", "|---|---|---|---|---|", *rows,
                      "", f"Largest difference on the target tasks: {worst:.3f}."])


def write_model_card(folder: str | Path, reports: list[dict], eval_command: str,
                     second: tuple[str, list[dict]] | None = None) -> Path:
    """MODEL_CARD.md of a teaching VLM trained by the recipe, from its ``train_log.json`` and
    `mmict eval --json` reports; ``second``: (label, reports) of another seed's run of the recipe."""
    folder = Path(folder)
    log = json.loads((folder / "train_log.json").read_text())
    cfg = log["config"]
    from safetensors.torch import load_file

    from ..data.tasks import DOWNSTREAM_TASKS, PRETRAINING_TASKS

    n_params = sum(t.numel() for t in load_file(str(folder / "model.safetensors")).values())
    vc = json.loads((folder / "config.json").read_text())["vision_config"]
    vit = (f"{vc['image_size']}x{vc['image_size']} px, {vc['patch_size']}x{vc['patch_size']} patches, "
           f"{vc['num_hidden_layers']} layers of width {vc['hidden_size']}, MLP {vc['intermediate_size']}")
    task_lines = "\n".join(f"- `{n}`: chance {get_task(n).chance:.3f} ({get_task(n).chance_note})" for n in PRETRAINING_TASKS)
    down = ", ".join(f"`{n}`" for n in DOWNSTREAM_TASKS)
    secs = log["stage_seconds"]
    stage_text = {
        "vision": f"**vision** — {cfg['vision_steps']} steps, batch {cfg['vision_batch']}, lr {cfg['vision_lr']:g}: throw-away "
                  "supervised heads on the ViT's patch grid (per-cell shape / colour / size, digit identities, object count).",
        "hub": f"**M-Hub text path** — {cfg['hub_steps']} steps, batch {cfg['hub_batch']} items, lr {cfg['hub_lr']:g}, ViT frozen: "
               "BLIP-2 stage-1 style image-grounded text generation (queries see queries, each text token the queries and "
               "the text before it; a throw-away head predicts the next word) and image-text matching on the mean text-token "
               "output of the bidirectional run (negatives: another item's image"
               + ("; the same prompt with another item's answer" if cfg.get("hub_text_negatives") else "") + ").",
        "induction": f"**induction** — {cfg['induction_steps']} steps of text-only associative recall.",
        "episodes": f"**episodes** — {cfg['steps']} steps, batch {cfg['batch']} episodes of 0–{cfg['max_shots']} demonstrations "
                    f"(clip episodes 0–{cfg['clip_max_shots']}), task mix {json.dumps(cfg['mix'])}; AdamW lr {cfg['lr']:g} "
                    f"(vision encoder x{cfg['vision_lr_scale']:g}), warmup {cfg['warmup']}, cosine to {cfg['min_lr_ratio']:g}x; "
                    "next-token loss on every answer that something before it determines; on binding episodes the auxiliary "
                    f"key loss (weight {cfg['key_loss']:g}, after LM layer {cfg['key_layer']}) and match loss (weight "
                    f"{cfg['match_loss']:g}, layer {cfg['match_layer']} head {cfg['match_head']})"
                    + (f" and copy loss (weight {cfg['copy_loss']:g}, that head's direct logits)" if cfg.get("copy_loss") else "")
                    + ".",
    }
    stages = "\n".join(f"{i + 1}. {stage_text[name]} ({secs.get(name, 0) / 60:.1f} min)"
                        for i, (name, _) in enumerate(log["stages"]))
    probe = log.get("mhub_probe", {})
    probe_rows = "\n".join(f"| {when.replace('_', ' ')} | {p.get('text_colour', '–')} | {p.get('text_shape', '–')} | "
                            f"{p.get('query_colour', '–')} | {p.get('query_shape', '–')} |" for when, p in probe.items())
    probes = [e for e in log["log"] if e.get("stage") == "episodes"]
    cols = ["shapes-vqa@0", "binding@4", "format@2", "operator@4", "clip-qa@0", "clip-caption@0"]
    curve = "\n".join(f"| {e['step']} | {e['minutes']} | {e['loss']} | " + " | ".join(str(e.get(c, "–")) for c in cols) + " |"
                       for e in probes)
    text = f"""# Teaching VLM — model card

A small vision-language model built from transformers' **InstructBLIP** classes
(`InstructBlipForConditionalGeneration`): ViT vision encoder ({vit}) → Q-Former that
also reads the instruction → linear projection → Llama decoder; word-level tokenizer
(`tokenizer.json`, tokenizers library format) shared by the Q-Former and the LM.
Parameters: {n_params:,}. Files: `model.safetensors`, `config.json`,
`tokenizer.json`, `teaching.json`, `train_log.json` (every logged step).

## Data
Generated on the fly by `mmict_core.data` (no downloads): ShapesWorld scenes and clips (4–8 frames
in which objects move, appear, disappear, change colour or size) and the handwritten digits that
ship with scikit-learn (train images only; 30% of the digit images are held out for the test/val
episodes). Pretraining tasks and chance levels:
{task_lines}

The downstream case-study tasks ({down}) are never seen in pretraining (docs/tasks/downstream.md).

## Training: one command

`{command(cfg)}` — one process, {log['torch_threads']} torch thread(s), **{log['wall_seconds'] / 60:.1f} min** wall on
{platform.machine()} (a 2-core machine{log.get('load_note', '')}). Stages:

{stages}

### The M-Hub premise: a binding demo's text-token outputs carry its image

Linear read-out (logistic regression, 2:1 split of {cfg.get('probe_scenes', 900)} fresh single-object scenes) of the object's
colour and shape from the mean Q-Former text-token output for the demo text "what is this ? <word>"
(the bidirectional run MMICT makes), and from the mean query-token output for reference:

| when | text → colour | text → shape | query → colour | query → shape |
|---|---|---|---|---|
{probe_rows}

### Probe curve during the episode stage ({cfg['eval_episodes']} val episodes each)

| step | minutes | loss (EMA) | shapes-vqa 0 | binding 4 | format 2 | operator 4 | clip-qa 0 | clip-caption 0 |
|---|---|---|---|---|---|---|---|---|
{curve}

## Measured (held-out test episodes, exact match with VQA normalisation; CIDEr-D in brackets)
`{eval_command}`

{_table(reports)}

### Targets (computed from the table above)

{_acceptance(reports)}

{_status(reports)}
"""
    if second is not None:
        label, rep2 = second
        text += f"""
### A second seed of the same recipe ({label})

{seed_comparison(reports, rep2, f"seed {cfg['seed']}", label)}

{_acceptance(rep2)}
"""
    text += """
Notes: `binding` 0-shot cannot name a word it has not been shown, so it sits at (or below) chance —
no leak of the bindings, which are drawn fresh per episode. `operator` needs both digits read and
the operator inferred; reading both digits and guessing the operator would score 0.37.
"""
    out = folder / "MODEL_CARD.md"
    out.write_text(text)
    return out
