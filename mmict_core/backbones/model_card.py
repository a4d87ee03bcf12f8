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
        by = {r["shots"]: r["accuracy"] for r in rep["results"]}
        cells = " | ".join(f"{by[s]:.3f}" if s in by else "–" for s in shots)
        rows.append(f"| {rep['task']} | {rep['quant']} | {rep['chance']:.3f} | {cells} |")
    return "\n".join([head, sep, *rows])


def write_model_card(folder: str | Path, reports: list[dict], eval_command: str) -> Path:
    folder = Path(folder)
    log = json.loads((folder / "train_log.json").read_text())
    cfg = log["config"]
    from safetensors.torch import load_file

    n_params = sum(t.numel() for t in load_file(str(folder / "model.safetensors")).values())
    probes = [e for e in log["log"] if e.get("stage") == "episodes"]
    curve = "\n".join(f"| {e['step']} | {e['minutes']} | {e['loss']} | {e.get('binding@4', '–')} | {e.get('format@2', '–')} | "
                      f"{e.get('shapes-vqa@0', '–')} | {e.get('operator@4', '–')} |" for e in probes)
    task_lines = "\n".join(f"- `{n}`: chance {get_task(n).chance:.3f} ({get_task(n).chance_note})" for n in
                           ("shapes-vqa", "shapes-caption", "digits", "binding", "operator", "format"))
    text = f"""# Teaching VLM — model card

A small vision-language model built from transformers' **InstructBLIP** classes
(`InstructBlipForConditionalGeneration`): ViT vision encoder (32x32 px, 4x4 patches) → Q-Former that
also reads the instruction → linear projection → Llama decoder; word-level tokenizer
(`tokenizer.json`, tokenizers library format) shared by the Q-Former and the LM.
Parameters: {n_params:,}. Files: `model.safetensors`, `config.json`,
`tokenizer.json`, `teaching.json`, `train_log.json` (every logged step).

## Data
Generated on the fly by `mmict_core.data` (no downloads): ShapesWorld scenes and the handwritten
digits that ship with scikit-learn (train images only; 30% of the digit images are held out for
the test/val episodes). Tasks and chance levels:
{task_lines}

## Training (`mmict pretrain-teaching --out DIR --seed {cfg['seed']}`)
1. Vision stage: {cfg['vision_steps']} steps, batch {cfg['vision_batch']}, lr {cfg['vision_lr']} — supervised heads on the ViT's patch
   grid (per-cell shape/colour/size, digit identities, object count); the heads are discarded.
2. Episode stage: {cfg['steps']} steps, batch {cfg['batch']} episodes of 0–{cfg['max_shots']} demonstrations, task mix
   {json.dumps(cfg['mix'])}; AdamW lr {cfg['lr']} (vision encoder x{cfg['vision_lr_scale']}), warmup {cfg['warmup']},
   cosine to {cfg['min_lr_ratio']}x; next-token loss on every answer (a demo's answer at position j is a j-shot target).
   Each item reads *prompt, image tokens, answer, [EOS]*.

Wall time: **{log['wall_seconds'] / 60:.1f} min** on {platform.machine()} with {log['torch_threads']} torch threads
(2-core CPU; vision stage {log['vision_seconds']:.0f} s).

Probe curve during training (48 val episodes each):

| step | minutes | loss (EMA) | binding 4-shot | format 2-shot | shapes-vqa 0-shot | operator 4-shot |
|---|---|---|---|---|---|---|
{curve}

## Measured (held-out test episodes, exact match with VQA normalisation)
`{eval_command}`

{_table(reports)}

Notes: `binding` 0-shot cannot name a word it has not been shown, so it sits at (or below) chance —
no leak of the bindings, which are drawn fresh per episode. `operator` needs both digits read and
the operator inferred; reading both digits and guessing the operator would score 0.37.
"""
    out = folder / "MODEL_CARD.md"
    out.write_text(text)
    return out
