"""6. The Compare path: one assembly per query and the session's image-encoding cache, against the
path before (every method assembled twice: once to count tokens, once to generate; every demo
click assembled twice more), measured interleaved in the same run on the same episode."""
from __future__ import annotations

import torch

from mmict_core.backbones.encoding_cache import EncodingCache, use_encoding_cache
from mmict_core.workbench import build_episode, compare_one, demo_token_cost, lm_tokens, make_method

from .common import episode
from .stats import ratio, round_robin, summarize, timed

ADAPTERS = ("hificl", "mimic", "live", "m2iv", "lora")


def methods(backbone) -> dict:
    """Plain ICL and fresh adapters in inference mode (their cost does not depend on training)."""
    out = {"ICL": make_method(backbone, "icl")}
    out.update((name, make_method(backbone, name).eval()) for name in ADAPTERS)
    return out


def compare_before(backbone, ep, ms: dict, new_tokens: int) -> list[tuple[str, int]]:
    """What a Compare click did before: per method, one assembly to count tokens, then generate."""
    rows = []
    for label, m in ms.items():
        n = lm_tokens(backbone, m, ep)
        with torch.no_grad():
            out = m.generate([ep], max_new_tokens=new_tokens)[0]
        rows.append((out, n))
    return rows


def demo_cost_before(backbone, demos, query) -> int:
    """What a demo click did before: two plain-ICL assemblies (with and without the demos)."""
    icl = make_method(backbone, "icl")
    return lm_tokens(backbone, icl, build_episode(demos, query)) - lm_tokens(backbone, icl, build_episode([], query))


def count_encodings(backbone, fn) -> int:
    """Vision-encoder runs (``encode_images`` calls) while ``fn()`` runs."""
    n = [0]
    enc = backbone.encode_images

    def counted(*a, **k):
        n[0] += 1
        return enc(*a, **k)

    backbone.encode_images = counted
    try:
        fn()
    finally:
        del backbone.encode_images
    return n[0]


def run(backbone, settings) -> dict:
    shots, new_tokens = settings.compare_shots, settings.new_tokens
    ep = episode(settings, shots, 0)
    ms = methods(backbone)
    backbone.num_image_tokens  # noqa: B018 - remembered once per backbone, not per click
    warm = EncodingCache()

    def after_nocache():
        return [(r.output, r.lm_tokens) for r in compare_one(backbone, ep, ms, max_new_tokens=new_tokens)]

    def after_cold():
        with use_encoding_cache(EncodingCache()):  # a click after the demos changed: nothing cached yet
            return [(r.output, r.lm_tokens) for r in compare_one(backbone, ep, ms, max_new_tokens=new_tokens)]

    def after_warm():
        with use_encoding_cache(warm):  # the same demos and query as the last click
            return [(r.output, r.lm_tokens) for r in compare_one(backbone, ep, ms, max_new_tokens=new_tokens)]

    before = compare_before(backbone, ep, ms, new_tokens)
    if not (before == after_nocache() == after_cold() == after_warm()):
        raise AssertionError("the Compare paths disagree on outputs or token counts")
    if demo_cost_before(backbone, ep.demos, ep.query) != demo_token_cost(backbone, ep.demos, ep.query):
        raise AssertionError("the demo token cost paths disagree")
    tasks = {
        "compare before": timed(lambda: compare_before(backbone, ep, ms, new_tokens)),
        "compare after (no cache)": timed(after_nocache),
        "compare after (cold cache)": timed(after_cold),
        "compare after (warm cache)": timed(after_warm),
        "demo click before": timed(lambda: demo_cost_before(backbone, ep.demos, ep.query)),
        "demo click after": timed(lambda: demo_token_cost(backbone, ep.demos, ep.query)),
    }
    encodings = {
        "compare before": count_encodings(backbone, lambda: compare_before(backbone, ep, ms, new_tokens)),
        "compare after (no cache)": count_encodings(backbone, after_nocache),
        "compare after (cold cache)": count_encodings(backbone, after_cold),
        "compare after (warm cache)": count_encodings(backbone, after_warm),
        "demo click before": count_encodings(backbone, lambda: demo_cost_before(backbone, ep.demos, ep.query)),
        "demo click after": count_encodings(backbone, lambda: demo_token_cost(backbone, ep.demos, ep.query)),
    }
    with torch.no_grad():
        times = round_robin(tasks, settings.compare_rounds)
    s = {k: summarize(v) for k, v in times.items()}
    rows = [{"label": k, "s": s[k], "encoder_runs": encodings[k]} for k in tasks]
    return {
        "shots": shots, "methods": list(ms), "rounds": settings.compare_rounds, "rows": rows,
        "speedup": {
            "compare (no cache)": ratio(s["compare before"]["median"], s["compare after (no cache)"]["median"]),
            "compare (cold cache)": ratio(s["compare before"]["median"], s["compare after (cold cache)"]["median"]),
            "compare (warm cache)": ratio(s["compare before"]["median"], s["compare after (warm cache)"]["median"]),
            "demo click": ratio(s["demo click before"]["median"], s["demo click after"]["median"]),
        },
        "notes": [
            f"One Compare click runs {', '.join(ms)} on one {shots}-shot episode of the benchmark task "
            f"({new_tokens} new tokens each); the outputs and token counts of the four Compare paths are checked "
            "equal before timing.",
            "Before: per method, one assembly (image encoding included) to count tokens and one to generate. After: "
            "one assembly per method, its token count read off the batch generated from: without the cache one "
            "image encoding per method; with the session's cache, cold (a click after the demos changed): one for "
            "plain ICL's demos + query and one for the query alone, shared by every adapter; warm (the same demos "
            "and query again): none.",
            "Demo click: the demonstrations' token cost, before by two plain-ICL assemblies, after from the layout's "
            "segment lengths (text tokenised, images counted at the backbone's tokens per image).",
        ],
    }
