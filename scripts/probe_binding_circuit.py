"""Probe of the binding circuit of teaching VLMs: where the matching head looks and what it writes.

For N 4-shot binding validation episodes (seed 0), at the position that predicts the query's answer:
- the attention mass each head of the match layer puts on the demo answers of the query's colour and of the
  other colours (the QK half of an induction head; the match loss trains it);
- the matching head's direct logit attribution -- its own output through its slice of o_proj, the final
  norm's gain and lm_head (`mmict_core.teaching.auxiliary.head_direct_logits`): how often it ranks the gold word
  above the other shown words, and how often the gold word is its argmax over the vocabulary (the OV half:
  does it copy what it looks at?  the copy loss trains it);
- what the model actually answers (exact match).

    python scripts/probe_binding_circuit.py runs/v2-seed1 runs/v2-seed0 assets/teaching-vlm [--episodes 40]
"""
from __future__ import annotations

import argparse
import json

import torch


def probe(path: str, episodes: int, layer: int, head: int) -> dict:
    from mmict_core.backbones import TeachingVLM
    from mmict_core.data import make_episode
    from mmict_core.teaching.auxiliary import attention_capture, head_direct_logits, head_output_capture

    vlm = TeachingVLM.load(path)
    H = vlm.text_config.num_attention_heads
    same, other = torch.zeros(H), torch.zeros(H)
    above = top = correct = n = 0
    with torch.no_grad(), attention_capture(vlm, layer) as att, head_output_capture(vlm, layer) as cap:
        for i in range(episodes):
            ep = make_episode("binding", 4, seed=0, index=i, split="val")
            items = list(ep.demos) + [ep.query]
            batch = vlm.assemble_episodes([ep], with_answer=True)
            vlm.forward(batch)
            q = batch.positions(0, "answer", 4)[0] - 1  # predicts the query's first answer token
            s_keys = [batch.positions(0, "answer", j)[0] for j in range(4) if items[j].label == ep.query.label]
            o_keys = [batch.positions(0, "answer", j)[0] for j in range(4) if items[j].label != ep.query.label]
            if not s_keys or not o_keys:
                continue  # only episodes where matching matters: both kinds of demo shown
            p = att["p"][0]  # (H, T, T)
            same += p[:, q, s_keys].sum(-1)
            other += p[:, q, o_keys].sum(-1)
            logits = head_direct_logits(vlm, layer, head, cap["z"][0, q])  # (V,)
            tid = vlm.tokenizer.token_to_id
            gold = tid(ep.query.answers[0].split()[0])
            shown = {tid(items[j].answers[0].split()[0]) for j in range(4)} - {gold}
            above += float(logits[gold] > max(logits[o] for o in shown))
            top += float(int(logits.argmax()) == gold)
            n += 1
    eps = [make_episode("binding", 4, seed=0, index=i, split="val") for i in range(episodes)]
    with torch.no_grad():
        outs = [o.strip() for o in vlm.generate(eps)]
    correct = sum(o == ep.query.answers[0] for o, ep in zip(outs, eps))
    shown_wrong = sum(o != ep.query.answers[0] and o in {d.answers[0] for d in ep.demos} for o, ep in zip(outs, eps))
    return {"model": path, "episodes_probed": n, "layer": layer, "head": head,
            "attention_same_colour": [round(x, 3) for x in (same / n).tolist()],
            "attention_other_colour": [round(x, 3) for x in (other / n).tolist()],
            "head_gold_above_other_shown": round(above / n, 3), "head_gold_is_argmax": round(top / n, 3),
            "answers_correct": round(correct / episodes, 3),
            "answers_other_shown_word": round(shown_wrong / episodes, 3),
            "answers_not_shown": round((episodes - correct - shown_wrong) / episodes, 3), "answers": episodes}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--layer", type=int, default=2, help="the match layer (0-based)")
    ap.add_argument("--head", type=int, default=0, help="the matching head")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for m in a.models:
        print(json.dumps(probe(m, a.episodes, a.layer, a.head)), flush=True)


if __name__ == "__main__":
    main()
